//! Loading images from an OCI Image Layout directory (what `skopeo copy
//! ... oci:DIR:TAG` and umoci write).
//!
//! Every named descriptor of the source's `index.json` becomes a reference
//! of the cache; an index resolves to one platform. The source is never
//! trusted: JSON blobs are read bounded and hashed before they are parsed,
//! layers stream through [`copy_verified`], blob files are opened without
//! following symlinks, and nothing is visible in the cache until the
//! commit, which takes the exclusive lock, renames the verified
//! temporaries into `blobs/` and rewrites `index.json` once. An ingest
//! lease pins the content from the first byte to the commit, so a prune
//! running meanwhile cannot take a blob the load counts on.

use std::path::Path;
use std::sync::Mutex;

use crate::error::MicrosandboxResult;
use crate::oci::platform;
use crate::oci::reference::Reference;
use crate::store::layout::{Layout, JSON_BLOB_LIMIT};
use crate::transfer::layer::LayerSinks;
pub use crate::transfer::layer::DEFAULT_MAX_LAYER_BYTES;
use crate::transfer::progress::PullProgress;
use crate::transfer::registry::{PullOptions, RegistryOrigin};
use crate::values::ImageHandle;

use commit::ingest;
use plan::{check_sizes, plan, plan_image};
use source::{open, Origin, Source};

mod commit;
mod dir;
mod docker;
pub mod layer;
mod options;
mod plan;
mod planned;
pub mod progress;
pub mod registry;
mod save;
mod source;
mod tarball;
mod zstd_stream;

pub use options::LoadOptions;
pub use registry::push::{push, PushOptions, PushProgress, PushProgressFn, PushReport};
pub use save::{save, SaveFormat, SaveOptions};

/// Loads every named image of an OCI image layout directory, an OCI
/// archive (a tar of a layout, plain or gzip) or a docker-archive (as
/// `docker save` and `skopeo copy ... docker-archive:` write it).
///
/// # Errors
///
/// [`ErrorKind::InvalidArchive`] when the source is malformed or hostile,
/// [`ErrorKind::DigestMismatch`] when content does not match its digest,
/// [`ErrorKind::PlatformNotFound`] when an index lacks the platform; the
/// cache is unchanged in every case.
pub fn load(
    layout: &Layout,
    path: &Path,
    options: &LoadOptions,
    sinks: Option<LayerSinks>,
) -> MicrosandboxResult<Vec<ImageHandle>> {
    let limit = options.max_layer_bytes.unwrap_or(DEFAULT_MAX_LAYER_BYTES);
    let mut source = open(layout, path, options.progress.clone(), limit)?;
    source.sinks = sinks;
    let planned = plan(&source, options)?;
    ingest(layout, &source, &planned)
}

/// Pulls `reference` from its registry: the manifest (or index) it names,
/// resolved to the platform, every blob streamed and verified, one commit.
///
/// # Errors
///
/// `ImageNotFound` when the registry lacks it, `Unauthorized`,
/// `RegistryError`, `DigestMismatch`, `PlatformNotFound`; the cache is
/// unchanged on any error.
pub fn pull(
    layout: &Layout,
    reference: &Reference,
    options: &PullOptions,
    sinks: Option<LayerSinks>,
) -> MicrosandboxResult<ImageHandle> {
    let mirrors = crate::transfer::registry::mirrors::for_registry(
        reference.domain(),
        options.mirrors.as_ref(),
        layout,
    )?;
    let registry = RegistryOrigin::new(
        reference,
        options.insecure,
        &mirrors,
        options.docker_config.as_deref(),
    );
    let shown = reference.familiar();
    let events = options.pull_progress.as_ref();
    if let Some(p) = events {
        p.report(&PullProgress::Resolving {
            reference: shown.clone(),
        });
    }
    let (bytes, top) = registry.top(reference, JSON_BLOB_LIMIT)?;
    let mut source = Source {
        cache: layout,
        label: registry.label().to_owned(),
        origin: Origin::Registry(registry),
        progress: options.progress.clone(),
        json: Mutex::default(),
        max_layer_bytes: options.max_layer_bytes.unwrap_or(DEFAULT_MAX_LAYER_BYTES),
        sinks,
    };
    source.json_cache().insert(top.digest.clone(), bytes.into());
    let want = options.platform.clone().unwrap_or_else(platform::host);
    let planned = vec![plan_image(&source, reference.clone(), &top, &want)?];
    check_sizes(&source, &planned)?;
    let layers = &planned[0].layers;
    if let Some(p) = events {
        let missing = layers.iter().filter(|l| !layout.has_blob(&l.digest));
        p.report(&PullProgress::Resolved {
            reference: shown.clone(),
            manifest_digest: planned[0].manifest.digest.to_string(),
            layer_count: layers.len(),
            total_download_bytes: Some(missing.map(|l| l.size).sum()),
        });
        let sizes = layers
            .iter()
            .map(|l| (l.digest.to_string(), l.size))
            .collect();
        source.progress = Some(p.from_bytes(sizes, options.progress.clone()));
    }
    let mut handles = ingest(layout, &source, &planned)?;
    if let Some(p) = events {
        p.report(&PullProgress::Complete {
            reference: shown,
            layer_count: layers.len(),
        });
    }
    Ok(handles.remove(0))
}
