//! Reading the content graph of the cache: manifests, indexes, configs.

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::{is_index_media_type, Descriptor, ManifestDoc, Shape};
use crate::oci::platform;
use crate::store::layout::Layout;

/// Reads, checks (digest, and `size` when known) and parses a manifest or
/// index blob of the cache.
///
/// # Errors
///
/// [`crate::ErrorKind::CorruptCache`] when it is missing, not what its
/// name says, or does not parse.
pub fn read_doc(
    layout: &Layout,
    digest: &Digest,
    size: Option<u64>,
) -> MicrosandboxResult<ManifestDoc> {
    let bytes = layout.read_json_blob(digest, size)?;
    ManifestDoc::parse(&bytes)
        .map_err(|e| MicrosandboxError::corrupt(format!("manifest {digest} is invalid: {e}")))
}

/// Reads, checks and parses the config blob a descriptor names.
pub fn read_config(
    layout: &Layout,
    config: &Descriptor,
) -> MicrosandboxResult<oci_spec::image::ImageConfiguration> {
    let bytes = layout.read_json_blob(&config.digest, Some(config.size))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        MicrosandboxError::corrupt(format!("config {} is invalid: {e}", config.digest))
    })
}

/// The image manifest an index entry serves on the host: the entry itself,
/// or the host's manifest when another tool stored an index.
pub fn resolve_image(
    layout: &Layout,
    entry: &Descriptor,
) -> MicrosandboxResult<(Descriptor, ManifestDoc)> {
    let doc = read_doc(layout, &entry.digest, Some(entry.size))?;
    let chosen = match doc.shape() {
        Ok(Shape::Index(manifests)) => {
            platform::choose(manifests, &platform::host(), entry.digest.as_str())?.clone()
        }
        _ => return Ok((entry.clone(), doc)),
    };
    let child = read_doc(layout, &chosen.digest, Some(chosen.size))?;
    if is_index_media_type(&chosen.media_type) || matches!(child.shape(), Ok(Shape::Index(_))) {
        return Err(MicrosandboxError::corrupt(format!(
            "index {} nests another index",
            entry.digest
        )));
    }
    Ok((chosen, child))
}

/// An image's parts as its blobs say: the resolved manifest, its config
/// (descriptor and document) and its layers, with one diff_id per layer.
pub struct ImageParts {
    /// The image manifest (the host's of an index).
    pub manifest: Descriptor,
    /// The config's descriptor.
    pub config: Descriptor,
    /// The config.
    pub cfg: oci_spec::image::ImageConfiguration,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// Reads the parts of the image an index entry names, checking that the
/// manifest is an image manifest and that its config lists one diff_id
/// per layer.
///
/// # Errors
///
/// [`crate::ErrorKind::CorruptCache`] for a blob that is missing, not what
/// its name says, or does not fit; `PlatformNotFound` for an index
/// without the host's platform.
pub fn image_parts(layout: &Layout, entry: &Descriptor) -> MicrosandboxResult<ImageParts> {
    let (manifest, doc) = resolve_image(layout, entry)?;
    let Ok(Shape::Image { config, layers }) = doc.shape() else {
        return Err(MicrosandboxError::corrupt(format!(
            "manifest {} is not an image manifest",
            manifest.digest
        )));
    };
    let cfg = read_config(layout, config)?;
    let diff_ids = cfg.rootfs().diff_ids().len();
    if diff_ids != layers.len() {
        return Err(MicrosandboxError::corrupt(format!(
            "config {} lists {diff_ids} diff_ids for {} layers",
            config.digest,
            layers.len()
        )));
    }
    Ok(ImageParts {
        config: config.clone(),
        layers: layers.to_vec(),
        cfg,
        manifest,
    })
}

/// What `list` shows of an image, computed from its blobs: used for entries
/// that another tool wrote without this cache's annotations.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The resolved manifest.
    pub manifest: Descriptor,
    /// Manifest, config and layer bytes.
    pub size: u64,
    /// How many layers.
    pub layers: usize,
    /// From the config.
    pub architecture: Option<String>,
    /// From the config.
    pub os: Option<String>,
    /// The config's `created`.
    pub created: Option<std::time::SystemTime>,
}

/// Computes a [`Summary`] from the blobs.
pub fn summarize(layout: &Layout, entry: &Descriptor) -> MicrosandboxResult<Summary> {
    let ImageParts {
        manifest,
        config,
        cfg,
        layers,
    } = image_parts(layout, entry)?;
    let size = [manifest.size, config.size]
        .into_iter()
        .chain(layers.iter().map(|l| l.size))
        .try_fold(0u64, u64::checked_add)
        .ok_or_else(|| {
            MicrosandboxError::corrupt(format!(
                "manifest {} declares sizes that add up past 2^64 bytes",
                manifest.digest
            ))
        })?;
    Ok(Summary {
        size,
        layers: layers.len(),
        architecture: Some(cfg.architecture().to_string()),
        os: Some(cfg.os().to_string()),
        created: cfg.created().as_deref().and_then(crate::util::time::parse),
        manifest,
    })
}
