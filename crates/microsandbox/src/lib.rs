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
//!     println!("{} {} bytes", image.reference(), image.size_bytes());
//! }
//! let detail = Image::inspect_local(&backend, "alpine").await?;
//! println!("{:?}", detail.config.cmd);
//! let lease = Image::acquire_local(&backend, "alpine", LeaseOptions::default()).await?;
//! // ... the sandbox runs; prune keeps the image ...
//! Image::release_local(&backend, &lease.id).await?;
//! let report = Image::prune_local(&backend).await?;
//! println!("reclaimed {} bytes", report.bytes_reclaimed);
//! # Ok(()) }
//! ```
//!
//! Modules, one concept each: [`reference`] (parse and normalize),
//! [`layout`] (paths, index.json), [`lock`] (flock), [`lease`] (pins),
//! [`ingest`] (verified writes), [`archive`] (loading), [`gc`] (prune),
//! [`catalog`] (the parsed index), [`image`] (the async API).

#![deny(missing_docs)]

pub mod archive;
pub mod backend;
pub mod catalog;
pub mod census;
pub mod content;
pub mod digest;
pub mod error;
pub mod fault;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod handle;
pub mod image;
pub mod ingest;
pub mod layout;
pub mod lease;
pub mod lock;
pub mod model;
pub mod par;
pub mod partial;
pub mod platform;
pub mod policy;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod time;
pub mod usage;
pub mod verify;

pub use archive::{LoadOptions, SaveFormat, SaveOptions};
pub use backend::{LeaseOptions, LocalBackend, LocalBackendBuilder};
pub use digest::Digest;
pub use error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
pub use handle::{
    DiskUsage, ImageConfigDetail, ImageDetail, ImageHandle, ImageLayerDetail, ImageLease,
    ImagePruneReport, ImageUsage, RemovedImage,
};
pub use image::Image;
pub use lease::LeaseKind;
pub use model::Platform;
pub use policy::PruneOptions;
pub use progress::{Phase, Progress, ProgressFn};
pub use reference::Reference;
pub use registry::{PullOptions, PullPolicy};
pub use verify::{VerifyOptions, VerifyReport};
