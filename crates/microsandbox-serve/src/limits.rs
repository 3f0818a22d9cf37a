//! Load held and bad input refused: bounded request bodies read within a
//! time limit, JSON parsed into typed requests with clear 400s, query
//! strings decoded strictly, slow clients timed out, and at most N pulls
//! at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use microsandbox::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::reply::invalid;

/// The largest request body read (every JSON request is far smaller).
pub const BODY_LIMIT: usize = 1 << 20;
/// How long a client may take to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a streamed answer may wait for a client that reads nothing.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
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

    #[test]
    fn pulls_are_bounded() {
        let p = Pulls::new(1);
        let held = p.start().unwrap();
        assert_eq!(p.start().unwrap_err().kind(), ErrorKind::Busy);
        drop(held);
        assert!(p.start().is_ok());
    }
}
