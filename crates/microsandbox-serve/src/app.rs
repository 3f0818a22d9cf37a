//! One request, start to end: the token checked before anything else
//! (a request without it is answered 401 and touches nothing), a
//! declared body past the limit refused, the route picked, the answer
//! logged as one line.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, WWW_AUTHENTICATE};
use hyper::{Request, StatusCode};
use microsandbox::{ErrorKind, MicrosandboxError};

use crate::auth::Area;
use crate::limits::BODY_LIMIT;
use crate::log::Entry;
use crate::reply::{self, MapStatus, Reply};
use crate::state::App;
use crate::{distribution, minibox, openapi, v1};

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
