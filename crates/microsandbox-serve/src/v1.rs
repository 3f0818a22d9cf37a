//! `/v1/`: JSON for every `Image` call, with the Node API's field names;
//! every error is `{ code, message }` with the status of its code (see
//! [`crate::reply`]). `openapi.yaml` in this crate documents each one.
//!
//! | call | `Image` method |
//! | --- | --- |
//! | `GET /v1/images` | `list` |
//! | `GET /v1/images/get?reference=R` | `get` |
//! | `GET /v1/images/inspect?reference=R` | `inspect` |
//! | `POST /v1/images/remove` `{ reference, force? }` | `remove` |
//! | `POST /v1/images/prune` `{ dryRun?, dangling?, unusedFor?, maxBytes? }` | `prune` |
//! | `GET /v1/images/disk-usage` | `diskUsage` |
//! | `GET /v1/images/orphans` | `orphans` |
//! | `POST /v1/images/purge` `{ force? }` | `purge` |
//! | `POST /v1/images/verify` `{ repair? }` | `verify` |
//! | `POST /v1/images/pull` `{ reference, platform?, policy? }` | `pull` |
//! | `POST /v1/images/push` `{ reference, to?, insecure?, chunkBytes? }` (a token always) | `push` |
//! | `POST /v1/images/load` `{ path, reference?, platform? }` | `load` |
//! | `POST /v1/images/save` `{ references, path, format?, overwrite? }` | `save` |
//! | `GET /v1/leases` | `leases` |
//! | `POST /v1/leases` `{ reference, id?, kind?, expiresInSeconds? }` | `acquire` |
//! | `DELETE /v1/leases/{id}` | `release` |

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use microsandbox::{
    LeaseKind, LeaseOptions, LoadOptions, MicrosandboxResult, Platform, PruneOptions, PullOptions,
    PullPolicy, PurgeOptions, PushOptions, Reference, SaveFormat, SaveOptions, VerifyOptions,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::json;
use crate::limits::{body, parse_json, query};
use crate::reply::{self, error_json, invalid, no_route, not_allowed, MapStatus, Reply};
use crate::state::{blocking, App};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveRequest {
    reference: String,
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PruneRequest {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    dangling: bool,
    #[serde(default, deserialize_with = "present")]
    unused_for: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    max_bytes: Option<Value>,
    #[serde(default)]
    vm_only: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ForceRequest {
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    #[serde(default)]
    repair: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    reference: String,
    #[serde(default, deserialize_with = "present")]
    platform: Option<String>,
    #[serde(default, deserialize_with = "present")]
    policy: Option<String>,
    #[serde(default)]
    materialize: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PushRequest {
    reference: String,
    #[serde(default, deserialize_with = "present")]
    to: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default, deserialize_with = "present")]
    chunk_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    path: String,
    #[serde(default, deserialize_with = "present")]
    reference: Option<String>,
    #[serde(default, deserialize_with = "present")]
    platform: Option<String>,
    #[serde(default)]
    materialize: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaterializeRequest {
    reference: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveRequest {
    references: OneOrMany,
    path: String,
    #[serde(default, deserialize_with = "present")]
    format: Option<String>,
    #[serde(default)]
    overwrite: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AcquireRequest {
    reference: String,
    #[serde(default, deserialize_with = "present")]
    id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "present")]
    expires_in_seconds: Option<f64>,
    #[serde(default)]
    materialize: bool,
}

/// An optional field that, when given, holds a value: `null` is refused
/// as the type's own error (a client that means "absent" leaves it out).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `unusedFor`: seconds, or text such as `7d`.
fn duration(v: &Value, name: &str) -> MicrosandboxResult<Duration> {
    match v {
        Value::String(s) => microsandbox::parse_duration(s),
        Value::Number(n) => n
            .as_f64()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| invalid(format!("{name} must be seconds (0 or more), got {n}"))),
        other => Err(invalid(format!(
            "{name} must be seconds or a duration such as \"7d\", got {other}"
        ))),
    }
}

/// `maxBytes`: bytes, or text such as `20GB`.
fn size(v: &Value, name: &str) -> MicrosandboxResult<u64> {
    match v {
        Value::String(s) => microsandbox::parse_size(s),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| invalid(format!("{name} must be a whole number of bytes, got {n}"))),
        other => Err(invalid(format!(
            "{name} must be bytes or a size such as \"20GB\", got {other}"
        ))),
    }
}

fn platform(p: Option<String>) -> MicrosandboxResult<Option<Platform>> {
    p.map(|p| Platform::parse(&p)).transpose()
}

/// The `reference` query parameter.
fn reference_param(req: &Request<Incoming>) -> MicrosandboxResult<String> {
    query(req.uri().query())?
        .remove("reference")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| invalid("the reference query parameter is required"))
}

/// A typed JSON body.
async fn typed<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Reply> {
    let bytes = body(req).await?;
    parse_json(&bytes).map_err(|e| error_json(&e))
}

fn ok(value: Value) -> MicrosandboxResult<Reply> {
    Ok(reply::json(StatusCode::OK, &value))
}

/// Routes `/v1/`.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let b = app.backend.clone();
    if let Some(id) = path.strip_prefix("/v1/leases/").filter(|id| !id.is_empty()) {
        if method != Method::DELETE {
            return not_allowed("DELETE", true);
        }
        let id = id.to_owned();
        return answer(async move {
            let released = blocking(move || b.release_lease(&id)).await?;
            ok(json!({ "released": released }))
        })
        .await;
    }
    let allowed = match path.as_str() {
        "/v1/images"
        | "/v1/images/get"
        | "/v1/images/inspect"
        | "/v1/images/disk-usage"
        | "/v1/images/orphans" => "GET",
        "/v1/images/remove"
        | "/v1/images/prune"
        | "/v1/images/purge"
        | "/v1/images/verify"
        | "/v1/images/pull"
        | "/v1/images/push"
        | "/v1/images/load"
        | "/v1/images/save"
        | "/v1/images/materialize" => "POST",
        "/v1/leases" => "GET, POST",
        _ => return no_route(&method, &path),
    };
    if !allowed.split(", ").any(|m| m == method.as_str()) {
        return not_allowed(allowed, true);
    }
    match (method, path.as_str()) {
        (_, "/v1/images") => {
            answer(async move { ok(json::handles(&blocking(move || b.list_images()).await?)) })
                .await
        }
        (_, "/v1/images/get") => {
            answer(async move {
                let r = reference_param(&req)?;
                ok(json::handle(&blocking(move || b.get_image(&r)).await?))
            })
            .await
        }
        (_, "/v1/images/inspect") => {
            answer(async move {
                let r = reference_param(&req)?;
                ok(json::detail(&blocking(move || b.inspect_image(&r)).await?))
            })
            .await
        }
        (_, "/v1/images/disk-usage") => {
            answer(async move { ok(json::disk_usage(&blocking(move || b.disk_usage()).await?)) })
                .await
        }
        (_, "/v1/images/orphans") => {
            answer(async move {
                let list = blocking(move || b.orphans()).await?;
                ok(Value::Array(list.iter().map(json::orphan).collect()))
            })
            .await
        }
        (_, "/v1/images/remove") => {
            with_body(req, |r: RemoveRequest| async move {
                let name = r.reference.clone();
                blocking(move || b.remove_image(&name, r.force)).await?;
                ok(json!({ "removed": r.reference }))
            })
            .await
        }
        (_, "/v1/images/prune") => {
            with_body(req, |r: PruneRequest| async move {
                let options = PruneOptions {
                    dry_run: r.dry_run,
                    dangling: r.dangling,
                    unused_for: r
                        .unused_for
                        .as_ref()
                        .map(|v| duration(v, "unusedFor"))
                        .transpose()?,
                    max_bytes: r
                        .max_bytes
                        .as_ref()
                        .map(|v| size(v, "maxBytes"))
                        .transpose()?,
                    vm_only: r.vm_only,
                };
                let report = blocking(move || b.prune_images_with(&options)).await?;
                ok(json::prune_report(&report))
            })
            .await
        }
        (_, "/v1/images/purge") => {
            with_body(req, |r: ForceRequest| async move {
                let report = blocking(move || b.purge(&PurgeOptions { force: r.force })).await?;
                ok(json::prune_report(&report))
            })
            .await
        }
        (_, "/v1/images/verify") => {
            with_body(req, |r: VerifyRequest| async move {
                let report =
                    blocking(move || b.verify(&VerifyOptions { repair: r.repair })).await?;
                ok(json::verify_report(&report))
            })
            .await
        }
        (_, "/v1/images/pull") => {
            let pulls = app.pulls.clone();
            with_body(req, |r: PullRequest| async move {
                Reference::parse(&r.reference)?;
                let options = PullOptions {
                    platform: platform(r.platform)?,
                    policy: r
                        .policy
                        .as_deref()
                        .map(PullPolicy::parse)
                        .transpose()?
                        .unwrap_or_default(),
                    materialize: r.materialize,
                    ..Default::default()
                };
                let permit = pulls.start()?;
                let handle = blocking(move || {
                    let _permit = permit;
                    b.pull_image(&r.reference, &options)
                })
                .await?;
                ok(json::handle(&handle))
            })
            .await
        }
        (_, "/v1/images/push") => {
            // A push sends the cache's images out with this host's registry
            // credentials: never without a token, even on a unix socket.
            if app.auth.token.is_none() {
                return error_json(&microsandbox::MicrosandboxError::new(
                    microsandbox::ErrorKind::Unauthorized,
                    "push needs the server to run with an API token (--token-file or MSB_API_TOKEN)",
                ))
                .map_status(StatusCode::UNAUTHORIZED);
            }
            let pulls = app.pulls.clone();
            with_body(req, |r: PushRequest| async move {
                Reference::parse(&r.reference)?;
                if let Some(to) = &r.to {
                    Reference::parse(to)?;
                }
                let options = PushOptions {
                    to: r.to,
                    insecure: r.insecure,
                    chunk_bytes: r.chunk_bytes,
                    ..Default::default()
                };
                let permit = pulls.start()?;
                let report = blocking(move || {
                    let _permit = permit;
                    b.push_image(&r.reference, &options)
                })
                .await?;
                ok(json!({
                    "reference": report.reference,
                    "manifestDigest": report.manifest_digest,
                    "blobsUploaded": report.blobs_uploaded,
                    "blobsMounted": report.blobs_mounted,
                    "blobsSkipped": report.blobs_skipped,
                    "bytesUploaded": report.bytes_uploaded,
                }))
            })
            .await
        }
        (_, "/v1/images/load") => {
            with_body(req, |r: LoadRequest| async move {
                let named = app.paths.for_load(&r.path)?;
                let path = named.path();
                let options = LoadOptions {
                    platform: platform(r.platform)?,
                    reference: r.reference.as_deref().map(Reference::parse).transpose()?,
                    materialize: r.materialize,
                    ..Default::default()
                };
                let loaded = blocking(move || b.load_images(&path, &options)).await;
                ok(json::handles(&loaded.map_err(|e| named.tell(e))?))
            })
            .await
        }
        (_, "/v1/images/materialize") => {
            with_body(req, |r: MaterializeRequest| async move {
                let disk = blocking(move || {
                    b.materialize(&r.reference, &microsandbox::MaterializeOptions::default())
                })
                .await?;
                ok(json::disk(&disk))
            })
            .await
        }
        (_, "/v1/images/save") => {
            with_body(req, |r: SaveRequest| async move {
                let named = app.paths.for_save(&r.path)?;
                let path = named.path();
                let references = match r.references {
                    OneOrMany::One(s) => vec![s],
                    OneOrMany::Many(v) => v,
                };
                let format = r
                    .format
                    .as_deref()
                    .map(SaveFormat::parse)
                    .transpose()?
                    .unwrap_or_default();
                let names = references.clone();
                let options = SaveOptions {
                    format,
                    overwrite: r.overwrite,
                };
                blocking(move || b.save_images(&names, &path, &options))
                    .await
                    .map_err(|e| named.tell(e))?;
                ok(json!({ "saved": references, "path": r.path }))
            })
            .await
        }
        (Method::GET, "/v1/leases") => {
            answer(async move {
                let list = blocking(move || b.list_leases()).await?;
                ok(Value::Array(list.iter().map(json::lease).collect()))
            })
            .await
        }
        _ => {
            with_body(req, |r: AcquireRequest| async move {
                let expires_in = r
                    .expires_in_seconds
                    .map(|s| {
                        Duration::try_from_secs_f64(s).map_err(|_| {
                            invalid(format!(
                                "expiresInSeconds must be 0 or more seconds, got {s}"
                            ))
                        })
                    })
                    .transpose()?;
                let options = LeaseOptions {
                    id: r.id,
                    kind: r.kind.as_deref().map(LeaseKind::parse).transpose()?,
                    expires_in,
                    materialize: r.materialize,
                };
                let lease = blocking(move || b.acquire_lease(&r.reference, &options)).await?;
                Ok(reply::json(StatusCode::CREATED, &json::lease(&lease)))
            })
            .await
        }
    }
}

async fn answer(f: impl std::future::Future<Output = MicrosandboxResult<Reply>>) -> Reply {
    f.await.unwrap_or_else(|e| error_json(&e))
}

async fn with_body<T, F, Fut>(req: Request<Incoming>, f: F) -> Reply
where
    T: DeserializeOwned,
    F: FnOnce(T) -> Fut,
    Fut: std::future::Future<Output = MicrosandboxResult<Reply>>,
{
    match typed::<T>(req).await {
        Ok(parsed) => answer(f(parsed)).await,
        Err(reply) => reply,
    }
}
