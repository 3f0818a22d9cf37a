//! What prune, disk usage, verify and orphans report.

use super::*;

/// What prune removed.
#[napi(object, use_nullable = true)]
pub struct ImagePruneReport {
    /// References taken out of the index.
    pub image_refs_removed: f64,
    /// Manifest and index blobs deleted.
    pub manifests_removed: f64,
    /// Layer blobs deleted.
    pub layers_removed: f64,
    /// EROFS metadata deleted (none in an OCI-only cache).
    pub fsmeta_removed: f64,
    /// VMDK descriptors deleted (none in an OCI-only cache).
    pub vmdk_removed: f64,
    /// Allocated bytes of the files deleted (for a dry run: that would be);
    /// `null` only when nothing could be measured.
    pub bytes_reclaimed: Option<f64>,
    /// Config blobs deleted.
    pub configs_removed: f64,
    /// Stale temporaries of dead writers deleted.
    pub tmp_files_removed: f64,
    /// Expired lease files deleted.
    pub expired_leases_removed: f64,
    /// The references taken (or, for a dry run, that would be).
    pub removed: Vec<RemovedImage>,
    /// With `maxBytes`: how far above the budget leases keep the blobs.
    pub over_budget_bytes: f64,
    /// Whether nothing was deleted (a dry run).
    pub dry_run: bool,
}

/// One reference a prune took.
#[napi(object)]
pub struct RemovedImage {
    /// `python:3.12`, or the manifest digest of an unnamed entry.
    pub reference: String,
    /// The digest it pointed at.
    pub manifest_digest: String,
    /// Its blobs' allocated bytes, shared ones in full.
    pub bytes: f64,
    /// What its removal alone freed: the deleted blobs no other image
    /// needed (these add up to at most `bytesReclaimed`).
    pub unique_bytes: f64,
}

/// What the cache takes on disk; every size is allocated bytes.
#[napi(object)]
pub struct DiskUsage {
    /// Every file under the home's `cache/` and `leases/`.
    pub total_bytes: f64,
    /// `blobs/sha256/`, each blob once.
    pub blobs_bytes: f64,
    /// `cache/vm/`: layer images, fsmeta and VMDK descriptors.
    pub vm_bytes: f64,
    /// `tmp/`: transfers in flight or left over.
    pub tmp_bytes: f64,
    /// What `prune()` would free now (its dry run's `bytesReclaimed`).
    pub reclaimable_bytes: f64,
    /// One entry per reference, newest first.
    pub images: Vec<ImageUsage>,
}

/// One reference's share of the disk.
#[napi(object, use_nullable = true)]
pub struct ImageUsage {
    /// The familiar reference.
    pub reference: String,
    /// The digest it points at.
    pub manifest_digest: String,
    /// Every blob it needs and its VM artifacts, shared ones in full.
    pub size_bytes: f64,
    /// The part another reference or a lease also needs.
    pub shared_bytes: f64,
    /// What removing it alone, then a prune, frees.
    pub unique_bytes: f64,
    /// Whether a lease pins it.
    pub in_use: bool,
    /// When a lease last took it.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<core::DiskUsage> for DiskUsage {
    fn from(u: core::DiskUsage) -> Self {
        DiskUsage {
            total_bytes: num(u.total_bytes),
            blobs_bytes: num(u.blobs_bytes),
            vm_bytes: num(u.vm_bytes),
            tmp_bytes: num(u.tmp_bytes),
            reclaimable_bytes: num(u.reclaimable_bytes),
            images: u
                .images
                .into_iter()
                .map(|i| ImageUsage {
                    reference: i.reference,
                    manifest_digest: i.manifest_digest,
                    size_bytes: num(i.size_bytes),
                    shared_bytes: num(i.shared_bytes),
                    unique_bytes: num(i.unique_bytes),
                    in_use: i.in_use,
                    last_used_at: i.last_used_at,
                })
                .collect(),
        }
    }
}

impl From<core::ImagePruneReport> for ImagePruneReport {
    fn from(r: core::ImagePruneReport) -> Self {
        ImagePruneReport {
            image_refs_removed: r.image_refs_removed.into(),
            manifests_removed: r.manifests_removed.into(),
            layers_removed: r.layers_removed.into(),
            fsmeta_removed: r.fsmeta_removed.into(),
            vmdk_removed: r.vmdk_removed.into(),
            bytes_reclaimed: r.bytes_reclaimed.map(num),
            configs_removed: r.configs_removed.into(),
            tmp_files_removed: r.tmp_files_removed.into(),
            expired_leases_removed: r.expired_leases_removed.into(),
            removed: r
                .removed
                .into_iter()
                .map(|i| RemovedImage {
                    reference: i.reference,
                    manifest_digest: i.manifest_digest,
                    bytes: num(i.bytes),
                    unique_bytes: num(i.unique_bytes),
                })
                .collect(),
            over_budget_bytes: num(r.over_budget_bytes),
            dry_run: r.dry_run,
        }
    }
}

/// What `verify` found (and, with `repair`, did).
#[napi(object)]
pub struct VerifyReport {
    /// Whether nothing is wrong.
    pub clean: bool,
    /// Blob files checked.
    pub blobs_checked: f64,
    /// Bytes hashed.
    pub bytes_checked: f64,
    /// Blobs that do not hash to their name, or are not regular files.
    pub corrupt_blobs: Vec<String>,
    /// Blobs a reference or a lease needs that are absent.
    pub missing_blobs: Vec<String>,
    /// References that cannot be served whole.
    pub dangling_references: Vec<String>,
    /// Files of dead writers and interrupted atomic writes.
    pub stray_tmp_files: Vec<String>,
    /// Lease files that do not parse, name another lease, or are not
    /// regular files.
    pub bad_leases: Vec<String>,
    /// Entries of `index.json` this cache cannot read (`entry N: why`).
    pub bad_index_entries: Vec<String>,
    /// With `repair`: corrupt blobs moved to `cache/quarantine/`.
    pub quarantined: Vec<String>,
    /// With `repair`: references taken out of the index.
    pub removed_references: Vec<String>,
    /// VM artifacts checked.
    pub artifacts_checked: f64,
    /// VM artifacts that fail their check or their seal (`vm/layers/NAME:
    /// why`), entries under an artifact's name that are no artifact (a
    /// link, a directory), and a link or a file where `vm/` or one of its
    /// directories belongs (`vm: why`); with `repair`, taken away (made
    /// again by the next materialize).
    pub corrupt_artifacts: Vec<String>,
}

impl From<core::VerifyReport> for VerifyReport {
    fn from(r: core::VerifyReport) -> Self {
        VerifyReport {
            clean: r.is_clean(),
            blobs_checked: num(r.blobs_checked),
            bytes_checked: num(r.bytes_checked),
            corrupt_blobs: r.corrupt_blobs,
            missing_blobs: r.missing_blobs,
            dangling_references: r.dangling_references,
            stray_tmp_files: r.stray_tmp_files,
            bad_leases: r.bad_leases,
            bad_index_entries: r.bad_index_entries,
            quarantined: r.quarantined,
            removed_references: r.removed_references,
            artifacts_checked: num(r.artifacts_checked),
            corrupt_artifacts: r.corrupt_artifacts,
        }
    }
}

/// A blob no reference and no lease reaches.
#[napi(object, use_nullable = true)]
pub struct OrphanBlob {
    pub digest: String,
    /// `manifest`, `config` or `layer`.
    pub kind: String,
    /// Allocated bytes, as `du` counts.
    pub size_bytes: f64,
    /// When the file was last modified.
    pub modified_at: Option<DateTime<Utc>>,
}

impl From<core::OrphanBlob> for OrphanBlob {
    fn from(o: core::OrphanBlob) -> Self {
        OrphanBlob {
            digest: o.digest,
            kind: o.kind.to_owned(),
            size_bytes: num(o.size_bytes),
            modified_at: o.modified_at,
        }
    }
}
