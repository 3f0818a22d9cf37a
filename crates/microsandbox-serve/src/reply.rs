//! Answers: the body type every handler returns (a whole buffer, or a
//! stream fed through a bounded channel), JSON and text answers (the 404
//! and 405 every route gives among them), and the one mapping from the
//! cache's error kinds to HTTP statuses.
//!
//! | code | status |
//! | --- | --- |
//! | `ImageNotFound` | 404 |
//! | `ImageInUse` | 409 |
//! | `InvalidReference`, `InvalidArgument`, `InvalidArchive` | 400 |
//! | `DigestMismatch`, `PlatformNotFound`, `Unsupported` | 422 |
//! | `Unauthorized`, `RegistryError` (a registry a pull asked refused or failed) | 502 |
//! | `Busy` | 503, with `Retry-After: 1` |
//! | `CorruptCache`, `Io` | 500 |
//!
//! A registry refusing a pull's credentials is 502, not 401: the client's
//! own token was good, the upstream said no.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Response, StatusCode};
use microsandbox::{ErrorKind, MicrosandboxError};
use tokio::sync::mpsc;

/// The body of every answer.
pub type Body = BoxBody<Bytes, io::Error>;

/// An answer.
pub type Reply = Response<Body>;

/// `application/json`.
pub const JSON: &str = "application/json";
/// `text/plain; charset=utf-8`.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// No body (a `HEAD`, a 204).
pub fn empty() -> Body {
    Empty::new().map_err(|e: Infallible| match e {}).boxed()
}

/// A body fed by a channel, ending when every sender is gone; an `Err`
/// sent down it cuts the answer short (the connection is closed before
/// the declared length).
pub struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    length: Option<u64>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|chunk| chunk.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// A streamed body of `length` bytes (if known) and the sender that feeds
/// it, holding at most `depth` chunks in flight.
pub fn channel(depth: usize, length: Option<u64>) -> (mpsc::Sender<io::Result<Bytes>>, Body) {
    let (tx, rx) = mpsc::channel(depth);
    (tx, ChannelBody { rx, length }.boxed())
}

/// An answer with a body and a content type.
pub fn with(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let bytes: Bytes = body.into();
    let mut r = Response::new(full(bytes.clone()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, header(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    r
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    with(
        status,
        JSON,
        serde_json::to_vec(value).expect("a JSON value always serializes"),
    )
}

/// A text answer; a newline is added when missing, as MiniBox ends its lines.
pub fn text(status: StatusCode, message: &str) -> Reply {
    let mut body = message.to_owned();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    with(status, TEXT, body)
}

/// A header value from text the server itself made.
pub fn header(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The status a kind of error answers with (the table of the module doc).
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::ImageNotFound => StatusCode::NOT_FOUND,
        ErrorKind::ImageInUse => StatusCode::CONFLICT,
        ErrorKind::InvalidReference | ErrorKind::InvalidArgument | ErrorKind::InvalidArchive => {
            StatusCode::BAD_REQUEST
        }
        ErrorKind::DigestMismatch | ErrorKind::PlatformNotFound | ErrorKind::Unsupported => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorKind::Unauthorized | ErrorKind::RegistryError => StatusCode::BAD_GATEWAY,
        ErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Adds `Retry-After` to a `Busy` answer.
fn retry_if_busy(mut r: Reply, kind: ErrorKind) -> Reply {
    if kind == ErrorKind::Busy {
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// `{ code, message }` with the status of the code.
pub fn error_json(e: &MicrosandboxError) -> Reply {
    let body = serde_json::json!({ "code": e.code(), "message": e.message() });
    retry_if_busy(json(status_of(e.kind()), &body), e.kind())
}

/// The message as text with the status of the code (MiniBox's endpoints
/// answer errors as `http.Error` does: plain text).
pub fn error_text(e: &MicrosandboxError) -> Reply {
    retry_if_busy(text(status_of(e.kind()), e.message()), e.kind())
}

/// An `InvalidArgument` error.
pub fn invalid(message: impl Into<String>) -> MicrosandboxError {
    MicrosandboxError::new(ErrorKind::InvalidArgument, message)
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
        error_json(&invalid(message))
    } else {
        text(StatusCode::METHOD_NOT_ALLOWED, &message)
    };
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// 404 for a path no endpoint serves.
pub fn no_route(method: &Method, path: &str) -> Reply {
    let e = invalid(format!("no such endpoint: {method} {path}"));
    error_json(&e).map_status(StatusCode::NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_status_and_only_cache_faults_are_500() {
        for kind in ErrorKind::ALL {
            let status = status_of(kind);
            let server_fault = matches!(kind, ErrorKind::CorruptCache | ErrorKind::Io);
            assert_eq!(
                status == StatusCode::INTERNAL_SERVER_ERROR,
                server_fault,
                "{kind}"
            );
        }
        assert_eq!(status_of(ErrorKind::ImageNotFound), 404);
        assert_eq!(status_of(ErrorKind::ImageInUse), 409);
        assert_eq!(status_of(ErrorKind::Busy), 503);
    }
}
