//! The one way content enters `blobs/`: a verified write through `tmp/`.
//!
//! A [`BlobWriter`] streams into its own file in `tmp/`, hashing as it
//! writes, and holds an exclusive `flock` on that file for its whole life,
//! so prune can tell a live writer from one a crash left behind. It has
//! two modes:
//!
//! - *ingest* (`tmp/ingest-<random>`, [`BlobWriter::create`]): a load's
//!   blob; dropped uncommitted, its file is unlinked;
//! - *partial* (`tmp/partial-<hex>-<size>`, made by
//!   [`crate::store::partial::claim`]): a download that outlives its
//!   attempt; dropped, its file stays for the next attempt to resume.
//!
//! [`BlobWriter::finish`] checks size and digest against what the caller
//! expected; only a [`VerifiedBlob`] (`store/verified.rs`: the commit, and
//! the parking of a partial between its verification and the commit) can
//! enter `blobs/`. A [`Tap`] sees every byte as it is written: a layer's
//! uncompressed digest is computed on the way.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::error::{ErrorKind, IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::fs::{random_hex, read_full, Dir};
use crate::store::layout::Layout;
use crate::store::lock::{try_flock, LockMode};

pub(crate) use crate::store::verified::move_in;
pub use crate::store::verified::{sync_all, ParkedBlob, VerifiedBlob};

/// The prefix of an ingest writer's file in `tmp/`.
pub const INGEST_PREFIX: &str = "ingest-";
const CHUNK: usize = 256 * 1024;
/// How many written bytes a download hands to the disk at a time, so the
/// fsync at the end waits for little. An ingest (a load from a local
/// archive, whose reads would compete with that writeback for the disk)
/// hands its blob over once, when it ends.
const WRITEBACK: u64 = 8 << 20;

/// What sees every byte of a blob as it is written.
pub trait Tap: Send {
    /// The next bytes.
    fn update(&mut self, bytes: &[u8]);
}

/// No tap.
impl Tap for () {
    fn update(&mut self, _: &[u8]) {}
}

impl<T: Tap> Tap for Option<T> {
    fn update(&mut self, bytes: &[u8]) {
        if let Some(t) = self {
            t.update(bytes);
        }
    }
}

/// Whether a writer's file goes or stays when it is dropped uncommitted
/// (and whether it starts writeback as it goes: a partial does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ingest,
    Partial,
}

/// A file of `tmp/` and whether it goes when this value drops.
#[derive(Debug)]
pub(crate) struct TmpFile {
    pub(crate) dir: Dir,
    pub(crate) name: String,
    pub(crate) file: File,
    pub(crate) unlink_on_drop: bool,
}

impl TmpFile {
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// Unlinks it now (its lock held, so nobody goes on with its bytes).
    pub(crate) fn unlink(&mut self) {
        let _ = self.dir.remove(&self.name);
        self.unlink_on_drop = false;
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if self.unlink_on_drop {
            let _ = self.dir.remove(&self.name);
        }
    }
}

/// A write in progress in `tmp/`, locked.
pub struct BlobWriter<T: Tap = ()> {
    tmp: TmpFile,
    hasher: Sha256,
    tap: T,
    written: u64,
    handed_to_disk: u64,
    expected: Option<(Digest, u64)>,
    mode: Mode,
}

impl<T: Tap> std::fmt::Debug for BlobWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobWriter({}, {} bytes)", self.tmp.name, self.written)
    }
}

impl BlobWriter<()> {
    /// Opens a new locked temporary file in `tmp/` (ingest mode).
    pub fn create(layout: &Layout) -> MicrosandboxResult<BlobWriter<()>> {
        let tmp = layout.tmp_dir();
        loop {
            let name = format!("{INGEST_PREFIX}{}", random_hex(12));
            let file = tmp.create_new(&name).at("create", &tmp.join(&name))?;
            if !try_flock(&file, LockMode::Exclusive).at("lock", &tmp.join(&name))? {
                continue;
            }
            // A prune may have taken the file between its creation and the
            // lock; then the name is gone or names another file.
            if !names_file(tmp, &name, &file)? {
                continue;
            }
            return Ok(BlobWriter {
                tmp: TmpFile {
                    dir: tmp.clone(),
                    name,
                    file,
                    unlink_on_drop: true,
                },
                hasher: Sha256::new(),
                tap: (),
                written: 0,
                handed_to_disk: 0,
                expected: None,
                mode: Mode::Ingest,
            });
        }
    }
}

/// Whether `name` in `dir` is still the open `file`.
pub(crate) fn names_file(dir: &Dir, name: &str, file: &File) -> MicrosandboxResult<bool> {
    let ours = file.metadata().at("stat", &dir.join(name))?.ino();
    Ok(matches!(dir.stat(name)?, Some(s) if s.st_ino == ours))
}

impl<T: Tap> BlobWriter<T> {
    /// A partial-mode writer on a locked file that already holds `len`
    /// bytes: they are read and hashed (and tapped), and writing goes on
    /// after them. `Err` when the file is shorter than `len`.
    pub(crate) fn resume(
        tmp: Dir,
        name: String,
        file: File,
        len: u64,
        tap: T,
        expected: (Digest, u64),
    ) -> io::Result<BlobWriter<T>> {
        let mut w = BlobWriter {
            tmp: TmpFile {
                dir: tmp,
                name,
                file,
                unlink_on_drop: false,
            },
            hasher: Sha256::new(),
            tap,
            written: 0,
            handed_to_disk: 0,
            expected: Some(expected),
            mode: Mode::Partial,
        };
        let mut buf = vec![0u8; CHUNK];
        let mut reader = ReadAt::new(&w.tmp.file).take(len);
        loop {
            let n = read_full(&mut reader, &mut buf)?;
            if n == 0 {
                break;
            }
            w.hasher.update(&buf[..n]);
            w.tap.update(&buf[..n]);
            w.written += n as u64;
        }
        if w.written != len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        // Writing goes on after the bytes held (positioned reads left the
        // file's offset at 0).
        io::Seek::seek(&mut w.tmp.file, io::SeekFrom::Start(len))?;
        w.handed_to_disk = len;
        Ok(w)
    }

    /// Expects `digest` and `size`: more bytes than that are refused as
    /// they come, and [`BlobWriter::finish`] checks both.
    pub fn expecting(mut self, digest: &Digest, size: u64) -> Self {
        self.expected = Some((digest.clone(), size));
        self
    }

    /// The file's path, for messages.
    pub fn path(&self) -> PathBuf {
        self.tmp.path()
    }

    /// Appends bytes; past the expected size, a
    /// [`ErrorKind::DigestMismatch`] naming `what` (a partial is discarded).
    pub fn write(&mut self, bytes: &[u8], what: &str) -> MicrosandboxResult<()> {
        if let Some((_, size)) = &self.expected {
            if self.written + bytes.len() as u64 > *size {
                let size = *size;
                self.tmp.unlink();
                return Err(MicrosandboxError::new(
                    ErrorKind::DigestMismatch,
                    format!("{what}: more than the {size} bytes announced"),
                ));
            }
        }
        self.hasher.update(bytes);
        self.tap.update(bytes);
        self.written += bytes.len() as u64;
        self.tmp.file.write_all(bytes).at("write", &self.path())?;
        if self.mode == Mode::Partial && self.written - self.handed_to_disk >= WRITEBACK {
            start_writeback(
                &self.tmp.file,
                self.handed_to_disk,
                self.written - self.handed_to_disk,
            );
            self.handed_to_disk = self.written;
        }
        Ok(())
    }

    /// Streams `reader` in, reading at most one byte past the expected
    /// size, so a source that lies about its size costs no more than the
    /// size it announced. `read_error` turns a read failure of the source
    /// into the caller's kind of error.
    pub fn write_from(
        &mut self,
        reader: impl Read,
        what: &str,
        read_error: impl Fn(io::Error) -> MicrosandboxError,
    ) -> MicrosandboxResult<()> {
        let limit = self
            .expected
            .as_ref()
            .map_or(u64::MAX, |(_, s)| s.saturating_add(1));
        let mut reader = reader.take(limit);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read_full(&mut reader, &mut buf).map_err(&read_error)?;
            if n == 0 {
                return Ok(());
            }
            self.write(&buf[..n], what)?;
        }
    }

    /// Bytes held so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Whether the bytes so far are the whole expected blob.
    pub fn is_whole(&self) -> bool {
        self.expected
            .as_ref()
            .is_some_and(|(_, s)| *s == self.written)
    }

    /// The digest of the bytes so far.
    pub fn current_digest(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }

    /// Gives the write up and unlinks its file (a partial too), lock held:
    /// the next attempt starts from nothing.
    pub fn discard(mut self) {
        self.tmp.unlink();
    }

    /// Checks the size and digest against the expected ones and fsyncs;
    /// the tap comes back with the verified blob. A mismatch discards the
    /// file.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::DigestMismatch`] naming `what` when either differs.
    pub fn finish(mut self, what: &str) -> MicrosandboxResult<(VerifiedBlob, T)> {
        let (expected, size) = self
            .expected
            .clone()
            .expect("finish needs an expected digest: see expecting()");
        // Start writing back now; the fsync before the commit then waits
        // for less, and overlaps with reading what comes next.
        start_writeback(&self.tmp.file, self.handed_to_disk, 0);
        if self.written != size {
            self.tmp.unlink();
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!(
                    "{what}: size mismatch for {expected}: expected {size} bytes, got {}",
                    self.written
                ),
            ));
        }
        let digest = self.current_digest();
        if digest != expected {
            self.tmp.unlink();
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!("{what}: digest mismatch: expected {expected}, content hashes to {digest}"),
            ));
        }
        let ino = self.tmp.file.metadata().at("stat", &self.tmp.path())?.ino();
        let partial = self.mode == Mode::Partial;
        Ok((
            VerifiedBlob::new(self.tmp, digest, size, ino, partial),
            self.tap,
        ))
    }

    /// Fsyncs and names the content by the digest it hashes to, for content
    /// that arrives without one (a layer of a docker-archive); checks the
    /// size its container (a tar header) announced.
    pub fn finish_unnamed(
        mut self,
        size: u64,
        what: &str,
    ) -> MicrosandboxResult<(VerifiedBlob, T)> {
        self.expected = Some((self.current_digest(), size));
        self.finish(what)
    }
}

/// Asks the kernel to start writing `len` bytes from `offset` (0: to the
/// end) to disk without waiting, so a later fsync has less to wait for.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a hint on a descriptor this File owns; failure is harmless.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Reads an open file from its start with positioned reads, leaving the
/// file's own offset alone.
pub struct ReadAt<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> ReadAt<'a> {
    /// From the first byte.
    pub fn new(file: &'a File) -> ReadAt<'a> {
        ReadAt { file, offset: 0 }
    }
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Streams `reader` into a new temporary and verifies it against `expected`.
///
/// # Errors
///
/// [`ErrorKind::DigestMismatch`] when size or digest differ; `read_error`
/// turns a read failure of the source into the caller's kind of error.
pub fn copy_verified(
    layout: &Layout,
    reader: impl Read,
    expected: &Digest,
    expected_size: u64,
    what: &str,
    read_error: impl Fn(io::Error) -> MicrosandboxError,
) -> MicrosandboxResult<VerifiedBlob> {
    let mut writer = BlobWriter::create(layout)?.expecting(expected, expected_size);
    writer.write_from(reader, what, read_error)?;
    writer.finish(what).map(|(blob, ())| blob)
}

/// Whether a file in `tmp/` belongs to no live writer: its lock can be
/// taken. The lock is held by the returned file until it is dropped.
/// `None` when a writer holds it or the file is gone.
///
/// A file with more than one name is no writer's, and is returned
/// without being locked: either a commit died between linking its
/// temporary into `blobs/` and dropping the temporary's name (commits run
/// under the exclusive cache lock, which every caller of a sweep or a
/// census of `tmp/` excludes), or someone planted a link, which is never
/// locked or written; removing its name in `tmp/` leaves the file its
/// other name holds as it is.
pub fn stale_tmp_file(layout: &Layout, name: &str) -> MicrosandboxResult<Option<File>> {
    let Some(file) = layout.tmp_dir().open_regular(name)? else {
        return Ok(None);
    };
    let path = layout.tmp_dir().join(name);
    if crate::store::fs::refuse_links(&file, &path).is_err() {
        return Ok(Some(file));
    }
    Ok(
        if try_flock(&file, LockMode::Exclusive).at("lock", &path)? {
            Some(file)
        } else {
            None
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::layout::tests::temp as layout;
    use crate::store::lock::Exclusive;

    fn tmp_count(layout: &Layout) -> usize {
        layout.tmp_dir().entries().unwrap().len()
    }

    fn src_error(e: io::Error) -> MicrosandboxError {
        MicrosandboxError::io("read", std::path::Path::new("src"), e)
    }

    #[test]
    fn a_verified_blob_commits_under_its_digest_once() {
        let (_home, layout) = layout();
        let data = b"hello blob".repeat(1000);
        let digest = Digest::of(&data);
        let blob = copy_verified(
            &layout,
            &data[..],
            &digest,
            data.len() as u64,
            "t",
            src_error,
        )
        .unwrap();
        let mut back = Vec::new();
        blob.reader().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        let guard = layout.lock::<Exclusive>().unwrap();
        assert!(blob.commit(&layout, &guard).unwrap());
        let again = copy_verified(
            &layout,
            &data[..],
            &digest,
            data.len() as u64,
            "t",
            src_error,
        )
        .unwrap();
        // No clobbering: the second commit finds the blob and goes away.
        assert!(!again.commit(&layout, &guard).unwrap());
        let mut stored = Vec::new();
        layout
            .open_blob(&digest)
            .unwrap()
            .unwrap()
            .read_to_end(&mut stored)
            .unwrap();
        assert_eq!(stored, data);
        assert_eq!(tmp_count(&layout), 0);
    }

    #[test]
    fn mismatches_are_refused_and_leave_nothing() {
        let (_home, layout) = layout();
        let data = b"content";
        let wrong = Digest::of(b"other");
        let err = copy_verified(&layout, &data[..], &wrong, 7, "layer x", src_error).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DigestMismatch);
        assert!(err.to_string().contains("layer x"), "{err}");
        let right = Digest::of(data);
        let err = copy_verified(&layout, &data[..], &right, 3, "short", src_error).unwrap_err();
        assert!(err.to_string().contains("more than the 3 bytes"), "{err}");
        assert_eq!(tmp_count(&layout), 0);
        assert!(!layout.has_blob(&right));
        assert!(!layout.has_blob(&wrong));
    }

    #[test]
    fn a_name_swapped_in_tmp_after_the_checks_is_never_committed() {
        let (_home, layout) = layout();
        let data = b"verified bytes".repeat(100);
        let digest = Digest::of(&data);
        let blob = copy_verified(
            &layout,
            &data[..],
            &digest,
            data.len() as u64,
            "t",
            src_error,
        )
        .unwrap();
        // An attacker in the home swaps the temporary's name for a file of
        // their own, after verification, before the commit: the commit
        // fails and the swapped file is not committed.
        let path = blob.path();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"EVIL").unwrap();
        let guard = layout.lock::<Exclusive>().unwrap();
        let err = blob.commit(&layout, &guard).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CorruptCache, "{err}");
        assert!(!layout.has_blob(&digest));
        // Renamed away instead (its name swapped, the file alive): the
        // verified file itself is what lands in blobs/.
        let blob = copy_verified(
            &layout,
            &data[..],
            &digest,
            data.len() as u64,
            "t",
            src_error,
        )
        .unwrap();
        let path = blob.path();
        std::fs::rename(&path, layout.tmp_dir().join("moved-away")).unwrap();
        std::fs::write(&path, b"EVIL").unwrap();
        assert!(blob.commit(&layout, &guard).unwrap());
        let mut stored = Vec::new();
        layout
            .open_blob(&digest)
            .unwrap()
            .unwrap()
            .read_to_end(&mut stored)
            .unwrap();
        assert_eq!(stored, data);
    }

    #[test]
    fn a_live_writer_is_not_stale_and_a_dead_one_is() {
        let (_home, layout) = layout();
        let writer = BlobWriter::create(&layout).unwrap();
        let name = writer.tmp.name.clone();
        assert!(stale_tmp_file(&layout, &name).unwrap().is_none());
        // A crashed writer: the file stays, its lock is gone.
        let mut w = writer;
        w.tmp.unlink_on_drop = false; // keeps the file, as a crash would
        drop(w);
        assert!(layout.tmp_dir().stat(&name).unwrap().is_some());
        assert!(stale_tmp_file(&layout, &name).unwrap().is_some());
    }
}
