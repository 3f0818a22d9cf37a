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
//! expected and fsyncs; only a [`VerifiedBlob`] can be committed, by a
//! no-clobber rename into `blobs/sha256/` under the exclusive cache lock
//! ([`VerifiedBlob::commit`]), the caller fsyncing `blobs/` once after a
//! batch. A partial may be *parked* between its verification and the
//! commit (see [`crate::store::partial`]). A [`Tap`] sees every byte as it
//! is written: a layer's uncompressed digest is computed on the way.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::error::{ErrorKind, IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::fs::{random_hex, read_full, Dir};
use crate::store::layout::Layout;
use crate::store::lock::{try_flock, unlock, ExclusiveGuard, LockMode};

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
        Ok((
            VerifiedBlob {
                tmp: self.tmp,
                digest,
                size,
                ino,
                partial: self.mode == Mode::Partial,
                synced: AtomicBool::new(false),
            },
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

/// A temporary whose digest and size matched, locked, ready to commit.
#[derive(Debug)]
pub struct VerifiedBlob {
    tmp: TmpFile,
    digest: Digest,
    size: u64,
    ino: u64,
    partial: bool,
    synced: AtomicBool,
}

impl VerifiedBlob {
    /// The verified digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The open file, for positioned reads (never reopened by name).
    pub fn file(&self) -> &File {
        &self.tmp.file
    }

    /// The file's path, for messages.
    pub fn path(&self) -> PathBuf {
        self.tmp.path()
    }

    /// Its bytes, read back from the open file (never through its name).
    pub fn reader(&self) -> ReadAt<'_> {
        ReadAt::new(&self.tmp.file)
    }

    /// Fsyncs the data: done for a batch before the commit takes the lock
    /// (see [`sync_all`]), and by [`VerifiedBlob::commit`] if not yet.
    pub fn sync(&self) -> MicrosandboxResult<()> {
        if !self.synced.load(Ordering::Acquire) {
            self.tmp.file.sync_all().at("fsync", &self.tmp.path())?;
            self.synced.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Renames the file into `blobs/sha256/` unless the blob is there
    /// already (then the temporary goes and the answer is false). The
    /// caller fsyncs the blobs directory once after a batch.
    pub fn commit(
        mut self,
        layout: &Layout,
        _exclusive: &ExclusiveGuard,
    ) -> MicrosandboxResult<bool> {
        self.sync()?;
        let moved = move_in(
            &self.tmp,
            layout.blobs_dir(),
            self.digest.hex(),
            "blob-before-rename",
        )?;
        if moved {
            self.tmp.unlink_on_drop = false;
        } else {
            self.tmp.unlink();
        }
        Ok(moved)
    }

    /// Fsyncs a verified partial and unlocks it, leaving it (open) for a
    /// commit, ours or another pull's: a parked file is always on disk.
    pub fn park(mut self) -> MicrosandboxResult<ParkedBlob> {
        debug_assert!(self.partial, "only partial downloads are parked");
        self.sync()?;
        self.tmp.unlink_on_drop = false;
        unlock(&self.tmp.file);
        Ok(ParkedBlob {
            tmp: self.tmp,
            digest: self.digest,
            size: self.size,
            ino: self.ino,
        })
    }
}

/// The commit's move into `blobs/` (or, for the VM artifacts, a directory
/// of `cache/vm/`): the verified file itself is linked there by its
/// descriptor (no clobbering), then its temporary name goes; a name
/// swapped in `tmp/` after the checks can never be committed. Crash points
/// around it. The one function that puts a file into `blobs/`.
pub(crate) fn move_in(
    tmp: &TmpFile,
    to: &Dir,
    to_name: &str,
    point: &str,
) -> MicrosandboxResult<bool> {
    crate::util::fault::point(point);
    let target = to.join(to_name);
    let moved = match to.link_open_file(&tmp.file, to_name) {
        Ok(linked) => {
            if linked && names_file(&tmp.dir, &tmp.name, &tmp.file)? {
                crate::util::fault::point("blob-linked-before-unlink");
                tmp.dir.remove(&tmp.name)?;
            }
            linked
        }
        // The file lost its last name (someone unlinked it in tmp/): it
        // cannot be linked, and nothing else may take its place.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MicrosandboxError::corrupt(format!(
                "{} was removed or replaced before its commit",
                tmp.path().display()
            )))
        }
        // No way to link a descriptor: the name, checked just before.
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            if !names_file(&tmp.dir, &tmp.name, &tmp.file)? {
                return Err(MicrosandboxError::corrupt(format!(
                    "{} was replaced before its commit",
                    tmp.path().display()
                )));
            }
            tmp.dir
                .rename_noreplace(&tmp.name, to, to_name)
                .at("commit to", &target)?
        }
        Err(e) => return Err(MicrosandboxError::io("commit to", &target, e)),
    };
    if moved {
        crate::util::fault::point("blob-after-rename");
    }
    Ok(moved)
}

/// Fsyncs a batch of verified blobs, several at once.
pub fn sync_all(blobs: &[VerifiedBlob]) -> MicrosandboxResult<()> {
    crate::util::par::in_parallel(blobs, VerifiedBlob::sync).map(drop)
}

/// A verified partial download, unlocked, waiting for the commit. It keeps
/// its file open: the inode cannot be freed and its number given to another
/// file, so "the name still points at this inode, at this size" proves the
/// bytes are the verified ones (nobody truncates a partial, and a writer
/// only appends to one shorter than its size).
#[derive(Debug)]
pub struct ParkedBlob {
    tmp: TmpFile,
    digest: Digest,
    size: u64,
    ino: u64,
}

impl ParkedBlob {
    /// The verified digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Takes the parked file for the commit: waits up to `timeout` for a
    /// pull that is rehashing it, then checks it is still this inode at
    /// this size. `Ok(false)`: the blob is in `blobs/` already (another
    /// pull committed it). The file stays locked until this value drops.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Busy`] when the file is gone or still held.
    pub fn hold(
        &self,
        layout: &Layout,
        _exclusive: &ExclusiveGuard,
        timeout: Duration,
    ) -> MicrosandboxResult<bool> {
        if layout.has_blob(&self.digest) {
            return Ok(false);
        }
        let gone = || {
            MicrosandboxError::new(
                ErrorKind::Busy,
                format!(
                    "the download of {} went away before its commit; pull again",
                    self.digest
                ),
            )
        };
        let path = self.tmp.path();
        let start = Instant::now();
        while !try_flock(&self.tmp.file, LockMode::Exclusive).at("lock", &path)? {
            if start.elapsed() >= timeout {
                return Err(gone());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let len = self.tmp.file.metadata().at("stat", &path)?.len();
        let named = self.tmp.dir.stat(&self.tmp.name)?.map(|s| s.st_ino);
        if named != Some(self.ino) || len != self.size {
            return Err(gone());
        }
        Ok(true)
    }

    /// Renames the held file into `blobs/sha256/` (see [`ParkedBlob::hold`]).
    /// The caller fsyncs the blobs directory after a batch.
    pub fn commit(&self, layout: &Layout, _exclusive: &ExclusiveGuard) -> MicrosandboxResult<()> {
        move_in(
            &self.tmp,
            layout.blobs_dir(),
            self.digest.hex(),
            "partial-before-rename",
        )?;
        Ok(())
    }
}

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
        let name = blob.tmp.name.clone();
        let path = layout.tmp_dir().join(&name);
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
        let name = blob.tmp.name.clone();
        let path = layout.tmp_dir().join(&name);
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
