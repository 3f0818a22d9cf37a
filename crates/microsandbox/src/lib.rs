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
//! Everything a program needs is at the crate root; the process default
//! backend is in [`backend`]. The code behind it is in layers, each using
//! only those below it: `api` (the backend and the async calls), `gc`
//! (prune, disk usage, verify), `vm` (VM disks), `transfer` (load, save,
//! pull, push), `store` (the cache on disk), `oci` (references, digests,
//! models); `values` (what the API returns), `util` and `error` serve them
//! all. The README's code map says what each folder owns.

#![deny(missing_docs)]

mod api;
mod error;
mod gc;
mod oci;
mod store;
mod transfer;
mod util;
mod values;
mod vm;

#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

pub mod backend {
    //! The process default backend, which the ambient [`crate::Image`]
    //! calls use: the home of `$MSB_HOME`, else `~/.microsandbox`.
    pub use crate::api::backend::{default_backend, default_home};
}

pub mod alloc {
    //! The allocator the Node addon installs: large blocks as pages of
    //! their own, given back when freed (see [`LargeInPages`]).
    pub use crate::util::pages::{after_operation, LargeInPages, LARGE, TRIM_AFTER};
}

pub mod blob_seal {
    //! Seals of blobs this process hashed in full, so that a server sends
    //! an unchanged one without hashing it again (see [`sealed`]).
    pub use crate::store::blob_seal::{before_hash, seal, sealed, BlobStamp, SETTLED};
}

pub use api::backend::{LeaseOptions, LocalBackend, LocalBackendBuilder};
pub use api::image::Image;
pub use api::serving::{ServedBlob, ServedManifest};
pub use error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
pub use gc::orphans::OrphanBlob;
pub use gc::policy::{parse_duration, parse_size, PruneOptions};
pub use gc::purge::PurgeOptions;
pub use gc::verify::{VerifyOptions, VerifyReport};
pub use oci::digest::{Digest, DigestError};
pub use oci::model::Platform;
pub use oci::reference::Reference;
pub use store::lease::LeaseKind;
pub use transfer::progress::{Phase, Progress, ProgressFn, PullProgress, PullProgressFn};
pub use transfer::registry::{PullOptions, PullPolicy};
pub use transfer::{
    LoadOptions, PushOptions, PushProgress, PushProgressFn, PushReport, SaveFormat, SaveOptions,
    DEFAULT_MAX_LAYER_BYTES,
};
pub use values::{
    DiskUsage, ImageConfigDetail, ImageDetail, ImageDisk, ImageDiskLayer, ImageHandle,
    ImageHistory, ImageLayerDetail, ImageLease, ImagePruneReport, ImageUsage, RemovedImage,
};
pub use vm::materialize::MaterializeOptions;
