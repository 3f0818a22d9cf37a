//! The values the API hands out: image handles, details, leases, reports.
//! Plain data, below every folder that builds them (store, transfer, gc,
//! vm) and the api that returns them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{MicrosandboxError, MicrosandboxResult};

/// One reference of the cache, as `list` shows it. Everything here comes
/// from `index.json`; reading a handle opens no blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageHandle {
    // Shared text: a list hands out a copy of each of 10,000 handles. The
    // familiar form is the canonical one less a prefix: one string, and
    // where the familiar form starts in it.
    pub(crate) canonical: Arc<str>,
    pub(crate) familiar_at: u16,
    pub(crate) manifest_digest: Arc<str>,
    pub(crate) size_bytes: Option<u64>,
    pub(crate) architecture: Option<Arc<str>>,
    pub(crate) os: Option<Arc<str>>,
    pub(crate) layer_count: usize,
    pub(crate) created_at: Option<DateTime<Utc>>,
    pub(crate) last_used_at: Option<DateTime<Utc>>,
    pub(crate) image_created_at: Option<DateTime<Utc>>,
    pub(crate) disk_ready: bool,
}

impl ImageHandle {
    /// The familiar form: `python:3.12`, `ghcr.io/org/app:1`.
    pub fn reference(&self) -> &str {
        self.canonical
            .get(usize::from(self.familiar_at)..)
            .unwrap_or(&self.canonical)
    }

    /// The canonical form stored on disk: `docker.io/library/python:3.12`.
    pub fn canonical_reference(&self) -> &str {
        &self.canonical
    }

    /// Manifest, config and layer bytes as stored, when known; shared
    /// layers count in every image that has them. A size past `i64` is
    /// unknown (`None`), never a wrapped number.
    pub fn size_bytes(&self) -> Option<i64> {
        self.size_bytes.and_then(|s| i64::try_from(s).ok())
    }

    /// `sha256:...` of the (platform) manifest.
    pub fn manifest_digest(&self) -> Option<&str> {
        Some(&*self.manifest_digest)
    }

    /// CPU architecture (`amd64`).
    pub fn architecture(&self) -> Option<&str> {
        self.architecture.as_deref()
    }

    /// Operating system (`linux`).
    pub fn os(&self) -> Option<&str> {
        self.os.as_deref()
    }

    /// How many layers the manifest lists.
    pub fn layer_count(&self) -> usize {
        self.layer_count
    }

    /// When a lease last took this image; `None` if never.
    pub fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.last_used_at
    }

    /// When the reference first entered this cache (pointing at this
    /// manifest); `None` for an entry another tool wrote.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    /// When the image was built: its config's `created`, if it says.
    pub fn image_created_at(&self) -> Option<DateTime<Utc>> {
        self.image_created_at
    }

    /// Whether the image's VM disk was made when this handle was read
    /// (see `Image::materialize`).
    pub fn disk_ready(&self) -> bool {
        self.disk_ready
    }
}

/// An image with its config and layers, read from the blobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDetail {
    /// The handle `get` returns.
    pub handle: ImageHandle,
    /// The runtime config; `None` for an image whose config has no
    /// `config` block.
    pub config: Option<ImageConfigDetail>,
    /// Layers, `position` 0 at the bottom.
    pub layers: Vec<ImageLayerDetail>,
    /// When the image was built (its config's `created`).
    pub created: Option<DateTime<Utc>>,
    /// Who built it (its config's `author`).
    pub author: Option<String>,
    /// How it was built, oldest step first (its config's `history`).
    pub history: Vec<ImageHistory>,
}

/// One step of an image's history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageHistory {
    /// When the step ran.
    pub created: Option<DateTime<Utc>>,
    /// The command that made it (`/bin/sh -c apt-get install ...`).
    pub created_by: Option<String>,
    /// Who made it.
    pub author: Option<String>,
    /// A comment.
    pub comment: Option<String>,
    /// Whether the step made no layer (an `ENV`, a `CMD`).
    pub empty_layer: bool,
}

/// The runtime part of an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfigDetail {
    /// Digest of the config blob.
    pub digest: String,
    /// `KEY=value` strings.
    pub env: Vec<String>,
    /// Default arguments.
    pub cmd: Option<Vec<String>>,
    /// The executable and its fixed arguments.
    pub entrypoint: Option<Vec<String>>,
    /// The working directory.
    pub working_dir: Option<String>,
    /// `user[:group]`.
    pub user: Option<String>,
    /// The labels, an object of strings; `None` when the image has none.
    pub labels: Option<serde_json::Value>,
    /// The signal that stops the container (`SIGTERM`).
    pub stop_signal: Option<String>,
    /// Ports the image says it listens on (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// Paths the image declares as volumes.
    pub volumes: Vec<String>,
}

/// One layer of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayerDetail {
    /// The digest of the uncompressed layer, from the config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// The digest of the blob as stored.
    pub blob_digest: String,
    /// The blob's media type.
    pub media_type: Option<String>,
    /// The blob's size as stored.
    pub compressed_size_bytes: Option<i64>,
    /// The size of the layer's EROFS image, once one is made; `None` until
    /// then.
    pub erofs_size_bytes: Option<i64>,
    /// 0 for the bottom layer.
    pub position: i32,
}

/// What prune removed (or, for a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagePruneReport {
    /// References taken out of `index.json`.
    pub image_refs_removed: u32,
    /// Manifest and index blobs deleted.
    pub manifests_removed: u32,
    /// Layer blobs deleted (and layer disk images, where the cache made them).
    pub layers_removed: u32,
    /// Merged fsmeta EROFS artifacts deleted.
    pub fsmeta_removed: u32,
    /// VMDK descriptor artifacts deleted.
    pub vmdk_removed: u32,
    /// Bytes the deleted files occupied on disk (allocated blocks, as `du`
    /// counts); for a dry run, what they occupy now. `None` only when
    /// nothing could be measured.
    pub bytes_reclaimed: Option<u64>,
    /// Config blobs deleted.
    pub configs_removed: u32,
    /// Stale files of dead writers deleted from `tmp/` and leftovers of
    /// interrupted atomic writes.
    pub tmp_files_removed: u32,
    /// Expired lease files deleted.
    pub expired_leases_removed: u32,
    /// The references taken (or, for a dry run, that would be).
    pub removed: Vec<RemovedImage>,
    /// With `max_bytes`: how far above the budget the blobs stay because
    /// leases pin more than it allows; 0 when the budget is met.
    pub over_budget_bytes: u64,
    /// Whether this is a dry run's report: nothing was deleted.
    pub dry_run: bool,
}

impl ImagePruneReport {
    /// An empty report, measured: nothing reclaimed yet.
    pub(crate) fn measured(dry_run: bool) -> Self {
        ImagePruneReport {
            bytes_reclaimed: Some(0),
            dry_run,
            ..Default::default()
        }
    }

    /// Counts the bytes of a deleted file.
    pub(crate) fn reclaim(&mut self, bytes: u64) {
        self.bytes_reclaimed = Some(self.bytes_reclaimed.unwrap_or(0).saturating_add(bytes));
    }
}

/// One reference a prune took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedImage {
    /// The familiar reference (`python:3.12`), or the manifest digest for
    /// an entry without a name.
    pub reference: String,
    /// The digest the reference pointed at.
    pub manifest_digest: String,
    /// The bytes its blobs take on disk (shared blobs counted in full):
    /// what it weighed, not what its removal alone freed.
    pub bytes: u64,
    /// The bytes of the blobs this prune deleted that no other image, kept
    /// or removed, needed: what its removal alone freed. These add up to at
    /// most `bytes_reclaimed` (blobs several removed images shared count in
    /// none of them).
    pub unique_bytes: u64,
}

/// A pin on an image's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLease {
    /// The lease id.
    pub id: String,
    /// Who holds it.
    pub kind: LeaseKind,
    /// The reference it was taken through (familiar form), if any.
    pub reference: Option<String>,
    /// The pinned manifest.
    pub manifest_digest: Option<String>,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// When it ends; `None` until released.
    pub expires_at: Option<DateTime<Utc>>,
    /// The image's VM disk, when the lease was taken with `materialize`.
    pub disk: Option<ImageDisk>,
}

/// What the cache takes on disk, each blob counted once. Every size is
/// allocated bytes (blocks, as `du` counts), not file lengths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Every file under `$MSB_HOME/cache` and `$MSB_HOME/leases`.
    pub total_bytes: u64,
    /// The files of `blobs/sha256/`.
    pub blobs_bytes: u64,
    /// The VM artifacts of `cache/vm/` (layer images, fsmeta, VMDK).
    pub vm_bytes: u64,
    /// The files of `tmp/` (downloads and loads in flight or left over).
    pub tmp_bytes: u64,
    /// What `prune()` would free now: its dry run's `bytes_reclaimed`.
    pub reclaimable_bytes: u64,
    /// One entry per reference, newest first (as `list`).
    pub images: Vec<ImageUsage>,
}

/// One reference's share of the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUsage {
    /// The familiar reference, or the manifest digest for an unnamed entry.
    pub reference: String,
    /// The digest the reference points at.
    pub manifest_digest: String,
    /// Every blob it needs and its VM artifacts (shared ones in full).
    pub size_bytes: u64,
    /// The part of `size_bytes` another reference or a lease also needs.
    pub shared_bytes: u64,
    /// The part nothing else needs: what removing this reference alone,
    /// then a prune, frees.
    pub unique_bytes: u64,
    /// Whether an unexpired lease pins its manifest.
    pub in_use: bool,
    /// When a lease last took it; `None` if never.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// An image's VM disk: what a microVM attaches (the VMDK, or the fsmeta
/// with the layer images as its devices). Paths are absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDisk {
    /// The reference asked for, in its familiar form.
    pub reference: String,
    /// The image manifest the disk is made of (the host's platform of an index).
    pub manifest_digest: String,
    /// The VMDK descriptor joining the fsmeta and the layer images: one
    /// disk that mounts with no options on guest kernels that address
    /// several blobs on one device (Linux 6.4 and later; booted on 6.12 by
    /// `tests/boot.rs`). Linux 6.1 does not mount it: give such a guest
    /// [`ImageDisk::fsmeta_path`] and the layer images as separate disks.
    pub vmdk_path: std::path::PathBuf,
    /// The merged metadata-only EROFS image: the first disk of the form
    /// Linux 6.1 mounts too (booted on 6.1 by `tests/boot.rs`): attach it, then each of [`ImageDisk::layers`] as its own disk, and
    /// mount it with one `device=` option per layer, bottom first
    /// (`mount -t erofs -o ro,device=/dev/vdb,device=/dev/vdc /dev/vda`).
    pub fsmeta_path: std::path::PathBuf,
    /// The layer images, bottom first: the `device=` disks of the fsmeta.
    pub layers: Vec<ImageDiskLayer>,
    /// The disk's size: the fsmeta and every layer image.
    pub total_bytes: u64,
    /// What this call found damaged in `cache/vm/` and made again (or took
    /// away first), each as `vm/layers/<name>: why`: an artifact whose seal
    /// or structure did not check, a link or a directory under an
    /// artifact's name, a link or a file in the place of one of its
    /// directories. Empty when the disk was sound.
    pub remade: Vec<String>,
}

/// One layer image of an [`ImageDisk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDiskLayer {
    /// 0 for the bottom layer.
    pub position: u32,
    /// The layer's diff_id, which names its image.
    pub diff_id: String,
    /// The EROFS image.
    pub path: std::path::PathBuf,
    /// Its size.
    pub size_bytes: u64,
}

/// What holds a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    /// A running sandbox.
    Sandbox,
    /// A snapshot built from the image.
    Snapshot,
    /// A load or pull in flight.
    Ingest,
}

impl LeaseKind {
    /// A kind a caller may ask for: `sandbox` or `snapshot` (`ingest`
    /// leases are the cache's own, taken by loads and pulls in flight).
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::InvalidArgument`] for any other text.
    pub fn parse(text: &str) -> MicrosandboxResult<LeaseKind> {
        match text {
            "sandbox" => Ok(LeaseKind::Sandbox),
            "snapshot" => Ok(LeaseKind::Snapshot),
            other => Err(MicrosandboxError::invalid_argument(format!(
                "lease kind must be 'sandbox' or 'snapshot', got {other:?}"
            ))),
        }
    }

    /// `sandbox`, `snapshot` or `ingest`.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseKind::Sandbox => "sandbox",
            LeaseKind::Snapshot => "snapshot",
            LeaseKind::Ingest => "ingest",
        }
    }
}
