//! MiniBox's image endpoints, field for field: the paths, the `?image=`
//! and `?path=` query parameters, the plain-text answers and errors, and
//! the JSON of `GET /images` and `POST /system/prune`.
//!
//! | call | answer |
//! | --- | --- |
//! | `GET /ping` | `Daemon is running` |
//! | `GET /images` | `[{ "name", "size_bytes" }]` |
//! | `POST /images/pull?image=REF` | chunked `[pull] ...` lines, `[pull] Done`; `[error] pull failed: ...` |
//! | `POST /images/save?image=REF&path=ABS[&overwrite=true]` | `Saved image REF to ABS`: a MiniBox archive |
//! | `POST /images/load?path=ABS` | `Loaded image REF from ABS` (one line per image) |
//! | `POST /images/remove?image=REF` | `Image REF removed`; 404 when absent |
//! | `POST /system/prune` | `{ "blobs_removed", "bytes_freed", "fuse_mounts_killed", ... }` |
//!
//! A pull asks the registry every time (MiniBox always pulls), and takes
//! only the blobs the cache lacks. MiniBox's prune removes orphaned blobs
//! and keeps every image: here it is the dangling prune. Paths must be
//! absolute, as MiniBox's page says (a relative one would be relative to
//! wherever the server was started), and inside a directory the server
//! allows (`paths`); a save replaces an existing file only with
//! `overwrite=true`.

use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use microsandbox::{
    LoadOptions, MicrosandboxResult, PruneOptions, PullOptions, PullPolicy, PullProgress,
    PullProgressFn, SaveFormat, SaveOptions,
};
use serde_json::json;

use crate::limits::{query, STALL_TIMEOUT};
use crate::reply::{self, error_text, invalid, no_route, not_allowed, Reply};
use crate::state::{blocking, App};

/// Routes MiniBox's paths.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let allowed = match path.as_str() {
        "/ping" | "/images" => "GET",
        "/images/pull" | "/images/save" | "/images/load" | "/images/remove" | "/system/prune" => {
            "POST"
        }
        _ => return no_route(&method, &path),
    };
    if method.as_str() != allowed {
        return not_allowed(allowed, false);
    }
    let q = match query(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return error_text(&e),
    };
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let b = app.backend.clone();
    let result = match path.as_str() {
        "/ping" => Ok(reply::text(StatusCode::OK, "Daemon is running")),
        "/images" => list(b).await,
        "/images/pull" => match get("image") {
            None => Err(invalid("Image name is required")),
            Some(image) => pull(&app, image).await,
        },
        "/images/save" => match (get("image"), get("path"), flag(&q, "overwrite")) {
            (_, _, Err(e)) => Err(e),
            (Some(image), Some(path), Ok(overwrite)) => save(&app, image, path, overwrite).await,
            _ => Err(invalid("missing image or path")),
        },
        "/images/load" => match get("path") {
            Some(path) => load(&app, path).await,
            None => Err(invalid("missing path")),
        },
        "/images/remove" => match get("image") {
            Some(image) => remove(b, image).await,
            None => Err(invalid("missing image")),
        },
        _ => prune(b).await,
    };
    result.unwrap_or_else(|e| error_text(&e))
}

async fn list(b: microsandbox::LocalBackend) -> MicrosandboxResult<Reply> {
    let images = blocking(move || b.list_images()).await?;
    let out: Vec<_> = images
        .iter()
        .map(|h| json!({ "name": h.reference(), "size_bytes": h.size_bytes().unwrap_or(0) }))
        .collect();
    Ok(reply::json(StatusCode::OK, &serde_json::Value::Array(out)))
}

/// A yes-or-no query parameter: absent, `false` or `0` is no; `true` or
/// `1` is yes.
fn flag(q: &std::collections::HashMap<String, String>, key: &str) -> MicrosandboxResult<bool> {
    match q.get(key).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(invalid(format!(
            "{key} must be true or false, got {other:?}"
        ))),
    }
}

async fn save(
    app: &App,
    image: String,
    path: String,
    overwrite: bool,
) -> MicrosandboxResult<Reply> {
    let named = app.paths.for_save(&path)?;
    let target = named.path();
    let name = image.clone();
    let b = app.backend.clone();
    blocking(move || {
        let options = SaveOptions {
            format: SaveFormat::Minibox,
            overwrite,
        };
        b.save_images(&[name], &target, &options)
    })
    .await
    .map_err(|e| named.tell(e))?;
    Ok(reply::text(
        StatusCode::OK,
        &format!("Saved image {image} to {path}"),
    ))
}

async fn load(app: &App, path: String) -> MicrosandboxResult<Reply> {
    let named = app.paths.for_load(&path)?;
    let source = named.path();
    let b = app.backend.clone();
    let handles = blocking(move || b.load_images(&source, &LoadOptions::default()))
        .await
        .map_err(|e| named.tell(e))?;
    let lines: Vec<String> = handles
        .iter()
        .map(|h| format!("Loaded image {} from {path}\n", h.reference()))
        .collect();
    Ok(reply::text(StatusCode::OK, &lines.concat()))
}

async fn remove(b: microsandbox::LocalBackend, image: String) -> MicrosandboxResult<Reply> {
    let name = image.clone();
    blocking(move || b.remove_image(&name, false)).await?;
    Ok(reply::text(
        StatusCode::OK,
        &format!("Image {image} removed"),
    ))
}

async fn prune(b: microsandbox::LocalBackend) -> MicrosandboxResult<Reply> {
    let options = PruneOptions {
        dangling: true,
        ..Default::default()
    };
    let r = blocking(move || b.prune_images_with(&options)).await?;
    let body = json!({
        "blobs_removed": r.manifests_removed + r.configs_removed + r.layers_removed,
        "bytes_freed": r.bytes_reclaimed.unwrap_or(0),
        "fuse_mounts_killed": 0,
        "tmp_files_removed": r.tmp_files_removed,
        "expired_leases_removed": r.expired_leases_removed,
    });
    Ok(reply::json(StatusCode::OK, &body))
}

/// What the lines of a pull say, from its progress events.
#[derive(Default)]
struct Lines {
    layers: usize,
    started: std::collections::HashSet<usize>,
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl Lines {
    fn line(&mut self, event: &PullProgress) -> Option<String> {
        Some(match event {
            PullProgress::Resolving { reference } => {
                format!("[pull] fetching {reference} manifest...")
            }
            PullProgress::Resolved {
                manifest_digest,
                layer_count,
                total_download_bytes,
                ..
            } => {
                self.layers = *layer_count;
                format!(
                    "[pull] manifest: {} ({layer_count} layers, {} bytes to download)",
                    short(manifest_digest),
                    total_download_bytes.unwrap_or(0)
                )
            }
            PullProgress::LayerDownloadProgress {
                layer_index,
                digest,
                ..
            } => {
                if !self.started.insert(*layer_index) {
                    return None;
                }
                format!(
                    "[pull] pulling layer {}/{} ({})...",
                    layer_index + 1,
                    self.layers,
                    short(digest)
                )
            }
            PullProgress::LayerDownloadComplete {
                layer_index,
                digest,
                downloaded_bytes,
            } => format!(
                "[pull] layer {}/{} ({}) done: {downloaded_bytes} bytes",
                layer_index + 1,
                self.layers,
                short(digest)
            ),
            PullProgress::LayerDownloadVerifying { .. } => return None,
            // MiniBox's pulls make no VM disk: these never come.
            PullProgress::LayerMaterializeStarted { .. }
            | PullProgress::LayerMaterializeProgress { .. }
            | PullProgress::LayerMaterializeWriting { .. }
            | PullProgress::LayerMaterializeComplete { .. }
            | PullProgress::StitchMergingTrees { .. }
            | PullProgress::StitchWritingFsmeta
            | PullProgress::StitchWritingVmdk
            | PullProgress::StitchComplete { .. } => return None,
            PullProgress::Complete { reference, .. } => {
                format!("[pull] successfully pulled {reference}")
            }
        })
    }
}

/// Streams the pull's lines as they come; the last one says how it ended.
/// The pull goes on to its commit (or its clean failure) even if the
/// client leaves, and holds its place among the pulls allowed at once
/// until then.
async fn pull(app: &App, image: String) -> MicrosandboxResult<Reply> {
    microsandbox::Reference::parse(&image)?;
    let permit = app.pulls.start()?;
    let (tx, body) = reply::channel(256, None);
    let events = tx.clone();
    let lines = Mutex::new(Lines::default());
    let progress = PullProgressFn::new(move |event| {
        let line = lines.lock().ok().and_then(|mut l| l.line(event));
        if let Some(line) = line {
            // A client that reads nothing loses lines, never stalls the pull.
            let _ = events.try_send(Ok(format!("{line}\n").into()));
        }
    });
    let b = app.backend.clone();
    tokio::spawn(async move {
        let options = PullOptions {
            policy: PullPolicy::Always,
            pull_progress: Some(progress),
            ..Default::default()
        };
        let result = blocking(move || b.pull_image(&image, &options)).await;
        drop(permit);
        let last = match result {
            Ok(_) => "[pull] Done\n".to_owned(),
            Err(e) => format!("[error] pull failed: {}\n", e.message()),
        };
        let _ = tokio::time::timeout(STALL_TIMEOUT, tx.send(Ok(last.into()))).await;
    });
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}
