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

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::api::handle::ImageHandle;
use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::{
    is_index_media_type, Descriptor, IndexFile, ManifestDoc, Platform, Shape, ANN_CREATED,
    ANN_IMAGE_CREATED, ANN_LAST_USED, ANN_LAYERS, ANN_SIZE, MEDIA_OCI_MANIFEST,
};
use crate::oci::platform;
use crate::oci::reference::Reference;
use crate::store::blob::{sync_all, BlobWriter, ParkedBlob, VerifiedBlob};
use crate::store::catalog::{handle_of, name_descriptor};
use crate::store::index::{self, IndexTxn};
use crate::store::layout::{Layout, JSON_BLOB_LIMIT};
use crate::store::lease::TransferPin;
use crate::store::lock::Exclusive;
pub use crate::transfer::layer::DEFAULT_MAX_LAYER_BYTES;
use crate::transfer::layer::{check_diff_id, uncompressed_digest, LayerDigester};
use crate::transfer::progress::{Phase, Progress, ProgressFn, ProgressReader};
use crate::transfer::registry::{Fetched, PullOptions, RegistryOrigin};
use crate::util::time;

use dir::DirOrigin;
use tarball::TarStage;

mod dir;
mod docker;
pub mod layer;
pub mod progress;
pub mod registry;
mod save;
mod tarball;

pub use save::{save, SaveFormat, SaveOptions};

const SOURCE_INDEX_LIMIT: u64 = 64 << 20;
/// The most references one source may name.
const MAX_REFERENCES: usize = 100_000;
/// The most layers one source's distinct images may list in all.
const MAX_LAYER_NAMES: usize = 100_000;
/// The annotation containerd and nerdctl use for a full image name.
const ANN_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The platform to take from multi-platform indexes; the host's if unset.
    pub platform: Option<Platform>,
    /// The name to give the image of a single-image source, whatever (or
    /// whether) the source names it.
    pub reference: Option<Reference>,
    /// Where progress events go.
    pub progress: Option<ProgressFn>,
    /// The most bytes a gzip layer may decompress to (checked while its
    /// diff_id is computed); a larger one is refused as a decompression
    /// bomb. [`DEFAULT_MAX_LAYER_BYTES`] if unset.
    pub max_layer_bytes: Option<u64>,
}

/// One reference of the source and the image it names.
#[derive(Clone)]
struct Planned {
    reference: Reference,
    image: Arc<PlannedImage>,
}

impl std::ops::Deref for Planned {
    type Target = PlannedImage;

    fn deref(&self) -> &PlannedImage {
        &self.image
    }
}

/// One image of the source, read and checked, waiting for its layers;
/// shared by every reference that names it.
struct PlannedImage {
    manifest: Descriptor,
    manifest_bytes: Arc<[u8]>,
    config: Descriptor,
    config_bytes: Arc<[u8]>,
    layers: Vec<Descriptor>,
    /// The config's `rootfs.diff_ids`, one per layer.
    diff_ids: Vec<Digest>,
    /// The digest the source named: the manifest's, or its index's.
    top: Digest,
    platform: Platform,
    /// The config's `created`, as it says it.
    created: Option<String>,
}

impl PlannedImage {
    fn size(&self) -> u64 {
        self.layers.iter().fold(
            self.manifest.size.saturating_add(self.config.size),
            |a, l| a.saturating_add(l.size),
        )
    }

    fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest.digest, &self.config.digest]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

/// Each distinct image of a plan once, whatever the number of its names.
fn distinct(planned: &[Planned]) -> impl Iterator<Item = &Planned> {
    let mut seen: HashSet<&Digest> = HashSet::new();
    planned
        .iter()
        .filter(move |p| seen.insert(&p.manifest.digest))
}

/// Where a load reads from.
enum Origin {
    Dir(DirOrigin),
    Tar(TarStage),
    Registry(RegistryOrigin),
}

/// The origin of a load, with its JSON blobs read once per digest however
/// many references share them.
struct Source {
    label: String,
    origin: Origin,
    progress: Option<ProgressFn>,
    json: Mutex<HashMap<Digest, Arc<[u8]>>>,
    /// The decompression limit of a layer.
    max_layer_bytes: u64,
}

impl Source {
    fn json_cache(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<[u8]>>> {
        self.json.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn invalid(&self, what: impl std::fmt::Display) -> MicrosandboxError {
        MicrosandboxError::new(ErrorKind::InvalidArchive, format!("{}: {what}", self.label))
    }

    /// A top-level file (`oci-layout`, `index.json`, `manifest.json`), at
    /// most `limit` bytes; `None` if absent.
    fn top(&self, name: &str, limit: u64) -> MicrosandboxResult<Option<Vec<u8>>> {
        let bytes = match &self.origin {
            Origin::Dir(d) => d.top(name, limit)?,
            Origin::Tar(t) => t.top(name, limit)?,
            Origin::Registry(_) => None,
        };
        match bytes {
            Some(b) if b.len() as u64 > limit => {
                Err(self.invalid(format!("{name} is larger than {limit} bytes")))
            }
            other => Ok(other),
        }
    }

    /// Like [`Source::top`], for a file that must be there.
    fn read_small(&self, name: &str, limit: u64) -> MicrosandboxResult<Vec<u8>> {
        self.top(name, limit)?
            .ok_or_else(|| self.invalid(format!("{name} is missing")))
    }

    /// Reads a JSON blob whole (bounded) and checks its digest and size.
    fn read_json(&self, d: &Descriptor, what: &str) -> MicrosandboxResult<Arc<[u8]>> {
        if let Some(bytes) = self.json_cache().get(&d.digest) {
            if bytes.len() as u64 != d.size {
                return Err(self.invalid(format!(
                    "{what}: {} is declared with {} bytes here and {} elsewhere",
                    d.digest,
                    d.size,
                    bytes.len()
                )));
            }
            return Ok(bytes.clone());
        }
        if d.size > JSON_BLOB_LIMIT {
            return Err(self.invalid(format!(
                "{what}: {} declares {} bytes, over the {JSON_BLOB_LIMIT}-byte limit for JSON",
                d.digest, d.size
            )));
        }
        let bytes = match &self.origin {
            Origin::Dir(o) => o.read(&d.digest, d.size, what)?,
            Origin::Tar(t) => t.read(&d.digest, d.size, what)?,
            Origin::Registry(r) => r.read(d, d.size, what)?,
        };
        let actual = Digest::of(&bytes);
        if bytes.len() as u64 != d.size || actual != d.digest {
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!(
                    "{}: {what}: expected {} ({} bytes), content is {actual} ({} bytes)",
                    self.label,
                    d.digest,
                    d.size,
                    bytes.len()
                ),
            ));
        }
        let bytes: Arc<[u8]> = bytes.into();
        self.json_cache().insert(d.digest.clone(), bytes.clone());
        Ok(bytes)
    }

    /// The size of a blob of the source; `None` if it has none of that digest.
    fn blob_size(&self, digest: &Digest) -> MicrosandboxResult<Option<u64>> {
        match &self.origin {
            Origin::Dir(o) => o.blob_size(digest),
            Origin::Tar(t) => Ok(t
                .entry(&format!("blobs/sha256/{}", digest.hex()))
                .map(|(_, size)| size)),
            Origin::Registry(_) => Ok(None),
        }
    }

    /// A blob as a verified temporary, ready to commit. `waiting` is
    /// called while another pull downloads the same blob.
    fn stage(
        &self,
        layout: &Layout,
        d: &Descriptor,
        what: &str,
        waiting: impl FnMut() -> MicrosandboxResult<()>,
    ) -> MicrosandboxResult<Staged> {
        Ok(match &self.origin {
            Origin::Dir(o) => Staged::Written(o.stage(layout, d, what, self.progress.clone())?),
            Origin::Tar(t) => Staged::Written(t.stage(layout, d, what)?),
            Origin::Registry(r) => {
                match r.stage(
                    layout,
                    d,
                    what,
                    self.progress.as_ref(),
                    self.max_layer_bytes,
                    waiting,
                )? {
                    Fetched::Present => Staged::Present,
                    Fetched::Verified(p, tap) => Staged::Partial(p, tap),
                }
            }
        })
    }

    /// How many blobs to bring in at once: downloads wait on the network,
    /// local copies and decompression on the disk and the cores.
    fn parallelism(&self) -> usize {
        match self.origin {
            Origin::Registry(_) => DOWNLOADS,
            Origin::Dir(_) | Origin::Tar(_) => {
                std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
            }
        }
    }
}

/// How many layers a pull downloads at once (skopeo takes six too).
const DOWNLOADS: usize = 6;

/// A blob brought in by [`Source::stage`].
enum Staged {
    /// Written to a temporary of its own.
    Written(VerifiedBlob),
    /// Downloaded to its partial file, still locked, with the layer's
    /// uncompressed digest when it was computed on the way.
    Partial(Box<VerifiedBlob>, Option<LayerDigester>),
    /// Committed to the cache by another pull meanwhile.
    Present,
}

/// A blob waiting for the commit.
enum Arrived {
    Written(VerifiedBlob),
    Parked(ParkedBlob),
}

/// Opens `path`: a directory is an OCI layout; a file is a tar archive,
/// gzip-compressed or not (told by its first bytes), staged in one pass.
fn open(layout: &Layout, path: &Path, progress: Option<ProgressFn>) -> MicrosandboxResult<Source> {
    let label = path.display().to_string();
    let invalid =
        |what: &str| MicrosandboxError::new(ErrorKind::InvalidArchive, format!("{label}: {what}"));
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => invalid("no such file or directory"),
        _ => MicrosandboxError::io("stat", path, e),
    })?;
    let origin = if meta.is_dir() {
        Origin::Dir(DirOrigin::new(path))
    } else if meta.is_file() {
        let file = std::fs::File::open(path).map_err(|e| MicrosandboxError::io("open", path, e))?;
        let counted =
            ProgressReader::new(file, progress.clone(), Phase::Read, None, Some(meta.len()));
        let mut reader = io::BufReader::with_capacity(1 << 20, counted);
        let gzip = io::BufRead::fill_buf(&mut reader)
            .map_err(|e| MicrosandboxError::io("read", path, e))?
            .starts_with(&[0x1f, 0x8b]);
        let stage = if gzip {
            TarStage::from_reader(layout, flate2::bufread::MultiGzDecoder::new(reader), &label)?
        } else {
            TarStage::from_reader(layout, reader, &label)?
        };
        // tar stops at its end marker, before the reader sees EOF.
        if let Some(p) = &progress {
            p.report(&Progress {
                phase: Phase::Read,
                digest: None,
                bytes: meta.len(),
                total_bytes: Some(meta.len()),
            });
        }
        Origin::Tar(stage)
    } else {
        return Err(invalid("neither a directory nor a regular file"));
    };
    Ok(Source {
        label,
        origin,
        progress,
        json: Mutex::default(),
        max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
    })
}

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
) -> MicrosandboxResult<Vec<ImageHandle>> {
    let mut source = open(layout, path, options.progress.clone())?;
    source.max_layer_bytes = options.max_layer_bytes.unwrap_or(DEFAULT_MAX_LAYER_BYTES);
    let planned = plan(&source, options)?;
    ingest(layout, &source, &planned)
}

/// Pins what a plan needs, brings it in and commits it.
fn ingest(
    layout: &Layout,
    source: &Source,
    planned: &[Planned],
) -> MicrosandboxResult<Vec<ImageHandle>> {
    let mut needed: Vec<Digest> = Vec::new();
    let mut seen = HashSet::new();
    for d in distinct(planned).flat_map(|p| p.image.blobs()) {
        if seen.insert(d.clone()) {
            needed.push(d.clone());
        }
    }
    let mut pin = TransferPin::take(layout, needed.clone())?;
    ingest_and_commit(layout, source, planned, &needed, &mut pin)
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
    let (bytes, top) = registry.top(reference, JSON_BLOB_LIMIT)?;
    let source = Source {
        label: registry.label().to_owned(),
        origin: Origin::Registry(registry),
        progress: options.progress.clone(),
        json: Mutex::default(),
        max_layer_bytes: options.max_layer_bytes.unwrap_or(DEFAULT_MAX_LAYER_BYTES),
    };
    source.json_cache().insert(top.digest.clone(), bytes.into());
    let want = options.platform.clone().unwrap_or_else(platform::host);
    let planned = vec![plan_image(&source, reference.clone(), &top, &want)?];
    check_sizes(&source, &planned)?;
    let mut handles = ingest(layout, &source, &planned)?;
    Ok(handles.remove(0))
}

/// Plans from the OCI index when the source has named images there, else
/// from a docker-archive's `manifest.json` (Docker 25+ archives hold both).
fn plan(source: &Source, options: &LoadOptions) -> MicrosandboxResult<Vec<Planned>> {
    let has = |name: &str| -> MicrosandboxResult<bool> {
        Ok(match &source.origin {
            Origin::Tar(stage) => stage.entry(name).is_some(),
            Origin::Dir(_) | Origin::Registry(_) => source.top(name, JSON_BLOB_LIMIT)?.is_some(),
        })
    };
    let is_layout = has("oci-layout")?;
    let mut planned = if is_layout {
        plan_oci(source, options)?
    } else {
        Vec::new()
    };
    if planned.is_empty() {
        planned = match &source.origin {
            _ if has("meta.json")? => plan_minibox(source, options)?,
            Origin::Tar(stage) if stage.entry("manifest.json").is_some() => {
                docker::plan(source, stage, options)?
            }
            _ if is_layout => Vec::new(),
            Origin::Dir(_) => {
                return Err(source.invalid("not an OCI image layout: no oci-layout file"))
            }
            Origin::Tar(_) | Origin::Registry(_) => {
                return Err(source.invalid(
                    "not an OCI archive, a docker-archive nor a MiniBox archive: \
                     no oci-layout, manifest.json or meta.json",
                ))
            }
        };
    }
    if planned.is_empty() {
        return Err(
            source.invalid("names no image (no org.opencontainers.image.ref.name, no RepoTags)")
        );
    }
    if let Some(reference) = &options.reference {
        let images: HashSet<&Digest> = planned.iter().map(|p| &p.manifest.digest).collect();
        if images.len() != 1 {
            return Err(MicrosandboxError::invalid_argument(format!(
                "{}: holds {} images; a reference can rename only a single-image archive",
                source.label,
                images.len()
            )));
        }
        planned.truncate(1);
        planned[0].reference = reference.clone();
    }
    // A name that pins a digest must name this very manifest.
    for p in &planned {
        if let Some(pinned) = p.reference.digest() {
            if pinned != &p.manifest.digest && pinned != &p.top {
                return Err(source.invalid(format!(
                    "{} pins digest {pinned} but names manifest {}",
                    p.reference.familiar(),
                    p.manifest.digest
                )));
            }
        }
    }
    check_sizes(source, &planned)?;
    Ok(planned)
}

/// A MiniBox archive: `meta.json` (`{"image", "manifest_digest"}`) and the
/// blobs under `blobs/sha256/`.
fn plan_minibox(source: &Source, options: &LoadOptions) -> MicrosandboxResult<Vec<Planned>> {
    #[derive(serde::Deserialize)]
    struct Meta {
        image: String,
        manifest_digest: String,
    }
    let bytes = source.read_small("meta.json", 1 << 20)?;
    let meta: Meta = serde_json::from_slice(&bytes)
        .map_err(|e| source.invalid(format!("meta.json is invalid: {e}")))?;
    let reference = match &options.reference {
        Some(r) => r.clone(),
        None => Reference::parse(&meta.image)
            .map_err(|e| source.invalid(format!("meta.json names an invalid reference: {e}")))?,
    };
    let digest: Digest = meta
        .manifest_digest
        .parse()
        .map_err(|e| source.invalid(format!("meta.json: manifest_digest: {e}")))?;
    let size = source.blob_size(&digest)?.ok_or_else(|| {
        source.invalid(format!(
            "meta.json names manifest {digest}, which is missing"
        ))
    })?;
    let descriptor = Descriptor::new(MEDIA_OCI_MANIFEST, digest, size);
    let want = options.platform.clone().unwrap_or_else(platform::host);
    let bytes = source.read_json(&descriptor, "manifest")?;
    let media_type = ManifestDoc::parse(&bytes)
        .ok()
        .and_then(|d| d.media_type)
        .unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_owned());
    let descriptor = Descriptor {
        media_type,
        ..descriptor
    };
    Ok(vec![plan_image(source, reference, &descriptor, &want)?])
}

fn plan_oci(source: &Source, options: &LoadOptions) -> MicrosandboxResult<Vec<Planned>> {
    let marker = source
        .read_small("oci-layout", 1 << 20)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidArchive => {
                source.invalid(format!("not an OCI image layout: {}", e.message()))
            }
            _ => e,
        })?;
    let version = serde_json::from_slice::<serde_json::Value>(&marker)
        .ok()
        .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_owned))
        .ok_or_else(|| source.invalid("oci-layout is not {\"imageLayoutVersion\": ...}"))?;
    if !version.starts_with("1.") {
        return Err(source.invalid(format!("unsupported imageLayoutVersion {version:?}")));
    }
    let index_bytes = source.read_small("index.json", SOURCE_INDEX_LIMIT)?;
    let index: IndexFile = serde_json::from_slice(&index_bytes)
        .map_err(|e| source.invalid(format!("index.json is invalid: {e}")))?;
    if let Some(bad) = index.manifests.unreadable.first() {
        return Err(source.invalid(format!(
            "index.json is invalid: entry {}: {}",
            bad.position, bad.why
        )));
    }
    let want = options.platform.clone().unwrap_or_else(platform::host);
    let mut planned: Vec<Planned> = Vec::new();
    let mut names = HashSet::new();
    // An image named many times is read and checked once.
    let mut memo: HashMap<Digest, Arc<PlannedImage>> = HashMap::new();
    let mut layers_named = 0usize;
    for d in &index.manifests {
        let name = d
            .annotations
            .get(ANN_CONTAINERD_NAME)
            .map(String::as_str)
            .or(d.ref_name());
        let reference = match (name, &options.reference) {
            (Some(name), _) => Reference::parse(name).map_err(|e| {
                source.invalid(format!("index.json names an invalid reference: {e}"))
            })?,
            // An unnamed single image takes the name the caller gives.
            (None, Some(r)) if index.manifests.len() == 1 => r.clone(),
            (None, _) => continue,
        };
        if !names.insert(reference.canonical()) {
            return Err(source.invalid(format!("index.json names {} twice", reference.familiar())));
        }
        if names.len() > MAX_REFERENCES {
            return Err(source.invalid(format!(
                "index.json names more than {MAX_REFERENCES} images"
            )));
        }
        if layers_named > MAX_LAYER_NAMES {
            return Err(source.invalid("names too many layers in all"));
        }
        let planned_one = match memo.get(&d.digest) {
            Some(image) => Planned {
                reference,
                image: image.clone(),
            },
            None => {
                let p = plan_image(source, reference, d, &want)?;
                layers_named += p.layers.len();
                memo.insert(d.digest.clone(), p.image.clone());
                p
            }
        };
        planned.push(planned_one);
    }
    Ok(planned)
}

fn plan_image(
    source: &Source,
    reference: Reference,
    d: &Descriptor,
    want: &Platform,
) -> MicrosandboxResult<Planned> {
    let shown = reference.familiar();
    let what = format!("manifest of {shown}");
    let bytes = source.read_json(d, &what)?;
    let doc = ManifestDoc::parse(&bytes).map_err(|e| source.invalid(format!("{what}: {e}")))?;
    let (manifest, manifest_bytes, doc) = match doc.shape() {
        Ok(Shape::Index(children)) => {
            let chosen = platform::choose(children, want, &format!("the index of {shown}"))?;
            let what = format!("{} manifest of {shown}", platform::Display(want));
            let bytes = source.read_json(chosen, &what)?;
            let child =
                ManifestDoc::parse(&bytes).map_err(|e| source.invalid(format!("{what}: {e}")))?;
            if is_index_media_type(&chosen.media_type)
                || matches!(child.shape(), Ok(Shape::Index(_)))
            {
                return Err(source.invalid(format!("{what}: nested indexes are not supported")));
            }
            (chosen.clone(), bytes, child)
        }
        _ => (d.clone(), bytes, doc),
    };
    if let Some(pinned) = reference.digest() {
        if pinned != &d.digest && pinned != &manifest.digest {
            return Err(source.invalid(format!(
                "{shown} names digest {pinned} but its descriptor points at {}",
                d.digest
            )));
        }
    }
    let Ok(Shape::Image { config, layers }) = doc.shape() else {
        unreachable!("index shapes were resolved above")
    };
    let what = format!("config of {shown}");
    let config_bytes = source.read_json(config, &what)?;
    let cfg: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| source.invalid(format!("{what}: {e}")))?;
    let diff_ids = cfg.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        return Err(source.invalid(format!(
            "{what}: {} diff_ids for {} layers",
            diff_ids.len(),
            layers.len()
        )));
    }
    let platform = Platform {
        architecture: cfg.architecture().to_string(),
        os: cfg.os().to_string(),
        variant: cfg.variant().clone(),
        ..Platform::default()
    };
    Ok(Planned {
        reference,
        image: Arc::new(PlannedImage {
            manifest: Descriptor {
                media_type: doc
                    .media_type
                    .clone()
                    .unwrap_or_else(|| manifest.media_type.clone()),
                annotations: Default::default(),
                platform: None,
                ..manifest
            },
            manifest_bytes,
            config: config.clone(),
            config_bytes,
            layers: layers.to_vec(),
            diff_ids: parse_diff_ids(source, diff_ids, &what)?,
            top: d.digest.clone(),
            platform,
            created: cfg.created().clone(),
        }),
    })
}

/// A config's `diff_ids`, each a valid digest.
fn parse_diff_ids(
    source: &Source,
    diff_ids: &[String],
    what: &str,
) -> MicrosandboxResult<Vec<Digest>> {
    diff_ids
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|e| source.invalid(format!("{what}: diff_id: {e}")))
        })
        .collect()
}

/// One digest, one size: a source that declares a blob with two sizes is
/// refused, so no descriptor stored in the cache lies about its blob.
fn check_sizes(source: &Source, planned: &[Planned]) -> MicrosandboxResult<()> {
    let mut sizes: HashMap<&Digest, u64> = HashMap::new();
    for p in distinct(planned) {
        let all = [&p.manifest, &p.config].into_iter().chain(&p.layers);
        for d in all {
            match sizes.insert(&d.digest, d.size) {
                Some(other) if other != d.size => {
                    return Err(source.invalid(format!(
                        "{} is declared with {} bytes and with {other}",
                        d.digest, d.size
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Whether the cache holds the blob already, at the size the source
/// declares. Such a blob is not read from the source again: the cache's
/// copy was verified when it entered.
fn present(layout: &Layout, d: &Descriptor, what: &str) -> MicrosandboxResult<bool> {
    match layout.blob_stat(&d.digest)? {
        Some(s) if s.st_size as u64 == d.size => Ok(true),
        Some(s) => Err(MicrosandboxError::new(
            ErrorKind::DigestMismatch,
            format!(
                "{what}: {} is declared with {} bytes; that blob has {}",
                d.digest, d.size, s.st_size
            ),
        )),
        None => Ok(false),
    }
}

fn ingest_and_commit(
    layout: &Layout,
    source: &Source,
    planned: &[Planned],
    needed: &[Digest],
    pin: &mut TransferPin,
) -> MicrosandboxResult<Vec<ImageHandle>> {
    let mut verified: Vec<VerifiedBlob> = Vec::new();
    let mut written: HashSet<Digest> = HashSet::new();
    let mut seen_layers: HashSet<Digest> = HashSet::new();
    let mut layers: Vec<(Descriptor, String)> = Vec::new();
    for p in distinct(planned) {
        let shown = p.reference.familiar();
        let json = [
            (&p.manifest, &p.manifest_bytes, "manifest"),
            (&p.config, &p.config_bytes, "config"),
        ];
        for (d, bytes, what) in json {
            let what = format!("{what} of {shown}");
            if present(layout, d, &what)? || !written.insert(d.digest.clone()) {
                continue;
            }
            let mut w = BlobWriter::create(layout)?.expecting(&d.digest, d.size);
            w.write(bytes, &what)?;
            verified.push(w.finish(&what)?.0);
        }
        for (i, d) in p.layers.iter().enumerate() {
            if seen_layers.insert(d.digest.clone()) {
                layers.push((d.clone(), format!("layer {i} of {shown}")));
            }
        }
    }
    // Every distinct layer is brought in (several at once) and decompressed
    // once (gzip) while its file is ours; then every occurrence is checked
    // against its own config's diff_id, whether the layer is new, repeated,
    // or in the cache already.
    let pin = Mutex::new(pin);
    let renew = || pin.lock().unwrap_or_else(|e| e.into_inner()).renew_if_due();
    let progress = source.progress.as_ref();
    let brought = crate::util::par::queue(&layers, source.parallelism(), |(d, what)| {
        let digest_of = |file: &std::fs::File, path: &Path| {
            uncompressed_digest(
                file,
                path,
                &d.digest,
                &d.media_type,
                what,
                progress,
                source.max_layer_bytes,
            )
        };
        let cached = || -> MicrosandboxResult<Option<Digest>> {
            let path = layout.blob_path(&d.digest);
            let file = layout.open_blob(&d.digest)?.ok_or_else(|| {
                MicrosandboxError::new(
                    ErrorKind::Busy,
                    format!(
                        "blob {} was pruned while the load ran; load again",
                        d.digest
                    ),
                )
            })?;
            digest_of(&file, &path)
        };
        if present(layout, d, what)? {
            return Ok((None, cached()?));
        }
        renew()?;
        Ok(match source.stage(layout, d, what, renew)? {
            Staged::Written(blob) => {
                let found = digest_of(blob.file(), &blob.path())?;
                (Some(Arrived::Written(blob)), found)
            }
            Staged::Partial(blob, tap) => {
                let found = match tap {
                    Some(tap) => tap.finish(&d.digest, what)?,
                    None => digest_of(blob.file(), &blob.path())?,
                };
                (Some(Arrived::Parked(blob.park())), found)
            }
            Staged::Present => (None, cached()?),
        })
    })?;
    let mut parked: Vec<ParkedBlob> = Vec::new();
    let mut uncompressed: HashMap<&Digest, Option<Digest>> = HashMap::new();
    for ((d, _), (arrived, found)) in layers.iter().zip(brought) {
        match arrived {
            Some(Arrived::Written(blob)) => verified.push(blob),
            Some(Arrived::Parked(blob)) => parked.push(blob),
            None => {}
        }
        uncompressed.insert(&d.digest, found);
    }
    for p in distinct(planned) {
        for (i, d) in p.layers.iter().enumerate() {
            let what = format!("layer {i} of {}", p.reference.familiar());
            check_diff_id(uncompressed[&d.digest].as_ref(), &p.diff_ids[i], &what)?;
        }
    }

    // Flush every new blob before the lock: the commit only renames
    // (parked downloads were flushed as they finished).
    sync_all(&verified)?;
    let committed: u64 = verified.iter().map(VerifiedBlob::size).sum::<u64>()
        + parked.iter().map(ParkedBlob::size).sum::<u64>();
    let guard = layout.lock::<Exclusive>()?;
    // Read the index before any rename: an index that cannot be read fails
    // the load with nothing moved into blobs/.
    let mut txn = IndexTxn::begin(layout, &guard)?;
    // Check before any rename: a failed commit leaves nothing in blobs/.
    // Parked downloads are taken (locked, checked) first; another pull may
    // have committed some already.
    let mut to_rename: Vec<&ParkedBlob> = Vec::new();
    for blob in &parked {
        if blob.hold(layout, &guard, layout.lock_timeout())? {
            to_rename.push(blob);
        }
    }
    let arriving: HashSet<&Digest> = verified
        .iter()
        .map(VerifiedBlob::digest)
        .chain(to_rename.iter().map(|b| b.digest()))
        .collect();
    if let Some(lost) = needed
        .iter()
        .find(|d| !arriving.contains(d) && !layout.has_blob(d))
    {
        return Err(MicrosandboxError::new(
            ErrorKind::Busy,
            format!("blob {lost} was pruned while the load ran; load again"),
        ));
    }
    let any = !verified.is_empty() || !parked.is_empty();
    for blob in verified {
        blob.commit(layout, &guard)?;
    }
    for blob in to_rename {
        blob.commit(layout, &guard)?;
    }
    if any {
        layout.blobs_dir().sync()?;
    }
    let now = time::format(time::now());
    let index = &mut txn.index;
    // The new entries replace every spelling of their names; the newest of
    // them lends its times when it named the same manifest.
    let names: HashSet<String> = planned.iter().map(|p| p.reference.canonical()).collect();
    let mut replaced = index::take_named(index, &names);
    let mut descriptors = Vec::with_capacity(planned.len());
    for p in planned {
        let previous = replaced.remove(&p.reference.canonical());
        let mut d = Descriptor {
            platform: Some(p.platform.clone()),
            ..p.manifest.clone()
        };
        name_descriptor(&mut d, &p.reference);
        let same = previous.as_ref().filter(|prev| prev.digest == d.digest);
        let keep = |k: &str| same.and_then(|prev| prev.annotations.get(k).cloned());
        d.annotations.insert(
            ANN_CREATED.into(),
            keep(ANN_CREATED).unwrap_or_else(|| now.clone()),
        );
        if let Some(used) = keep(ANN_LAST_USED) {
            d.annotations.insert(ANN_LAST_USED.into(), used);
        }
        if let Some(created) = p.created.as_deref().and_then(time::parse) {
            d.annotations
                .insert(ANN_IMAGE_CREATED.into(), time::format(created));
        }
        d.annotations.insert(ANN_SIZE.into(), p.size().to_string());
        d.annotations
            .insert(ANN_LAYERS.into(), p.layers.len().to_string());
        index.manifests.push(d.clone());
        descriptors.push((p.reference.clone(), d));
    }
    txn.commit()?;
    if let Some(p) = &source.progress {
        p.report(&Progress {
            phase: Phase::Commit,
            digest: None,
            bytes: committed,
            total_bytes: Some(committed),
        });
    }
    descriptors
        .iter()
        .map(|(r, d)| handle_of(layout, r, d))
        .collect()
}
