//! A daemonless, in-process manager for the local OCI image cache of a
//! sandbox platform.
//!
//! The cache is a standard OCI Image Layout under `$MSB_HOME/cache/oci`
//! that skopeo, umoci and oras can read. `index.json` is the one list of
//! references and carries enough annotations that listing reads no blob.
//! Every blob is verified before it appears, every file is replaced
//! atomically, a cross-process lock orders changes, and leases pin what
//! running sandboxes use.
//!
//! ```no_run
//! use microsandbox::{Image, LeaseOptions, LocalBackend};
//!
//! # async fn tour() -> microsandbox::MicrosandboxResult<()> {
//! let backend = LocalBackend::builder().home("/tmp/msb").build().await?;
//! Image::load_local(&backend, "./my-oci-layout", Default::default()).await?;
//! for image in Image::list_local(&backend).await? {
//!     println!("{} {:?} bytes", image.reference(), image.size_bytes());
//! }
//! let detail = Image::inspect_local(&backend, "alpine").await?;
//! println!("{:?}", detail.config.as_ref().and_then(|c| c.cmd.clone()));
//! let lease = Image::acquire_local(&backend, "alpine", LeaseOptions::default()).await?;
//! // ... the sandbox runs; prune keeps the image ...
//! Image::release_local(&backend, &lease.id).await?;
//! let report = Image::prune_local(&backend).await?;
//! println!("reclaimed {:?} bytes", report.bytes_reclaimed);
//! # Ok(()) }
//! ```
//!
//! The code is in layers, each using only those below it: [`api`] (the
//! backend, the async calls, the values they return), [`transfer`] (load,
//! save, pull) and [`gc`] (prune, disk usage, verify), [`store`] (the cache
//! on disk), [`oci`] (references, digests, models); [`util`] and
//! [`error`] serve them all.

#![deny(missing_docs)]

pub mod api;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod oci;
pub mod store;
pub mod transfer;
pub mod util;

pub use api::backend::{LeaseOptions, LocalBackend, LocalBackendBuilder};
pub use api::handle::{
    DiskUsage, ImageConfigDetail, ImageDetail, ImageHandle, ImageHistory, ImageLayerDetail,
    ImageLease, ImagePruneReport, ImageUsage, RemovedImage,
};
pub use api::image::Image;
pub use error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
pub use gc::orphans::OrphanBlob;
pub use gc::policy::PruneOptions;
pub use gc::purge::PurgeOptions;
pub use gc::verify::{VerifyOptions, VerifyReport};
pub use oci::digest::Digest;
pub use oci::model::Platform;
pub use oci::reference::Reference;
pub use store::lease::LeaseKind;
pub use transfer::progress::{Phase, Progress, ProgressFn, PullProgress, PullProgressFn};
pub use transfer::registry::{PullOptions, PullPolicy};
pub use transfer::{LoadOptions, SaveFormat, SaveOptions};
