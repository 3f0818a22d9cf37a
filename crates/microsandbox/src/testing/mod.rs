//! Internals that the crate's own tests, benches and fuzz targets reach
//! into, behind the `testing` feature and hidden from the docs: no part
//! of the API, no promise kept between versions.

pub mod fuzzing;

use std::sync::Arc;

pub use crate::oci::model::{IndexFile, ManifestDoc, Shape};
pub use crate::store::blob::BlobWriter;
pub use crate::store::layout::Layout;
pub use crate::store::lock::{lock_file, LockMode};
pub use crate::transfer::registry::mirrors::Mirror;
pub use crate::util::fault::{FAULT_VAR, POINTS};
pub use crate::util::time::{format as format_time, parse_utc};

use crate::{LocalBackend, MicrosandboxResult};

/// The backend's cache, opened (and created) as an operation would.
///
/// # Errors
///
/// As any operation that opens the cache.
pub fn layout(backend: &LocalBackend) -> MicrosandboxResult<Arc<Layout>> {
    backend.layout()
}
