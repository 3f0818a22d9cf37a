//! A blob's bytes as an answer's body, read from its file as hyper asks
//! for them, and what is checked before the last of them goes out.
//!
//! - A whole blob this process has not sealed is hashed as it streams;
//!   its last chunk is held back until the hash matches, and then the
//!   blob is sealed (`microsandbox::blob_seal`), so the next answers
//!   need no hash.
//! - A sealed blob (whole, or a range of it) is sent without hashing; its stamp (one `fstat`) is checked again after the
//!   last read and before the last chunk is given, so a write to the file
//!   during the send, or since the seal, cuts the answer short.
//! - A range of a blob that is not sealed is sent as it is (only a whole
//!   blob can be checked against its digest).
//!
//! The bytes go through a buffer of this process, not `sendfile`: the
//! kernel's zero-copy send keeps referring to the file's pages until the
//! client has read them, so a write after the last check could still
//! change bytes on their way. What a check has passed is a copy the
//! file can no longer touch.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use microsandbox::blob_seal::{self, BlobStamp};
use microsandbox::Digest;
use sha2::Digest as _;

use crate::reply::Body;

/// The most bytes of a blob read at once, sealed or not: what one
/// connection pins while its client reads nothing (hyper's write buffer
/// holds one more, see `server.rs`).
pub const CHUNK: usize = 64 << 10;

/// What is checked of the bytes sent.
#[derive(Clone, Debug)]
pub enum Check {
    /// Nothing (a range of a blob not sealed).
    None,
    /// They must hash to the digest (a whole blob not sealed); with the
    /// stamp taken before the first read, the blob is sealed after.
    Hash(Digest, Option<BlobStamp>),
    /// The file must still be as sealed after the last read.
    Sealed(BlobStamp),
}

/// Streams `len` bytes of `file` from `start`, checked as `check` says;
/// a failed check cuts the answer before its last chunk.
///
/// The file is read one chunk at a time and only when hyper asks for the
/// next frame, which it does once the bytes before have (nearly) gone to
/// the socket: nothing is read ahead, so a client that reads nothing pins
/// one chunk, however large the blob. Such a client is cut off by the
/// connection's write timeout (`server.rs`).
pub fn stream_file(file: std::fs::File, start: u64, len: u64, check: Check) -> Body {
    FileBody {
        file: Arc::new(file),
        offset: start,
        left: len,
        hasher: matches!(check, Check::Hash(..)).then(sha2::Sha256::new),
        check: Arc::new(check),
        reading: None,
        failed: false,
    }
    .boxed()
}

type Read = io::Result<(Bytes, Option<sha2::Sha256>)>;

/// A blob's bytes, read as they are asked for (see [`stream_file`]).
struct FileBody {
    file: Arc<std::fs::File>,
    offset: u64,
    left: u64,
    /// The hash of what was read so far (with [`Check::Hash`]); it
    /// travels into each read and back.
    hasher: Option<sha2::Sha256>,
    check: Arc<Check>,
    /// The read in flight, on the blocking pool (a disk may be slow).
    reading: Option<tokio::task::JoinHandle<Read>>,
    failed: bool,
}

/// The chunk just read (`n` bytes of `buf`) into the hash; the last one
/// (`n == want`) is given only if the check passes.
fn finish(
    mut buf: Vec<u8>,
    n: usize,
    want: u64,
    mut hasher: Option<sha2::Sha256>,
    check: &Check,
    file: &std::fs::File,
) -> Read {
    if n == 0 {
        return Err(io::Error::other("the blob shrank while it was read"));
    }
    buf.truncate(n);
    if let Some(h) = hasher.as_mut() {
        h.update(&buf);
    }
    if n as u64 == want {
        match check {
            Check::None => {}
            Check::Hash(want, stamp) => {
                let Some(h) = hasher.take() else {
                    return Err(io::Error::other("the blob's hash was lost: not sent"));
                };
                let got = Digest::from_hasher(h);
                if &got != want {
                    return Err(io::Error::other(format!(
                        "blob {want} hashes to {got}: not sent"
                    )));
                }
                if let Some(stamp) = stamp {
                    blob_seal::seal(file, want, *stamp);
                }
            }
            Check::Sealed(stamp) => {
                if !stamp.holds(file) {
                    return Err(io::Error::other(
                        "the blob changed on disk since it was verified: not sent whole",
                    ));
                }
            }
        }
    }
    Ok((Bytes::from(buf), hasher))
}

/// A read that may wait for the disk (on the blocking pool).
fn read_blocking(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    loop {
        match file.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// A read of what the page cache already holds, which never waits for
/// the disk: `None` when it would (or the system cannot tell).
fn read_cached(file: &std::fs::File, buf: &mut [u8], offset: u64) -> Option<io::Result<usize>> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    let mut bufs = [io::IoSliceMut::new(buf)];
    match preadv2(file, &mut bufs, offset, ReadWriteFlags::NOWAIT) {
        Ok(n) => Some(Ok(n)),
        Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS | Errno::INTR) => None,
        Err(e) => Some(Err(e.into())),
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.failed || (this.left == 0 && this.reading.is_none()) {
            return Poll::Ready(None);
        }
        let read = match this.reading.as_mut() {
            Some(reading) => {
                let done = ready!(Pin::new(reading).poll(cx));
                this.reading = None;
                done.unwrap_or_else(|e| Err(io::Error::other(format!("the read failed: {e}"))))
            }
            None => {
                let (offset, want) = (this.offset, this.left);
                let mut buf = vec![0u8; CHUNK.min(want as usize)];
                // Most blobs a mirror serves are in the page cache: read
                // them here, and only a read that would wait for the disk
                // goes to the blocking pool.
                match read_cached(&this.file, &mut buf, offset) {
                    Some(Ok(n)) => {
                        finish(buf, n, want, this.hasher.take(), &this.check, &this.file)
                    }
                    Some(Err(e)) => Err(e),
                    None => {
                        let file = this.file.clone();
                        let (hasher, check) = (this.hasher.take(), this.check.clone());
                        this.reading = Some(tokio::task::spawn_blocking(move || {
                            let n = read_blocking(&file, &mut buf, offset)?;
                            finish(buf, n, want, hasher, &check, &file)
                        }));
                        return self.poll_frame(cx);
                    }
                }
            }
        };
        Poll::Ready(Some(match read {
            Ok((chunk, hasher)) => {
                this.offset += chunk.len() as u64;
                this.left -= chunk.len() as u64;
                this.hasher = hasher;
                Ok(Frame::data(chunk))
            }
            Err(e) => {
                this.failed = true;
                Err(e)
            }
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || (self.left == 0 && self.reading.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_sealed_read_gives_its_last_chunk_only_while_the_stamp_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let check = Check::Sealed(BlobStamp::of(&file).unwrap());
        // Not the last chunk: given without a look.
        let (chunk, _) = finish(b"01234".to_vec(), 5, 10, None, &check, &file).unwrap();
        assert_eq!(&chunk[..], b"01234");
        let (chunk, _) = finish(b"56789".to_vec(), 5, 5, None, &check, &file).unwrap();
        assert_eq!(&chunk[..], b"56789");
        // Written to since (same size, its time put back): the last chunk
        // is refused.
        let mtime = file.metadata().unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        file.write_at(b"X", 0).unwrap();
        file.set_modified(mtime).unwrap();
        let err = finish(b"56789".to_vec(), 5, 5, None, &check, &file).unwrap_err();
        assert!(err.to_string().contains("changed on disk"), "{err}");
        assert!(finish(b"01234".to_vec(), 5, 10, None, &check, &file).is_ok());
    }

    #[test]
    fn a_hashed_read_refuses_a_last_chunk_that_does_not_hash_to_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"abc").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let good = Check::Hash(Digest::of(b"abc"), None);
        let hasher = Some(sha2::Sha256::new());
        assert!(finish(b"abc".to_vec(), 3, 3, hasher.clone(), &good, &file).is_ok());
        let bad = Check::Hash(Digest::of(b"abd"), None);
        assert!(finish(b"abc".to_vec(), 3, 3, hasher, &bad, &file).is_err());
    }
}
