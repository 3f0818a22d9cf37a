//! Planning a load or a pull: what the source names (an OCI index, a
//! docker-archive's `manifest.json`, a MiniBox `meta.json`), each image
//! read and checked (manifest, config, diff_ids, platform) before a byte of
//! a layer is brought in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::docker;
use super::options::LoadOptions;
use super::planned::{
    distinct, parse_diff_ids, Planned, PlannedImage, MAX_LAYER_NAMES, MAX_REFERENCES,
};
use super::source::{Origin, Source};
use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::{
    is_index_media_type, Descriptor, IndexFile, ManifestDoc, Platform, Shape, ANN_CONTAINERD_NAME,
    MEDIA_OCI_MANIFEST,
};
use crate::oci::platform;
use crate::oci::reference::Reference;
use crate::store::layout::JSON_BLOB_LIMIT;

const SOURCE_INDEX_LIMIT: u64 = 64 << 20;

/// Plans from the OCI index when the source has named images there, else
/// from a docker-archive's `manifest.json` (Docker 25+ archives hold both).
pub(super) fn plan(source: &Source, options: &LoadOptions) -> MicrosandboxResult<Vec<Planned>> {
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

/// A MiniBox archive: `meta.json` (`{"image", "manifest_digest"}`, the
/// digest as `sha256:<hex>`, or as the bare hex MiniBox's own save writes)
/// and the blobs under `blobs/sha256/`.
pub(super) fn plan_minibox(
    source: &Source,
    options: &LoadOptions,
) -> MicrosandboxResult<Vec<Planned>> {
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
    let spelled = &meta.manifest_digest;
    let digest: Digest = match spelled.contains(':') {
        true => spelled.parse(),
        false => Digest::from_hex(spelled),
    }
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

pub(super) fn plan_oci(source: &Source, options: &LoadOptions) -> MicrosandboxResult<Vec<Planned>> {
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
        let name = d.annotations.get(ANN_CONTAINERD_NAME).or(d.ref_name());
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

pub(super) fn plan_image(
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
        architecture: cfg.architecture().to_string().into(),
        os: cfg.os().to_string().into(),
        variant: cfg.variant().clone().map(Into::into),
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

/// One digest, one size: a source that declares a blob with two sizes is
/// refused, so no descriptor stored in the cache lies about its blob.
pub(super) fn check_sizes(source: &Source, planned: &[Planned]) -> MicrosandboxResult<()> {
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
