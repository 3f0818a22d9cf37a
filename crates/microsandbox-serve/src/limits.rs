//! Load held and bad input refused: bounded request bodies read within a
//! time limit, JSON parsed into typed requests with clear 400s, query
//! strings decoded strictly, slow clients timed out (a request head in
//! [`HEADER_TIMEOUT`], a body in [`BODY_TIMEOUT`], every write of an answer
//! within the write timeout: [`WriteDeadline`]), at most N pulls at once,
//! and at most [`DEFAULT_CONNECTIONS`] (or the configured number of)
//! connections at once.

use std::collections::HashMap;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use microsandbox::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::reply::{error_json, invalid, MapStatus, Reply};

/// The largest request body read (every JSON request is far smaller).
pub const BODY_LIMIT: usize = 1 << 20;
/// How long a client may take to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a streamed answer may wait for a client that reads nothing.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write to a client may make no progress (its socket buffer
/// full, the client reading nothing) before the connection is closed,
/// unless set.
pub const WRITE_TIMEOUT: Duration = STALL_TIMEOUT;
/// Connections served at once, unless set; more wait in the listen
/// backlog until one ends.
pub const DEFAULT_CONNECTIONS: usize = 1024;
/// The most connections at once a server takes.
pub const MAX_CONNECTIONS: usize = 65536;
/// The most a connection buffers on its own: a request head, and the
/// answer's bytes on their way to the socket (hyper's `max_buf_size`).
pub const CONN_BUFFER: usize = 64 << 10;
/// Pulls at once, unless set.
pub const DEFAULT_PULLS: usize = 4;
/// The most pulls at once a server takes.
pub const MAX_PULLS: usize = 1024;

/// Whether `n` pulls at once is a setting the server takes; why not, if
/// not.
///
/// # Errors
///
/// The range, and what was given.
pub fn check_pulls(n: usize) -> Result<(), String> {
    if (1..=MAX_PULLS).contains(&n) {
        Ok(())
    } else {
        Err(format!("must be from 1 to {MAX_PULLS}, got {n}"))
    }
}

/// Whether `n` connections at once is a setting the server takes; why
/// not, if not.
///
/// # Errors
///
/// The range, and what was given.
pub fn check_connections(n: usize) -> Result<(), String> {
    if (1..=MAX_CONNECTIONS).contains(&n) {
        Ok(())
    } else {
        Err(format!("must be from 1 to {MAX_CONNECTIONS}, got {n}"))
    }
}

/// A connection whose writes must make progress: a write (or flush) that
/// has waited `timeout` for the socket to take a byte fails with
/// `TimedOut`, and hyper closes the connection. A client that stops
/// reading a large answer so holds its connection for at most that long.
/// Reads are left to hyper's own timeouts.
pub struct WriteDeadline<I> {
    io: I,
    timeout: Duration,
    /// Armed while a write waits; reset when one makes progress.
    timer: Pin<Box<Sleep>>,
    waiting: bool,
}

impl<I> WriteDeadline<I> {
    /// `io`, its writes bounded by `timeout`.
    pub fn new(io: I, timeout: Duration) -> WriteDeadline<I> {
        WriteDeadline {
            io,
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
        }
    }

    /// After a write attempt: progress clears the clock, waiting starts it
    /// (once) and fails when it runs out.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => {
                if !self.waiting {
                    self.waiting = true;
                    let deadline = Instant::now() + self.timeout;
                    self.timer.as_mut().reset(deadline);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read nothing within the write timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.waiting = false;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than [`BODY_LIMIT`] (413).
    TooLarge,
    /// Not sent within [`BODY_TIMEOUT`] (408).
    TooSlow,
    /// The connection failed midway.
    Broken,
}

/// Reads a request body, at most `limit` bytes, within [`BODY_TIMEOUT`].
pub async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let read = async {
        let mut out = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::Broken)?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out.freeze())
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| BodyError::TooSlow)?
}

/// The request body, read bounded, or the answer that refuses it.
pub async fn body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    read_body(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => error_json(&invalid(format!(
                "the request body is over {BODY_LIMIT} bytes"
            )))
            .map_status(StatusCode::PAYLOAD_TOO_LARGE),
            BodyError::TooSlow => error_json(&invalid("the request body did not arrive in time"))
                .map_status(StatusCode::REQUEST_TIMEOUT),
            BodyError::Broken => error_json(&invalid("the request body broke off")),
        })
}

/// A JSON request body as `T`; an empty body is `{}`.
///
/// # Errors
///
/// [`ErrorKind::InvalidArgument`] saying where and why it does not parse
/// (unknown fields, wrong types, missing required ones).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> MicrosandboxResult<T> {
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    let bad = |e: serde_json::Error| invalid(format!("invalid JSON request body: {e}"));
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(bad)?;
    // serde would take a struct from an array of its fields too: only an
    // object is a request.
    if !value.is_object() {
        return Err(invalid("the JSON request body must be an object"));
    }
    serde_json::from_value(value).map_err(bad)
}

/// A query string, decoded: `+` is a space and `%XX` a byte, as Go's
/// `url.Query` reads it; the first of repeated keys wins.
///
/// # Errors
///
/// [`ErrorKind::InvalidArgument`] for a bad escape or text that is not UTF-8.
pub fn query(raw: Option<&str>) -> MicrosandboxResult<HashMap<String, String>> {
    let mut out = HashMap::new();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        out.entry(k).or_insert(v);
    }
    Ok(out)
}

fn decode(text: &str) -> MicrosandboxResult<String> {
    let bad = || invalid(format!("bad escape in the query string: {text:?}"));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| invalid("the query string is not UTF-8".to_owned()))
}

/// The pulls allowed at once.
#[derive(Clone, Debug)]
pub struct Pulls(Arc<Semaphore>);

impl Pulls {
    /// At most `n` pulls at once (at least 1).
    pub fn new(n: usize) -> Pulls {
        Pulls(Arc::new(Semaphore::new(n.max(1))))
    }

    /// A place for one pull, held until the pull ends.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Busy`] when every place is taken.
    pub fn start(&self) -> MicrosandboxResult<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().map_err(|_| {
            MicrosandboxError::new(
                ErrorKind::Busy,
                "too many pulls in flight; try again when one has finished",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_as_go_reads_them() {
        let q = query(Some(
            "image=alpine%3A3.18&path=/tmp/a+b.tar&image=second&flag",
        ))
        .unwrap();
        assert_eq!(q["image"], "alpine:3.18");
        assert_eq!(q["path"], "/tmp/a b.tar");
        assert_eq!(q["flag"], "");
        for bad in ["a=%zz", "a=%4", "a=%ff%fe"] {
            assert_eq!(
                query(Some(bad)).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn json_bodies_are_typed_and_empty_ones_are_empty_objects() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct R {
            #[allow(dead_code)]
            force: Option<bool>,
        }
        assert!(parse_json::<R>(b"").is_ok());
        assert!(parse_json::<R>(b"\t").is_err(), "white space is no JSON");
        assert!(parse_json::<R>(b" {\"force\": true}").is_ok());
        let e = parse_json::<R>(b"{\"forse\": true}").unwrap_err();
        assert!(e.message().contains("forse"), "{e}");
        assert!(parse_json::<R>(b"{\"force\": 1}").is_err());
        assert!(parse_json::<R>(b"[").is_err());
        assert!(
            parse_json::<R>(b"[true]").is_err(),
            "an array is no request"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_past_the_timeout_fails_and_progress_clears_the_clock() {
        use tokio::io::AsyncWriteExt;
        // A pipe of 1 KiB whose other end reads only when told.
        let (near, mut far) = tokio::io::duplex(1024);
        let mut w = WriteDeadline::new(near, Duration::from_secs(5));
        w.write_all(&[0u8; 1024]).await.unwrap();
        // Full: the next write waits, and 4 s in, a read lets it through.
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let mut buf = [0u8; 1024];
            tokio::io::AsyncReadExt::read_exact(&mut far, &mut buf)
                .await
                .unwrap();
            far
        });
        w.write_all(&[1u8; 1024]).await.unwrap();
        let _far = reader.await.unwrap();
        // Nobody reads now: 5 s later the write fails.
        let started = Instant::now();
        let e = w.write_all(&[2u8; 1]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[test]
    fn connections_at_once_are_in_range() {
        assert!(check_connections(1).is_ok());
        assert!(check_connections(MAX_CONNECTIONS).is_ok());
        assert!(check_connections(0).is_err());
        assert!(check_connections(MAX_CONNECTIONS + 1).is_err());
    }

    #[test]
    fn pulls_are_bounded() {
        let p = Pulls::new(1);
        let held = p.start().unwrap();
        assert_eq!(p.start().unwrap_err().kind(), ErrorKind::Busy);
        drop(held);
        assert!(p.start().is_ok());
    }
}
