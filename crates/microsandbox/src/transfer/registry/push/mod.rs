//! Pushing an image of the cache to a registry (OCI Distribution API v2):
//! every blob the registry lacks (`HEAD` first; a cross-repository mount
//! when the image came from another repository of the same registry),
//! six at a time, then the manifest, and for an index its manifests and
//! then the index.
//!
//! What the push needs is read and pinned under the shared cache lock (a
//! transfer lease, as a save takes), then uploaded without it: a prune
//! running meanwhile deletes none of it. The push records nothing in the
//! cache; a failed push leaves the cache as it was (and at worst blobs in
//! the registry that no manifest names yet, which its garbage collection
//! takes). Credentials are the pull's: the docker config's `auths`,
//! `credsStore` and `credHelpers`, basic or bearer.

mod session;
mod upload;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::{is_index_media_type, Descriptor, ManifestDoc, Shape};
use crate::oci::reference::Reference;
use crate::store::content;
use crate::store::layout::Layout;
use crate::store::lease::TransferPin;
use crate::transfer::registry::auth::registry_error;
use crate::transfer::registry::mirrors::{self, MirrorMap};

use session::{header, Payload, Session};
use upload::{push_blob, Blob, Outcome};

/// How many blobs upload at once (skopeo's default too).
pub const PARALLEL_UPLOADS: usize = 6;
/// The most bytes one upload request carries: a bigger blob goes in
/// chunks of this size, each of which can be resumed.
pub const DEFAULT_CHUNK_BYTES: u64 = 64 << 20;

/// How to push.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Where to: a reference (`registry.example.com/team/app:1`); the
    /// image's own reference if unset. One with a digest must name the
    /// digest of what is pushed.
    pub to: Option<String>,
    /// Speak plain HTTP (and accept any certificate) to the registry;
    /// loopback registries are spoken to in plain HTTP without it.
    pub insecure: bool,
    /// Where progress events go.
    pub progress: Option<PushProgressFn>,
    /// The directory of the docker config to take credentials from;
    /// `$DOCKER_CONFIG`, else `~/.docker`, if unset.
    pub docker_config: Option<std::path::PathBuf>,
    /// Mirrors per registry, in the shape pull takes. Mirrors are
    /// pull-through caches, read-only: a push always goes to the origin
    /// (as containerd pushes only to hosts with the push capability), and
    /// the entries are only checked, so one options object serves both.
    pub mirrors: Option<MirrorMap>,
    /// The most bytes one request carries ([`DEFAULT_CHUNK_BYTES`] if
    /// unset; 0 sends each blob whole in one request).
    pub chunk_bytes: Option<u64>,
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushReport {
    /// The reference pushed to, in its familiar form.
    pub reference: String,
    /// The digest of the manifest (or index) pushed: what the reference
    /// names in the registry now.
    pub manifest_digest: String,
    /// Blobs uploaded.
    pub blobs_uploaded: u32,
    /// Blobs mounted from another repository of the registry.
    pub blobs_mounted: u32,
    /// Blobs the registry had already.
    pub blobs_skipped: u32,
    /// Bytes sent in blob uploads (a resent chunk counts again).
    pub bytes_uploaded: u64,
}

/// What a push is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushProgress {
    /// The image and its destination are known.
    Resolved {
        /// Where to, familiar form.
        reference: String,
        /// The manifest (or index) digest.
        manifest_digest: String,
        /// Layers of the image (of every manifest, for an index).
        layer_count: usize,
        /// Bytes of every blob.
        total_bytes: u64,
    },
    /// Bytes of one blob went out.
    BlobProgress {
        /// Its position in the manifest for a layer; none for a config.
        layer_index: Option<usize>,
        /// Its digest.
        digest: String,
        /// Bytes sent so far (a resent chunk counts again).
        uploaded_bytes: u64,
        /// Its size.
        total_bytes: u64,
    },
    /// One blob is in the registry.
    BlobComplete {
        /// Its position in the manifest for a layer.
        layer_index: Option<usize>,
        /// Its digest.
        digest: String,
        /// `uploaded`, `mounted` or `exists`.
        how: &'static str,
        /// Its size.
        total_bytes: u64,
    },
    /// A manifest (or index) is in the registry.
    ManifestPushed {
        /// Its digest.
        digest: String,
    },
    /// The reference names the image in the registry.
    Complete {
        /// Where to, familiar form.
        reference: String,
        /// The manifest (or index) digest.
        manifest_digest: String,
    },
}

/// A push-progress callback.
#[derive(Clone)]
pub struct PushProgressFn(Arc<dyn Fn(&PushProgress) + Send + Sync>);

impl PushProgressFn {
    /// Wraps a callback.
    pub fn new(f: impl Fn(&PushProgress) + Send + Sync + 'static) -> PushProgressFn {
        PushProgressFn(Arc::new(f))
    }

    /// Reports one event.
    pub fn report(&self, event: &PushProgress) {
        (self.0)(event)
    }
}

impl fmt::Debug for PushProgressFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PushProgressFn")
    }
}

/// A manifest document to put, with its bytes as the cache holds them.
struct Doc {
    descriptor: Descriptor,
    bytes: Vec<u8>,
}

/// What a push sends: the blobs, the manifests below the top (an index's),
/// and the top.
struct Plan {
    blobs: Vec<Blob>,
    children: Vec<Doc>,
    top: Doc,
    layer_count: usize,
}

/// The parts of one image manifest the cache holds whole: its bytes and
/// its blobs (config, then layers with their positions). None when a blob
/// is missing.
fn image_of(layout: &Layout, d: &Descriptor) -> MicrosandboxResult<Option<(Doc, Vec<Blob>)>> {
    if !layout.has_blob(&d.digest) {
        return Ok(None);
    }
    let bytes = layout.read_json_blob(&d.digest, Some(d.size))?;
    let doc = ManifestDoc::parse(&bytes).map_err(|e| {
        MicrosandboxError::corrupt(format!("manifest {} is invalid: {e}", d.digest))
    })?;
    let Ok(Shape::Image { config, layers }) = doc.shape() else {
        return Ok(None);
    };
    let mut blobs = vec![Blob {
        digest: config.digest.clone(),
        size: config.size,
        layer_index: None,
    }];
    blobs.extend(layers.iter().enumerate().map(|(i, l)| Blob {
        digest: l.digest.clone(),
        size: l.size,
        layer_index: Some(i),
    }));
    if blobs.iter().any(|b| !layout.has_blob(&b.digest)) {
        return Ok(None);
    }
    let media_type = doc
        .media_type
        .clone()
        .unwrap_or_else(|| d.media_type.clone());
    let descriptor = Descriptor::new(&media_type, d.digest.clone(), d.size);
    Ok(Some((Doc { descriptor, bytes }, blobs)))
}

/// What pushing `entry` (an index.json descriptor) sends: an index whose
/// every manifest the cache holds whole goes as it is; otherwise the
/// manifest the cache serves for the host.
fn plan(layout: &Layout, entry: &Descriptor) -> MicrosandboxResult<Plan> {
    let bytes = layout.read_json_blob(&entry.digest, Some(entry.size))?;
    let doc = ManifestDoc::parse(&bytes).map_err(|e| {
        MicrosandboxError::corrupt(format!("manifest {} is invalid: {e}", entry.digest))
    })?;
    if let Ok(Shape::Index(manifests)) = doc.shape() {
        let mut children = Vec::new();
        let mut blobs: Vec<Blob> = Vec::new();
        let mut whole = true;
        for m in manifests {
            match image_of(layout, m)? {
                Some((child, parts)) if !is_index_media_type(&m.media_type) => {
                    children.push(child);
                    blobs.extend(parts);
                }
                _ => {
                    whole = false;
                    break;
                }
            }
        }
        if whole {
            let media_type = doc
                .media_type
                .clone()
                .unwrap_or_else(|| entry.media_type.clone());
            let layer_count = blobs.iter().filter(|b| b.layer_index.is_some()).count();
            return Ok(Plan {
                blobs: dedup(blobs),
                children,
                top: Doc {
                    descriptor: Descriptor::new(&media_type, entry.digest.clone(), entry.size),
                    bytes,
                },
                layer_count,
            });
        }
    }
    let (manifest, _) = content::resolve_image(layout, entry)?;
    let (top, blobs) = image_of(layout, &manifest)?.ok_or_else(|| {
        MicrosandboxError::corrupt(format!(
            "image {} lacks some of its blobs (verify --repair)",
            manifest.digest
        ))
    })?;
    Ok(Plan {
        layer_count: blobs.len() - 1,
        blobs: dedup(blobs),
        children: Vec::new(),
        top,
    })
}

/// Each blob once (two images of an index may share layers; a layer may
/// repeat in a manifest), the first position kept.
fn dedup(blobs: Vec<Blob>) -> Vec<Blob> {
    let mut seen = BTreeSet::new();
    blobs
        .into_iter()
        .filter(|b| seen.insert(b.digest.clone()))
        .collect()
}

/// The destination: `to`, else the image's own reference.
fn destination(to: Option<&str>, own: &Reference) -> MicrosandboxResult<Reference> {
    match to {
        None => Ok(own.clone()),
        Some(text) => Reference::parse(text),
    }
}

/// Pushes the image `entry` names (its reference `own`) as `options` say.
/// `guard` is the shared cache lock the caller read `entry` under: what the
/// push needs is pinned before it is released.
///
/// # Errors
///
/// `InvalidReference` for a bad destination, `InvalidArgument` for a
/// destination digest that is not the image's or a bad mirror,
/// `Unauthorized` when the registry or its token service refuses,
/// `Unsupported` when the registry takes no pushes, `DigestMismatch` when
/// it finds a blob is not what its digest says, `RegistryError` for any
/// other failing answer or when it cannot be reached, `CorruptCache` for a
/// blob of the cache that is not what its name says.
pub fn push(
    layout: &Layout,
    own: &Reference,
    entry: &Descriptor,
    guard: crate::store::lock::LockGuard<crate::store::lock::Shared>,
    options: &PushOptions,
) -> MicrosandboxResult<PushReport> {
    let dest = destination(options.to.as_deref(), own)?;
    // Checked as a pull checks them, so one options object serves both.
    mirrors::for_registry(dest.domain(), options.mirrors.as_ref(), layout)?;
    let plan = plan(layout, entry)?;
    if let Some(d) = dest.digest().filter(|d| **d != plan.top.descriptor.digest) {
        return Err(MicrosandboxError::invalid_argument(format!(
            "{} names {d}, but {} is {}",
            dest.familiar(),
            own.familiar(),
            plan.top.descriptor.digest
        )));
    }
    let pinned: Vec<Digest> = plan
        .blobs
        .iter()
        .map(|b| b.digest.clone())
        .chain(plan.children.iter().map(|c| c.descriptor.digest.clone()))
        .chain([plan.top.descriptor.digest.clone(), entry.digest.clone()])
        .collect();
    let pin = Mutex::new(TransferPin::take_locked(layout, pinned)?);
    drop(guard);

    let mount_from =
        (own.domain() == dest.domain() && own.path() != dest.path()).then(|| own.path().to_owned());
    let session = Session::new(
        &dest,
        options.insecure,
        options.docker_config.as_deref(),
        mount_from.as_deref(),
    );
    let shown = dest.familiar();
    let top_digest = plan.top.descriptor.digest.to_string();
    let events = options.progress.as_ref();
    let report = |e: PushProgress| {
        if let Some(p) = events {
            p.report(&e);
        }
    };
    report(PushProgress::Resolved {
        reference: shown.clone(),
        manifest_digest: top_digest.clone(),
        layer_count: plan.layer_count,
        total_bytes: plan.blobs.iter().map(|b| b.size).sum(),
    });
    let chunk = options.chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES);
    let renew = || -> MicrosandboxResult<()> {
        pin.lock()
            .map_err(|_| registry_error("the push's pin lock is poisoned"))?
            .renew_if_due()
    };
    let outcomes = crate::util::par::queue(&plan.blobs, PARALLEL_UPLOADS, |blob| {
        let tick = |bytes: u64| -> MicrosandboxResult<()> {
            renew()?;
            report(PushProgress::BlobProgress {
                layer_index: blob.layer_index,
                digest: blob.digest.to_string(),
                uploaded_bytes: bytes,
                total_bytes: blob.size,
            });
            Ok(())
        };
        let outcome = push_blob(&session, layout, blob, mount_from.as_deref(), chunk, &tick)?;
        report(PushProgress::BlobComplete {
            layer_index: blob.layer_index,
            digest: blob.digest.to_string(),
            how: match outcome {
                Outcome::Present => "exists",
                Outcome::Mounted => "mounted",
                Outcome::Uploaded(_) => "uploaded",
            },
            total_bytes: blob.size,
        });
        Ok(outcome)
    })?;
    renew()?;
    for child in &plan.children {
        put_manifest(&session, child, &child.descriptor.digest.to_string())?;
        report(PushProgress::ManifestPushed {
            digest: child.descriptor.digest.to_string(),
        });
    }
    let name = match (dest.digest(), dest.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    put_manifest(&session, &plan.top, &name)?;
    report(PushProgress::ManifestPushed {
        digest: top_digest.clone(),
    });
    report(PushProgress::Complete {
        reference: shown.clone(),
        manifest_digest: top_digest.clone(),
    });
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as u32;
    Ok(PushReport {
        reference: shown,
        manifest_digest: top_digest,
        blobs_uploaded: count(|o| matches!(o, Outcome::Uploaded(_))),
        blobs_mounted: count(|o| matches!(o, Outcome::Mounted)),
        blobs_skipped: count(|o| matches!(o, Outcome::Present)),
        bytes_uploaded: outcomes
            .iter()
            .map(|o| match o {
                Outcome::Uploaded(n) => *n,
                _ => 0,
            })
            .sum(),
    })
}

/// `PUT /v2/<name>/manifests/<reference>`, the digest the registry
/// answers with checked against ours.
fn put_manifest(session: &Session, doc: &Doc, reference: &str) -> MicrosandboxResult<()> {
    let what = format!("manifest {}", doc.descriptor.digest);
    let url = session.url(&format!("manifests/{reference}"));
    let headers = [("Content-Type", doc.descriptor.media_type.clone())];
    let mut tries = 0;
    let response = loop {
        match session.send("PUT", &url, &headers, Payload::Bytes(&doc.bytes)) {
            Err(e) if e.kind() == ErrorKind::RegistryError && tries < 5 => {
                std::thread::sleep(std::time::Duration::from_millis(300 << tries));
                tries += 1;
            }
            other => break other?,
        }
    };
    if !matches!(response.status().as_u16(), 200 | 201 | 202 | 204) {
        return Err(session.failure(response, &what));
    }
    if let Some(said) = header(&response, "docker-content-digest") {
        if said != doc.descriptor.digest.as_str() {
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!(
                    "{}: {what}: the registry stored it as {said}",
                    session.shown
                ),
            ));
        }
    }
    Ok(())
}
