//! The `ImageHandle` class and an image's detail (`inspect`).

use super::*;

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
