//! One blob into the registry, as the distribution spec has it: `HEAD`
//! first (a blob the registry has is skipped), a cross-repository mount
//! when the image came from another repository of the same registry, then
//! the upload: one `PUT` for a blob up to the chunk size, else `PATCH`es
//! with `Content-Range` and a closing `PUT ?digest=`.
//!
//! A chunked upload survives the registry: when a chunk cannot be sent
//! (the connection cut, the registry restarting), or the registry answers
//! 416, the upload URL is asked (`GET`) how much it holds and the upload
//! goes on from there; an upload the registry no longer knows starts over.
//! Bytes stream from the cache file (never a whole blob in memory) and are
//! hashed on the way: a blob that does not hash to its name is never
//! completed, the upload is cancelled and the error is `CorruptCache`.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest as _, Sha256};

use crate::error::{IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::layout::Layout;
use crate::transfer::registry::push::session::{header, registry_error, Payload, Session};

/// How many times an upload is started over, and how many times one
/// request is tried again, before the push fails.
const RESTARTS: u32 = 3;
const RETRIES: u32 = 8;
/// How many 416 answers in a row (with no byte gained) are borne.
const REFUSED_RANGES: u32 = 3;

/// One blob to push.
#[derive(Clone, Debug)]
pub(super) struct Blob {
    pub digest: Digest,
    pub size: u64,
    /// Its position in the image manifest, for a layer.
    pub layer_index: Option<usize>,
}

/// What became of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The registry had it.
    Present,
    /// Mounted from another repository of the registry.
    Mounted,
    /// Uploaded: the bytes sent (resent bytes counted again).
    Uploaded(u64),
}

/// Where an upload is, and what it has hashed so far.
struct Cursor {
    url: String,
    offset: u64,
    hasher: Sha256,
}

/// The byte count a blob upload reports as it goes.
pub(super) type Tick<'a> = &'a (dyn Fn(u64) -> MicrosandboxResult<()> + Sync);

/// 200 ms, 400 ms, ... capped at 3 s.
fn backoff(tries: u32) -> std::time::Duration {
    std::time::Duration::from_millis((200u64 << tries.min(4)).min(3_000))
}

/// Pushes one blob of the cache. `chunk` is the most bytes one request
/// carries (0: no limit, one `PUT`); `tick` hears the bytes uploaded.
pub(super) fn push_blob(
    session: &Session,
    layout: &Layout,
    blob: &Blob,
    mount_from: Option<&str>,
    chunk: u64,
    tick: Tick<'_>,
) -> MicrosandboxResult<Outcome> {
    let what = format!("blob {}", blob.digest);
    let head = retrying(|| {
        session.send(
            "HEAD",
            &session.url(&format!("blobs/{}", blob.digest)),
            &[],
            Payload::Empty,
        )
    })?;
    match head.status().as_u16() {
        200..=399 => return Ok(Outcome::Present),
        404 => {}
        _ => return Err(session.failure(head, &what)),
    }
    let sent = Cell::new(0);
    for restart in 0..=RESTARTS {
        let start = retrying(|| start(session, blob, mount_from))?;
        let url = match start {
            Started::Mounted => return Ok(Outcome::Mounted),
            Started::At(url) => url,
        };
        let file = open(layout, blob)?;
        let done = if chunk == 0 || blob.size <= chunk {
            monolithic(session, blob, file, url, &sent, tick)?
        } else {
            chunked(session, blob, file, url, chunk, &sent, tick)?
        };
        if done {
            return Ok(Outcome::Uploaded(sent.get()));
        }
        if restart < RESTARTS {
            std::thread::sleep(backoff(restart));
        }
    }
    Err(registry_error(format!(
        "{}: {what}: the upload was lost {} times",
        session.shown,
        RESTARTS + 1
    )))
}

/// Tries a request again while the registry cannot be reached.
fn retrying<T>(mut f: impl FnMut() -> MicrosandboxResult<T>) -> MicrosandboxResult<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if e.kind() == crate::ErrorKind::RegistryError && tries < RETRIES => {
                std::thread::sleep(backoff(tries));
                tries += 1;
            }
            other => return other,
        }
    }
}

enum Started {
    Mounted,
    At(String),
}

/// Opens an upload (`POST`), or mounts the blob from `mount_from`.
fn start(session: &Session, blob: &Blob, mount_from: Option<&str>) -> MicrosandboxResult<Started> {
    let mut url = session.url("blobs/uploads/");
    if let Some(from) = mount_from {
        url.push_str(&format!("?mount={}&from={from}", blob.digest));
    }
    let response = session.send("POST", &url, &[], Payload::Empty)?;
    match response.status().as_u16() {
        201 if mount_from.is_some() => Ok(Started::Mounted),
        202 => location(session, &response).map(Started::At),
        _ => Err(session.failure(response, &format!("blob {}: start an upload", blob.digest))),
    }
}

fn location(
    session: &Session,
    response: &ureq::http::Response<ureq::Body>,
) -> MicrosandboxResult<String> {
    let at = header(response, "location").ok_or_else(|| {
        registry_error(format!(
            "{}: an upload answer without a Location",
            session.shown
        ))
    })?;
    session.absolute(at)
}

/// `url` with `?digest=` (or `&digest=`) appended.
fn with_digest(url: &str, digest: &Digest) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={digest}")
}

/// The blob's file, checked against its declared size.
fn open(layout: &Layout, blob: &Blob) -> MicrosandboxResult<File> {
    let path = layout.blob_path(&blob.digest);
    let file = layout.open_blob(&blob.digest)?.ok_or_else(|| {
        MicrosandboxError::corrupt(format!("blob {} is missing from the cache", blob.digest))
    })?;
    let size = file.metadata().at("stat", &path)?.len();
    if size != blob.size {
        return Err(MicrosandboxError::corrupt(format!(
            "blob {} has {size} bytes where its descriptor says {}: \
             the cache was changed behind its back (verify --repair)",
            blob.digest, blob.size
        )));
    }
    Ok(file)
}

fn corrupt(blob: &Blob, actual: &Digest) -> MicrosandboxError {
    MicrosandboxError::corrupt(format!(
        "blob {} hashes to {actual}: the cache was changed behind its back (verify --repair)",
        blob.digest
    ))
}

/// Cancels an upload the push gives up on (best effort).
fn cancel(session: &Session, url: &str) {
    let _ = session.send("DELETE", url, &[], Payload::Empty);
}

/// Reads `len` bytes of `file` from `from`, hashing them into `hasher`
/// and counting them into `sent` (reported through `tick`).
struct Slice<'a> {
    inner: io::Take<&'a File>,
    hasher: &'a RefCell<Sha256>,
    sent: &'a Cell<u64>,
    tick: Tick<'a>,
    since: u64,
}

impl<'a> Slice<'a> {
    /// `len` bytes of `file` from `from`, hashed into `hasher` (reset to
    /// `start` first).
    #[allow(clippy::too_many_arguments)]
    fn open(
        file: &'a File,
        blob: &Blob,
        from: u64,
        len: u64,
        hasher: &'a RefCell<Sha256>,
        start: &Sha256,
        sent: &'a Cell<u64>,
        tick: Tick<'a>,
    ) -> MicrosandboxResult<Box<dyn Read + 'a>> {
        let mut f = file;
        f.seek(SeekFrom::Start(from)).at("seek", &blob_path(blob))?;
        *hasher.borrow_mut() = start.clone();
        Ok(Box::new(Slice {
            inner: Read::take(file, len),
            hasher,
            sent,
            tick,
            since: 0,
        }))
    }
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.borrow_mut().update(&buf[..n]);
        self.sent.set(self.sent.get() + n as u64);
        self.since += n as u64;
        if self.since >= crate::transfer::progress::STEP || (n == 0 && self.since > 0) {
            self.since = 0;
            (self.tick)(self.sent.get()).map_err(io::Error::other)?;
        }
        Ok(n)
    }
}

/// The whole blob in one `PUT`. False when the upload was lost (start over).
fn monolithic(
    session: &Session,
    blob: &Blob,
    file: File,
    url: String,
    sent: &Cell<u64>,
    tick: Tick<'_>,
) -> MicrosandboxResult<bool> {
    let hasher = RefCell::new(Sha256::new());
    let fresh = Sha256::new();
    let mut open = || Slice::open(&file, blob, 0, blob.size, &hasher, &fresh, sent, tick);
    let put = with_digest(&url, &blob.digest);
    let headers = [("Content-Type", "application/octet-stream".to_owned())];
    let response = session.send(
        "PUT",
        &put,
        &headers,
        Payload::Stream {
            len: blob.size,
            open: &mut open,
        },
    );
    let actual = Digest::from_hasher(hasher.into_inner());
    let response = match response {
        Ok(r) => r,
        Err(e) if e.kind() == crate::ErrorKind::RegistryError => return Ok(false),
        Err(e) => return Err(e),
    };
    if actual != blob.digest {
        cancel(session, &url);
        return Err(corrupt(blob, &actual));
    }
    match response.status().as_u16() {
        201 | 204 => Ok(true),
        404 => Ok(false),
        _ => Err(session.failure(response, &format!("blob {}", blob.digest))),
    }
}

fn blob_path(blob: &Blob) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("blob {}", blob.digest))
}

/// The blob in `PATCH`es of `chunk` bytes, then a `PUT ?digest=`. False
/// when the upload was lost (start over).
fn chunked(
    session: &Session,
    blob: &Blob,
    file: File,
    url: String,
    chunk: u64,
    sent: &Cell<u64>,
    tick: Tick<'_>,
) -> MicrosandboxResult<bool> {
    let what = format!("blob {}", blob.digest);
    let mut at = Cursor {
        url,
        offset: 0,
        hasher: Sha256::new(),
    };
    let (mut cuts, mut refused) = (0, 0);
    while at.offset < blob.size {
        let end = (at.offset + chunk).min(blob.size);
        let hasher = RefCell::new(Sha256::new());
        let from = at.offset;
        let start = at.hasher.clone();
        let mut open = || Slice::open(&file, blob, from, end - from, &hasher, &start, sent, tick);
        let headers = [
            ("Content-Type", "application/octet-stream".to_owned()),
            ("Content-Range", format!("{from}-{}", end - 1)),
        ];
        let response = session.send(
            "PATCH",
            &at.url,
            &headers,
            Payload::Stream {
                len: end - from,
                open: &mut open,
            },
        );
        match response {
            Ok(r) if r.status() == 202 => {
                at.url = location(session, &r)?;
                at.hasher = hasher.into_inner();
                at.offset = end;
                refused = 0;
            }
            Ok(r) if r.status() == 416 => {
                refused += 1;
                if refused > REFUSED_RANGES {
                    return Err(session.failure(r, &format!("{what}: chunk {from}-{}", end - 1)));
                }
                if !requery(session, blob, &file, &mut at)? {
                    return Ok(false);
                }
            }
            // The registry no longer knows the upload.
            Ok(r) if r.status() == 404 => return Ok(false),
            Ok(r) => return Err(session.failure(r, &format!("{what}: chunk {from}-{}", end - 1))),
            Err(e) if e.kind() == crate::ErrorKind::RegistryError => {
                cuts += 1;
                if cuts > RETRIES {
                    return Err(e);
                }
                std::thread::sleep(backoff(cuts - 1));
                match requery(session, blob, &file, &mut at) {
                    Ok(true) => {}
                    Ok(false) => return Ok(false),
                    Err(e) if e.kind() == crate::ErrorKind::RegistryError => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    let actual = Digest::from_hasher(at.hasher.clone());
    if actual != blob.digest {
        cancel(session, &at.url);
        return Err(corrupt(blob, &actual));
    }
    let response = retrying(|| {
        session.send(
            "PUT",
            &with_digest(&at.url, &blob.digest),
            &[],
            Payload::Empty,
        )
    })?;
    match response.status().as_u16() {
        201 | 204 => Ok(true),
        404 => Ok(false),
        _ => Err(session.failure(response, &what)),
    }
}

/// Asks the upload URL how many bytes the registry holds and moves the
/// cursor there (hashing what the registry has that the cursor had not
/// counted, from the cache file). False when the registry no longer knows
/// the upload.
fn requery(
    session: &Session,
    blob: &Blob,
    file: &File,
    at: &mut Cursor,
) -> MicrosandboxResult<bool> {
    let response = session.send("GET", &at.url, &[], Payload::Empty)?;
    match response.status().as_u16() {
        204 | 200 => {}
        400 | 404 => return Ok(false),
        _ => return Err(session.failure(response, &format!("blob {}: upload status", blob.digest))),
    }
    let held = header(&response, "range")
        .and_then(parse_range)
        .unwrap_or(0);
    if held > blob.size {
        return Ok(false);
    }
    if let Some(l) = header(&response, "location") {
        at.url = session.absolute(l)?;
    }
    if held < at.offset {
        at.hasher = Sha256::new();
        at.offset = 0;
    }
    let mut rest = Read::take(file, held - at.offset);
    let mut buf = vec![0u8; 256 << 10];
    let path = blob_path(blob);
    (&*file)
        .seek(SeekFrom::Start(at.offset))
        .at("seek", &path)?;
    loop {
        let n = rest.read(&mut buf).at("read", &path)?;
        if n == 0 {
            break;
        }
        at.hasher.update(&buf[..n]);
        at.offset += n as u64;
    }
    Ok(at.offset == held)
}

/// `0-1234` (or `bytes=0-1234`) as the byte count it says is held: 1235.
/// distribution says `0-0` for an empty upload, so that is read as 0.
fn parse_range(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text.strip_prefix("bytes=").unwrap_or(text);
    let (start, end) = text.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    if start != 0 {
        return None;
    }
    Some(if end == 0 { 0 } else { end + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_as_the_bytes_held() {
        assert_eq!(parse_range("0-1023"), Some(1024));
        assert_eq!(parse_range("bytes=0-9"), Some(10));
        assert_eq!(parse_range("0-0"), Some(0));
        assert_eq!(parse_range("5-9"), None);
        assert_eq!(parse_range("x"), None);
        assert_eq!(
            with_digest("http://r/v2/a/blobs/uploads/u?_state=s", &Digest::of(b"")),
            format!(
                "http://r/v2/a/blobs/uploads/u?_state=s&digest={}",
                Digest::of(b"")
            )
        );
    }
}
