//! JS shapes of the core's values: the `ImageHandle` and `ImageLease`
//! classes and the plain camelCase objects. Absent values are `null`,
//! times are `Date`, sizes are `number`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use microsandbox as core;
use napi::bindgen_prelude::AsyncTask;
use napi_derive::napi;

use crate::task::CoreTask;

fn num(n: u64) -> f64 {
    n as f64
}

fn inum(n: i64) -> f64 {
    n as f64
}

macro_rules! error_code_enum {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The stable `code` of every error this package rejects or throws with.
        #[napi(string_enum)]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
        }
    };
}

// One variant per core `ErrorKind`, from the core's own list.
microsandbox::with_error_kinds!(error_code_enum);

/// One cached reference. Reading it opens no blob.
#[napi]
pub struct ImageHandle {
    inner: core::ImageHandle,
}

impl From<core::ImageHandle> for ImageHandle {
    fn from(inner: core::ImageHandle) -> Self {
        ImageHandle { inner }
    }
}

/// The plain-object form of an `ImageHandle` (what `JSON.stringify` writes).
#[napi(object, use_nullable = true)]
pub struct ImageHandleJson {
    pub reference: String,
    pub size_bytes: Option<f64>,
    pub manifest_digest: Option<String>,
    pub architecture: Option<String>,
    pub os: Option<String>,
    pub layer_count: u32,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub image_created_at: Option<DateTime<Utc>>,
    pub disk_ready: bool,
}

#[napi]
impl ImageHandle {
    /// The familiar reference: `python:3.12`, `ghcr.io/org/app:1`.
    #[napi(getter)]
    pub fn reference(&self) -> String {
        self.inner.reference().to_owned()
    }

    /// Manifest, config and layer bytes as stored (shared layers count in
    /// each image), when known.
    #[napi(getter)]
    pub fn size_bytes(&self) -> Option<f64> {
        self.inner.size_bytes().map(inum)
    }

    /// `sha256:...` of the platform manifest.
    #[napi(getter)]
    pub fn manifest_digest(&self) -> Option<String> {
        self.inner.manifest_digest().map(str::to_owned)
    }

    /// CPU architecture (`amd64`).
    #[napi(getter)]
    pub fn architecture(&self) -> Option<String> {
        self.inner.architecture().map(str::to_owned)
    }

    /// Operating system (`linux`).
    #[napi(getter)]
    pub fn os(&self) -> Option<String> {
        self.inner.os().map(str::to_owned)
    }

    /// How many layers.
    #[napi(getter)]
    pub fn layer_count(&self) -> u32 {
        layer_count(&self.inner)
    }

    /// When a lease last took the image; `null` if never.
    #[napi(getter)]
    pub fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.inner.last_used_at()
    }

    /// When the reference entered the cache.
    #[napi(getter)]
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.inner.created_at()
    }

    /// When the image was built (its config's `created`), if it says.
    #[napi(getter)]
    pub fn image_created_at(&self) -> Option<DateTime<Utc>> {
        self.inner.image_created_at()
    }

    /// Whether the image's VM disk was made when this handle was read
    /// (`Image.materialize`).
    #[napi(getter)]
    pub fn disk_ready(&self) -> bool {
        self.inner.disk_ready()
    }

    /// A plain object with the same fields.
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> ImageHandleJson {
        let h = &self.inner;
        ImageHandleJson {
            reference: h.reference().to_owned(),
            size_bytes: h.size_bytes().map(inum),
            manifest_digest: h.manifest_digest().map(str::to_owned),
            architecture: h.architecture().map(str::to_owned),
            os: h.os().map(str::to_owned),
            layer_count: layer_count(h),
            last_used_at: h.last_used_at(),
            created_at: h.created_at(),
            image_created_at: h.image_created_at(),
            disk_ready: h.disk_ready(),
        }
    }
}

fn layer_count(h: &core::ImageHandle) -> u32 {
    u32::try_from(h.layer_count()).unwrap_or(u32::MAX)
}

/// The runtime part of an image config.
#[napi(object, use_nullable = true)]
pub struct ImageConfigDetail {
    /// Digest of the config blob.
    pub digest: String,
    /// `KEY=value` strings.
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// The labels; `null` when the image has none.
    #[napi(ts_type = "Record<string, unknown>")]
    pub labels: Option<HashMap<String, String>>,
    /// The signal that stops the container (`SIGTERM`).
    pub stop_signal: Option<String>,
    /// Ports the image says it listens on (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// Paths the image declares as volumes.
    pub volumes: Vec<String>,
}

/// One step of an image's history, oldest first.
#[napi(object, use_nullable = true)]
pub struct ImageHistory {
    /// When the step ran.
    pub created: Option<DateTime<Utc>>,
    /// The command that made it.
    pub created_by: Option<String>,
    pub author: Option<String>,
    pub comment: Option<String>,
    /// Whether the step made no layer (an `ENV`, a `CMD`).
    pub empty_layer: bool,
}

/// One layer; `position` 0 is the bottom.
#[napi(object, use_nullable = true)]
pub struct ImageLayerDetail {
    /// Digest of the uncompressed layer (`rootfs.diff_ids`).
    pub diff_id: String,
    /// Digest of the blob as stored.
    pub blob_digest: String,
    pub media_type: Option<String>,
    pub compressed_size_bytes: Option<f64>,
    /// Size of the layer's EROFS image; `null` until one is made.
    pub erofs_size_bytes: Option<f64>,
    pub position: i32,
}

/// An image with its config and layers.
#[napi(object, use_nullable = true, object_from_js = false)]
pub struct ImageDetail {
    /// The handle `get` answers with: an `ImageHandle` instance.
    pub handle: ImageHandle,
    /// The runtime config; `null` when the image has no `config` block.
    pub config: Option<ImageConfigDetail>,
    pub layers: Vec<ImageLayerDetail>,
    /// When the image was built (its config's `created`).
    pub created: Option<DateTime<Utc>>,
    /// Who built it.
    pub author: Option<String>,
    /// How it was built, oldest step first.
    pub history: Vec<ImageHistory>,
}

impl From<core::ImageDetail> for ImageDetail {
    fn from(d: core::ImageDetail) -> Self {
        let c = d.config;
        ImageDetail {
            handle: ImageHandle::from(d.handle),
            config: c.map(|c| ImageConfigDetail {
                digest: c.digest,
                env: c.env,
                cmd: c.cmd,
                entrypoint: c.entrypoint,
                working_dir: c.working_dir,
                user: c.user,
                labels: c.labels.as_ref().and_then(|v| v.as_object()).map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                }),
                stop_signal: c.stop_signal,
                exposed_ports: c.exposed_ports,
                volumes: c.volumes,
            }),
            layers: d
                .layers
                .into_iter()
                .map(|l| ImageLayerDetail {
                    diff_id: l.diff_id,
                    blob_digest: l.blob_digest,
                    media_type: l.media_type,
                    compressed_size_bytes: l.compressed_size_bytes.map(inum),
                    erofs_size_bytes: l.erofs_size_bytes.map(inum),
                    position: l.position,
                })
                .collect(),
            created: d.created,
            author: d.author,
            history: d
                .history
                .into_iter()
                .map(|h| ImageHistory {
                    created: h.created,
                    created_by: h.created_by,
                    author: h.author,
                    comment: h.comment,
                    empty_layer: h.empty_layer,
                })
                .collect(),
        }
    }
}

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

/// What holds a lease.
#[napi(string_enum = "lowercase")]
pub enum LeaseKind {
    Sandbox,
    Snapshot,
    Ingest,
}

impl From<core::LeaseKind> for LeaseKind {
    fn from(k: core::LeaseKind) -> Self {
        match k {
            core::LeaseKind::Sandbox => LeaseKind::Sandbox,
            core::LeaseKind::Snapshot => LeaseKind::Snapshot,
            core::LeaseKind::Ingest => LeaseKind::Ingest,
        }
    }
}

/// A pin on an image's manifest, held until released or expired.
#[napi]
pub struct ImageLease {
    inner: core::ImageLease,
    backend: core::LocalBackend,
}

impl ImageLease {
    pub fn new(inner: core::ImageLease, backend: core::LocalBackend) -> Self {
        ImageLease { inner, backend }
    }
}

/// The plain-object form of an `ImageLease`.
#[napi(object, use_nullable = true)]
pub struct ImageLeaseJson {
    pub id: String,
    pub kind: LeaseKind,
    pub reference: Option<String>,
    pub manifest_digest: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub disk: Option<ImageDisk>,
}

#[napi]
impl ImageLease {
    /// The lease id.
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.inner.id.clone()
    }

    /// Who holds it.
    #[napi(getter)]
    pub fn kind(&self) -> LeaseKind {
        self.inner.kind.into()
    }

    /// The reference it was taken through.
    #[napi(getter)]
    pub fn reference(&self) -> Option<String> {
        self.inner.reference.clone()
    }

    /// The pinned manifest.
    #[napi(getter)]
    pub fn manifest_digest(&self) -> Option<String> {
        self.inner.manifest_digest.clone()
    }

    /// When it was taken.
    #[napi(getter)]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.inner.created_at
    }

    /// When it ends; `null` until released.
    #[napi(getter)]
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.inner.expires_at
    }

    /// The image's VM disk, when the lease was taken with `materialize`.
    #[napi(getter)]
    pub fn disk(&self) -> Option<ImageDisk> {
        self.inner.disk.clone().map(ImageDisk::from)
    }

    /// Ends the lease; resolves false if it had already ended.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn release(&self) -> AsyncTask<CoreTask<bool>> {
        let backend = self.backend.clone();
        let id = self.inner.id.clone();
        AsyncTask::new(CoreTask::new(move || backend.release_lease(&id)))
    }

    /// A plain object with the same fields.
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> ImageLeaseJson {
        lease_json(&self.inner)
    }
}

pub fn lease_json(l: &core::ImageLease) -> ImageLeaseJson {
    ImageLeaseJson {
        id: l.id.clone(),
        kind: l.kind.into(),
        reference: l.reference.clone(),
        manifest_digest: l.manifest_digest.clone(),
        created_at: l.created_at,
        expires_at: l.expires_at,
        disk: l.disk.clone().map(ImageDisk::from),
    }
}

/// A progress event of a long operation (`onProgress`).
#[napi(object, use_nullable = true)]
pub struct ProgressEvent {
    /// `read` (an archive), `write` (a blob into the cache's tmp/), `verify`
    /// (decompressing a gzip layer to check its diff_id), `commit`, `erofs`
    /// (a layer's blob read into its VM image).
    pub phase: String,
    /// The blob concerned, for `write`.
    pub digest: Option<String>,
    /// Bytes done so far in this phase (of this blob, for `write`).
    pub bytes: f64,
    /// Bytes in all, when known.
    pub total_bytes: Option<f64>,
}

impl From<&core::Progress> for ProgressEvent {
    fn from(p: &core::Progress) -> Self {
        ProgressEvent {
            phase: p.phase.as_str().to_owned(),
            digest: p.digest.clone(),
            bytes: num(p.bytes),
            total_bytes: p.total_bytes.map(num),
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

/// A pull's progress in microsandbox's own kinds (`onPullProgress`).
#[napi(
    discriminant = "kind",
    discriminant_case = "camelCase",
    use_nullable = true
)]
pub enum PullProgress {
    Resolving {
        reference: String,
    },
    Resolved {
        reference: String,
        manifest_digest: String,
        layer_count: u32,
        total_download_bytes: Option<f64>,
    },
    LayerDownloadProgress {
        layer_index: u32,
        digest: String,
        downloaded_bytes: f64,
        total_bytes: Option<f64>,
    },
    LayerDownloadComplete {
        layer_index: u32,
        digest: String,
        downloaded_bytes: f64,
    },
    LayerDownloadVerifying {
        layer_index: u32,
        digest: String,
    },
    LayerMaterializeStarted {
        layer_index: u32,
        diff_id: String,
    },
    LayerMaterializeProgress {
        layer_index: u32,
        bytes_read: f64,
        total_bytes: Option<f64>,
    },
    LayerMaterializeWriting {
        layer_index: u32,
    },
    LayerMaterializeComplete {
        layer_index: u32,
        diff_id: String,
        erofs_size_bytes: f64,
    },
    StitchMergingTrees {
        layer_count: u32,
    },
    StitchWritingFsmeta {},
    StitchWritingVmdk {},
    StitchComplete {
        vmdk_path: String,
    },
    Complete {
        reference: String,
        layer_count: u32,
    },
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<&core::PullProgress> for PullProgress {
    fn from(p: &core::PullProgress) -> Self {
        use core::PullProgress as P;
        match p.clone() {
            P::Resolving { reference } => PullProgress::Resolving { reference },
            P::Resolved {
                reference,
                manifest_digest,
                layer_count,
                total_download_bytes,
            } => PullProgress::Resolved {
                reference,
                manifest_digest,
                layer_count: count(layer_count),
                total_download_bytes: total_download_bytes.map(num),
            },
            P::LayerDownloadProgress {
                layer_index,
                digest,
                downloaded_bytes,
                total_bytes,
            } => PullProgress::LayerDownloadProgress {
                layer_index: count(layer_index),
                digest,
                downloaded_bytes: num(downloaded_bytes),
                total_bytes: total_bytes.map(num),
            },
            P::LayerDownloadComplete {
                layer_index,
                digest,
                downloaded_bytes,
            } => PullProgress::LayerDownloadComplete {
                layer_index: count(layer_index),
                digest,
                downloaded_bytes: num(downloaded_bytes),
            },
            P::LayerDownloadVerifying {
                layer_index,
                digest,
            } => PullProgress::LayerDownloadVerifying {
                layer_index: count(layer_index),
                digest,
            },
            P::LayerMaterializeStarted {
                layer_index,
                diff_id,
            } => PullProgress::LayerMaterializeStarted {
                layer_index: count(layer_index),
                diff_id,
            },
            P::LayerMaterializeProgress {
                layer_index,
                bytes_read,
                total_bytes,
            } => PullProgress::LayerMaterializeProgress {
                layer_index: count(layer_index),
                bytes_read: num(bytes_read),
                total_bytes: total_bytes.map(num),
            },
            P::LayerMaterializeWriting { layer_index } => PullProgress::LayerMaterializeWriting {
                layer_index: count(layer_index),
            },
            P::LayerMaterializeComplete {
                layer_index,
                diff_id,
                erofs_size_bytes,
            } => PullProgress::LayerMaterializeComplete {
                layer_index: count(layer_index),
                diff_id,
                erofs_size_bytes: num(erofs_size_bytes),
            },
            P::StitchMergingTrees { layer_count } => PullProgress::StitchMergingTrees {
                layer_count: count(layer_count),
            },
            P::StitchWritingFsmeta => PullProgress::StitchWritingFsmeta {},
            P::StitchWritingVmdk => PullProgress::StitchWritingVmdk {},
            P::StitchComplete { vmdk_path } => PullProgress::StitchComplete { vmdk_path },
            P::Complete {
                reference,
                layer_count,
            } => PullProgress::Complete {
                reference,
                layer_count: count(layer_count),
            },
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

/// An image's VM disk: the VMDK a microVM attaches (or the fsmeta with
/// the layer images as its devices). Paths are absolute.
#[napi(object)]
pub struct ImageDisk {
    /// The familiar reference.
    pub reference: String,
    /// The image manifest the disk is made of.
    pub manifest_digest: String,
    /// The VMDK descriptor: fsmeta, then the layer images, as one disk that
    /// mounts with no options on guest kernels 6.4 and later (booted on
    /// 6.12 by the tests). Linux 6.1 does not mount it: give such a guest
    /// `fsmetaPath` and each of `layers` as separate disks instead.
    pub vmdk_path: String,
    /// The merged metadata-only EROFS image: the first disk of the form
    /// Linux 6.1 mounts too (booted on 6.1 by the tests), with
    /// each of `layers` as its own disk and one `device=` option per layer,
    /// bottom first: `mount -t erofs -o ro,device=/dev/vdb,device=/dev/vdc /dev/vda`.
    pub fsmeta_path: String,
    /// The layer images, bottom first.
    pub layers: Vec<ImageDiskLayer>,
    /// The fsmeta and every layer image, in bytes.
    pub total_bytes: f64,
    /// What this call found damaged in the cache's `vm/` and made again
    /// (or took away first), each as `vm/layers/<name>: why`: an artifact
    /// whose seal or structure did not check, a link or a directory under
    /// an artifact's name, a link or a file where one of its directories
    /// belongs. Empty when the disk was sound.
    pub remade: Vec<String>,
}

/// One layer image of an `ImageDisk`.
#[napi(object)]
pub struct ImageDiskLayer {
    /// 0 for the bottom layer.
    pub position: u32,
    /// The layer's diff_id.
    pub diff_id: String,
    /// The EROFS image.
    pub path: String,
    /// Its size in bytes.
    pub size_bytes: f64,
}

impl From<core::ImageDisk> for ImageDisk {
    fn from(d: core::ImageDisk) -> Self {
        ImageDisk {
            reference: d.reference,
            manifest_digest: d.manifest_digest,
            vmdk_path: d.vmdk_path.display().to_string(),
            fsmeta_path: d.fsmeta_path.display().to_string(),
            layers: d
                .layers
                .into_iter()
                .map(|l| ImageDiskLayer {
                    position: l.position,
                    diff_id: l.diff_id,
                    path: l.path.display().to_string(),
                    size_bytes: num(l.size_bytes),
                })
                .collect(),
            total_bytes: num(d.total_bytes),
            remade: d.remade,
        }
    }
}
