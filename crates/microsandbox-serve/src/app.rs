//! One request, start to end: the token checked before anything else
//! (a request without it is answered 401 and touches nothing), a
//! declared body past the limit refused, the route picked, the answer
//! logged as one line.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use microsandbox::{ErrorKind, LocalBackend, MicrosandboxError, MicrosandboxResult};

use crate::auth::{Area, Auth};
use crate::limits::{BodyError, Pulls, BODY_LIMIT};
use crate::log::{Entry, LogSink};
use crate::reply::{self, Reply};
use crate::{distribution, minibox, openapi, v1};

/// What every request shares.
pub struct App {
    /// The cache.
    pub backend: LocalBackend,
    /// The token rule.
    pub auth: Auth,
    /// The pulls allowed at once.
    pub pulls: Pulls,
    /// Where log lines go.
    pub log: Option<LogSink>,
    /// The directories a client's `load` and `save` paths may be in.
    pub paths: crate::paths::Allowed,
}

/// Runs `op` on tokio's blocking pool: the cache's calls block on disks
/// and locks.
pub async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> MicrosandboxResult<T> + Send + 'static,
) -> MicrosandboxResult<T> {
    tokio::task::spawn_blocking(op).await.unwrap_or_else(|e| {
        Err(MicrosandboxError::new(
            ErrorKind::Io,
            format!("internal error: the cache operation failed: {e}"),
        ))
    })
}

/// The request body, read bounded, or the answer that refuses it.
pub async fn body(req: Request<Incoming>) -> Result<bytes::Bytes, Reply> {
    crate::limits::read_body(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => reply::error_json(&reply::invalid(format!(
                "the request body is over {BODY_LIMIT} bytes"
            )))
            .map_status(StatusCode::PAYLOAD_TOO_LARGE),
            BodyError::TooSlow => {
                reply::error_json(&reply::invalid("the request body did not arrive in time"))
                    .map_status(StatusCode::REQUEST_TIMEOUT)
            }
            BodyError::Broken => reply::error_json(&reply::invalid("the request body broke off")),
        })
}

/// Changing a reply's status.
pub trait MapStatus {
    /// The same answer with another status.
    fn map_status(self, status: StatusCode) -> Self;
}

impl MapStatus for Reply {
    fn map_status(mut self, status: StatusCode) -> Self {
        *self.status_mut() = status;
        self
    }
}

/// 405 naming the methods a path takes.
pub fn not_allowed(allow: &'static str, json: bool) -> Reply {
    let message = format!("method not allowed; this path takes {allow}");
    let mut r = if json {
        reply::error_json(&reply::invalid(message))
    } else {
        reply::text(StatusCode::METHOD_NOT_ALLOWED, &message)
    };
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// 404 for a path no endpoint serves.
pub fn no_route(method: &Method, path: &str) -> Reply {
    let e = reply::invalid(format!("no such endpoint: {method} {path}"));
    reply::error_json(&e).map_status(StatusCode::NOT_FOUND)
}

fn unauthorized(area: Area, path: &str) -> Reply {
    let (mut r, challenge) = match area {
        Area::Registry => (
            distribution::error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            ),
            r#"Basic realm="microsandbox""#,
        ),
        Area::Management if path.starts_with("/v1/") => (
            reply::error_json(&MicrosandboxError::new(
                ErrorKind::Unauthorized,
                "a valid API token is required (Authorization: Bearer <token>)",
            ))
            .map_status(StatusCode::UNAUTHORIZED),
            r#"Bearer realm="microsandbox""#,
        ),
        Area::Management => (
            reply::text(StatusCode::UNAUTHORIZED, "Unauthorized"),
            r#"Bearer realm="microsandbox""#,
        ),
    };
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    r
}

async fn route(app: Arc<App>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let area = if path == "/v2" || path.starts_with("/v2/") {
        Area::Registry
    } else {
        Area::Management
    };
    if !app.auth.allows(area, req.headers()) {
        return unauthorized(area, &path);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        let e = reply::invalid(format!("the request body is over {BODY_LIMIT} bytes"));
        return reply::error_json(&e).map_status(StatusCode::PAYLOAD_TOO_LARGE);
    }
    match area {
        Area::Registry => distribution::handle(&app, req).await,
        Area::Management if path.starts_with("/v1/") => v1::handle(app, req).await,
        Area::Management if path == "/openapi.yaml" => openapi::handle(&req),
        Area::Management => minibox::handle(app, req).await,
    }
}

/// Answers one request and logs it.
pub async fn handle(
    app: Arc<App>,
    peer: Arc<str>,
    req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let mut reply = route(app.clone(), req).await;
    reply.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Some(log) = &app.log {
        let bytes = reply
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        log(&Entry {
            peer: &peer,
            method: method.as_str(),
            target: &target,
            status: reply.status().as_u16(),
            bytes,
            started,
        }
        .line());
    }
    Ok(reply)
}
