//! docker-archive: `manifest.json` lists each image's config, its layers
//! and its `RepoTags`. Each image becomes an OCI manifest (written by this
//! cache, deterministic) whose config and layers keep their digests. An
//! uncompressed layer must hash to its config's `diff_id`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::options::LoadOptions;
use super::planned::{parse_diff_ids, Planned, PlannedImage, MAX_LAYER_NAMES, MAX_REFERENCES};
use super::source::Source;
use super::tarball::TarStage;
use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::{Descriptor, ManifestDoc, Platform, MAX_LAYERS, MEDIA_OCI_MANIFEST};
use crate::oci::reference::Reference;
use crate::store::layout::JSON_BLOB_LIMIT;
use crate::transfer::layer::Compression;

const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Item {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
}

/// Plans every tagged image of a docker-archive.
pub(super) fn plan(
    source: &Source,
    stage: &TarStage,
    options: &LoadOptions,
) -> MicrosandboxResult<Vec<Planned>> {
    let bytes = source.read_small("manifest.json", JSON_BLOB_LIMIT)?;
    let items: Vec<Item> = serde_json::from_slice(&bytes)
        .map_err(|e| source.invalid(format!("manifest.json is invalid: {e}")))?;
    let mut planned = Vec::new();
    let mut names = HashSet::new();
    // Items that describe the same image (one config, the same layers)
    // are planned once.
    let mut memo: HashMap<(&str, &[String]), Planned> = HashMap::new();
    let mut layers_named = 0usize;
    for item in &items {
        let mut tags: Vec<Reference> = Vec::new();
        for tag in item.repo_tags.as_deref().unwrap_or_default() {
            tags.push(Reference::parse(tag).map_err(|e| {
                source.invalid(format!("manifest.json names an invalid reference: {e}"))
            })?);
        }
        // An untagged single image takes the name the caller gives.
        if tags.is_empty() && items.len() == 1 {
            tags.extend(options.reference.iter().cloned());
        }
        if tags.is_empty() {
            continue;
        }
        let image = match memo.get(&(item.config.as_str(), &item.layers[..])) {
            Some(p) => p.clone(),
            None => {
                layers_named += item.layers.len();
                if layers_named > MAX_LAYER_NAMES {
                    return Err(source.invalid("manifest.json names too many layers in all"));
                }
                let p = plan_item(source, stage, item)?;
                memo.insert((item.config.as_str(), &item.layers[..]), p.clone());
                p
            }
        };
        for reference in tags {
            if !names.insert(reference.canonical()) {
                return Err(source.invalid(format!(
                    "manifest.json names {} twice",
                    reference.familiar()
                )));
            }
            if names.len() > MAX_REFERENCES {
                return Err(source.invalid(format!(
                    "manifest.json names more than {MAX_REFERENCES} images"
                )));
            }
            planned.push(Planned {
                reference,
                ..image.clone()
            });
        }
    }
    Ok(planned)
}

fn plan_item(source: &Source, stage: &TarStage, item: &Item) -> MicrosandboxResult<Planned> {
    if item.layers.len() > MAX_LAYERS {
        return Err(source.invalid(format!(
            "manifest.json lists {} layers for {:?}, more than the {MAX_LAYERS} this cache takes",
            item.layers.len(),
            item.config
        )));
    }
    let lacking = |path: &str| {
        source.invalid(format!(
            "manifest.json names {path:?}, which the archive lacks"
        ))
    };
    let (digest, size) = stage
        .entry(&item.config)
        .ok_or_else(|| lacking(&item.config))?;
    let config = Descriptor::new(MEDIA_OCI_CONFIG, digest, size);
    let what = format!("config {:?}", item.config);
    let config_bytes = source.read_json(&config, &what)?;
    let cfg: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| source.invalid(format!("{what}: {e}")))?;
    let diff_ids = cfg.rootfs().diff_ids();
    if diff_ids.len() != item.layers.len() {
        return Err(source.invalid(format!(
            "{what}: {} diff_ids for {} layers",
            diff_ids.len(),
            item.layers.len()
        )));
    }
    let mut layers = Vec::with_capacity(item.layers.len());
    for (path, diff_id) in item.layers.iter().zip(diff_ids) {
        let (digest, size) = stage.entry(path).ok_or_else(|| lacking(path))?;
        let compression = stage.compression(&digest);
        if compression.is_none() && digest.as_str() != diff_id {
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!(
                    "{}: layer {path:?} hashes to {digest}, its config's diff_id is {diff_id}",
                    source.label
                ),
            ));
        }
        let media = compression.map_or(MEDIA_OCI_LAYER_TAR, Compression::oci_layer_media_type);
        layers.push(Descriptor::new(media, digest, size));
    }
    let manifest_bytes = serde_json::to_vec(&OciManifest {
        schema_version: 2,
        media_type: MEDIA_OCI_MANIFEST,
        config: &config,
        layers: &layers,
    })
    .expect("a manifest always serializes");
    // What the cache stores must read back as a manifest later.
    if manifest_bytes.len() as u64 > JSON_BLOB_LIMIT {
        return Err(source.invalid(format!(
            "the manifest made for {:?} would exceed {JSON_BLOB_LIMIT} bytes",
            item.config
        )));
    }
    ManifestDoc::parse(&manifest_bytes)
        .map_err(|e| source.invalid(format!("the manifest made for {:?}: {e}", item.config)))?;
    let manifest = Descriptor::new(
        MEDIA_OCI_MANIFEST,
        Digest::of(&manifest_bytes),
        manifest_bytes.len() as u64,
    );
    let top_digest = manifest.digest.clone();
    Ok(Planned {
        reference: Reference::parse("placeholder").expect("a valid reference"),
        image: std::sync::Arc::new(PlannedImage {
            manifest,
            manifest_bytes: Arc::from(manifest_bytes),
            config,
            config_bytes,
            layers,
            diff_ids: parse_diff_ids(source, diff_ids, &what)?,
            top: top_digest,
            platform: Platform {
                architecture: cfg.architecture().to_string().into(),
                os: cfg.os().to_string().into(),
                variant: cfg.variant().clone().map(Into::into),
                ..Platform::default()
            },
            created: cfg.created().clone(),
        }),
    })
}
