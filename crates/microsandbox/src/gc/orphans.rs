//! Orphans: the blobs no reference and no lease reaches, as brood-box's
//! `cache list` shows them, each with its kind, size and time. They are
//! exactly the blobs a dangling prune (`image gc`) takes: both come from
//! one plan of the same census.

use chrono::{DateTime, Utc};

use crate::error::MicrosandboxResult;
use crate::gc::census::CensusCache;
use crate::gc::graph::Kind;
use crate::gc::plan;
use crate::gc::policy::PruneOptions;
use crate::store::catalog::CatalogCache;
use crate::store::fs::allocated;
use crate::store::layout::Layout;
use crate::store::lock::Shared;
use crate::util::time;

/// One blob nothing needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrphanBlob {
    /// `sha256:...`.
    pub digest: String,
    /// `manifest`, `config` or `layer`.
    pub kind: &'static str,
    /// The bytes it occupies on disk (allocated blocks, as `du` counts).
    pub size_bytes: u64,
    /// When the file was last modified.
    pub modified_at: Option<DateTime<Utc>>,
}

/// The blobs a dangling prune would take now, largest first.
///
/// # Errors
///
/// As a dry-run prune: `CorruptCache` when a root that stays cannot be
/// read, `Busy`, `Io`.
pub fn orphans(
    layout: &Layout,
    census: &CensusCache,
    catalog: &CatalogCache,
) -> MicrosandboxResult<Vec<OrphanBlob>> {
    let _shared = layout.lock::<Shared>()?;
    let now = time::now();
    let snapshot = census.snapshot(layout, catalog.index(layout)?, now)?;
    let dangling = PruneOptions {
        dry_run: true,
        dangling: true,
        ..Default::default()
    };
    let planned = plan(layout, &snapshot, &dangling, now)?;
    let mut out = Vec::with_capacity(planned.blobs.len());
    for (digest, kind) in &planned.blobs {
        let Some(stat) = layout.blob_stat(digest)? else {
            continue;
        };
        let secs = u64::try_from(stat.st_mtime).unwrap_or(0);
        out.push(OrphanBlob {
            digest: digest.to_string(),
            kind: match kind {
                Kind::Manifest => "manifest",
                Kind::Config => "config",
                Kind::Layer => "layer",
            },
            size_bytes: allocated(&stat),
            modified_at: Some(time::utc(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            )),
        });
    }
    out.sort_by(|a, b| {
        b.size_bytes
            .cmp(&a.size_bytes)
            .then(a.digest.cmp(&b.digest))
    });
    Ok(out)
}
