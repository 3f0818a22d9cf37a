//! Downloads that outlive an attempt: `tmp/partial-<hex>-<size>`, one file
//! per blob, named by the digest its content must hash to and the size its
//! manifest declares.
//!
//! Whoever downloads a blob holds an exclusive `flock` on its partial file.
//! Another pull of the same blob, in this process or another, waits for
//! that lock, then finds the blob whole (it rehashes the file instead of
//! downloading it again) or half done (it goes on from where the bytes
//! stop). A cut transfer, a failed pull or a killed process thus leaves its
//! bytes to the next attempt.
//!
//! A verified partial is *parked*: it stays in `tmp/`, unlocked and never
//! written again, until a pull commits it into `blobs/` by a rename under
//! the exclusive cache lock. A partial that must start over is unlinked and
//! created anew, never truncated, so a parked file's inode always holds the
//! verified bytes; the pull that parked it keeps it open until the commit,
//! so its inode cannot be freed and reused. Prune keeps the partials of
//! blobs that an unexpired lease pins (a running pull's) and sweeps the
//! rest with `tmp/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::error::{ErrorKind, IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::blob::{start_writeback_range, LayerDigester};
use crate::store::layout::Layout;
use crate::store::lock::{try_flock, LockMode};

/// The prefix of partial downloads in `tmp/`.
pub const PARTIAL_PREFIX: &str = "partial-";
/// How often a pull waiting for another one's download looks again.
const POLL: Duration = Duration::from_millis(50);
const CHUNK: usize = 256 * 1024;
/// How many written bytes are handed to the disk at a time, so the fsync
/// at the end waits for little.
const WRITEBACK: u64 = 8 << 20;

/// The digest a `tmp/` file name stands for, if it is a partial download's.
pub fn digest_of_name(name: &str) -> Option<Digest> {
    let rest = name.strip_prefix(PARTIAL_PREFIX)?;
    let (hex, size) = rest.split_once('-')?;
    size.parse::<u64>().ok()?;
    Digest::from_hex(hex).ok()
}

/// `tmp/partial-<hex>-<size>`: the declared size is part of the name, so a
/// manifest that declares another size for the same digest (a lie, or an
/// error) works on a file of its own and never touches this one.
fn path_of(layout: &Layout, digest: &Digest, size: u64) -> PathBuf {
    layout
        .tmp_dir()
        .join(format!("{PARTIAL_PREFIX}{}-{size}", digest.hex()))
}

/// What a claim on a blob finds.
pub enum Claim {
    /// The blob is in `blobs/` already.
    Present,
    /// The partial download is ours to go on with.
    Mine(Box<PartialWriter>),
}

/// A locked partial download, with the bytes it holds hashed.
#[derive(Debug)]
pub struct PartialWriter {
    file: File,
    path: PathBuf,
    hasher: Sha256,
    /// For a layer: its uncompressed digest, computed on the way.
    layer: Option<LayerDigester>,
    written: u64,
    handed_to_disk: u64,
    digest: Digest,
    size: u64,
}

impl std::fmt::Debug for LayerDigester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerDigester")
    }
}

/// A verified partial download, still locked.
#[derive(Debug)]
pub struct VerifiedPartial {
    writer: PartialWriter,
    ino: u64,
    uncompressed: Option<MicrosandboxResult<Option<Digest>>>,
}

/// A verified partial download, unlocked, waiting for the commit. It keeps
/// its file open: the inode cannot be freed and its number given to another
/// file, so "the name still points at this inode, at this size" proves the
/// bytes are the verified ones (nobody truncates a partial, and a writer
/// only appends to one shorter than its size).
#[derive(Debug)]
pub struct ParkedBlob {
    file: File,
    path: PathBuf,
    digest: Digest,
    size: u64,
    ino: u64,
}

/// Claims the partial download of `digest`: waits while another pull holds
/// it, calling `waiting` at each look, and hashes the bytes it already has.
/// A file longer than `size`, or as long but with other content, starts
/// over. With `layer` (a media type and a decompression limit), the writer
/// also computes the layer's uncompressed digest as bytes arrive.
///
/// # Errors
///
/// [`ErrorKind::Io`] when `tmp/` cannot be used; whatever `waiting` returns.
pub fn claim(
    layout: &Layout,
    digest: &Digest,
    size: u64,
    layer: Option<(&str, u64)>,
    mut waiting: impl FnMut() -> MicrosandboxResult<()>,
) -> MicrosandboxResult<Claim> {
    let path = path_of(layout, digest, size);
    loop {
        if layout.has_blob(digest) {
            return Ok(Claim::Present);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .at("open", &path)?;
        if !try_flock(&file, LockMode::Exclusive).at("lock", &path)? {
            drop(file);
            waiting()?;
            std::thread::sleep(POLL);
            continue;
        }
        // The name may have moved on while we waited for the lock: into
        // blobs/ by a commit, or away by a prune or a restart.
        let meta = file.metadata().at("stat", &path)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.ino() == meta.ino() && m.is_file() => {}
            _ => continue,
        }
        // Committed by another pull between the first look and the lock.
        if layout.has_blob(digest) {
            if meta.len() == 0 {
                let _ = fs::remove_file(&path);
            }
            return Ok(Claim::Present);
        }
        let mut writer = PartialWriter {
            file,
            path: path.clone(),
            hasher: Sha256::new(),
            layer: layer.map(|(media_type, limit)| LayerDigester::new(media_type, limit)),
            written: 0,
            handed_to_disk: 0,
            digest: digest.clone(),
            size,
        };
        if meta.len() > size || writer.absorb(meta.len()).is_err() {
            writer.discard();
            continue;
        }
        if writer.written == size && writer.current_digest() != *digest {
            writer.discard();
            continue;
        }
        return Ok(Claim::Mine(Box::new(writer)));
    }
}

impl PartialWriter {
    /// Hashes the first `len` bytes the file holds, and appends after them.
    fn absorb(&mut self, len: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; CHUNK];
        let mut reader = (&self.file).take(len);
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.hasher.update(&buf[..n]);
                    if let Some(layer) = &mut self.layer {
                        layer.update(&buf[..n]);
                    }
                    self.written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written != len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        self.file.seek(SeekFrom::Start(len))?;
        self.handed_to_disk = len;
        Ok(())
    }

    fn current_digest(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }

    /// Unlinks the file, lock held, so that nobody goes on with its bytes.
    fn discard(&self) {
        let _ = fs::remove_file(&self.path);
    }

    /// Bytes held so far: where the download goes on from.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The size the blob must have.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the bytes so far are the whole blob.
    pub fn is_whole(&self) -> bool {
        self.written == self.size
    }

    /// Gives the partial up and unlinks it (lock held, so nobody goes on
    /// with its bytes): the next claim starts from nothing. Used when a
    /// server ignores a range.
    pub fn abandon(self) {
        self.discard();
    }

    /// Appends bytes; more than the blob's size is a [`ErrorKind::DigestMismatch`]
    /// naming `what` (the partial is discarded).
    pub fn write(&mut self, bytes: &[u8], what: &str) -> MicrosandboxResult<()> {
        if self.written + bytes.len() as u64 > self.size {
            self.discard();
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!("{what}: more than the {} bytes announced", self.size),
            ));
        }
        self.hasher.update(bytes);
        if let Some(layer) = &mut self.layer {
            layer.update(bytes);
        }
        self.written += bytes.len() as u64;
        self.file.write_all(bytes).at("write", &self.path)?;
        if self.written - self.handed_to_disk >= WRITEBACK {
            let len = self.written - self.handed_to_disk;
            start_writeback_range(&self.file, self.handed_to_disk, len);
            self.handed_to_disk = self.written;
        }
        Ok(())
    }

    /// Checks size and digest and fsyncs, lock held. A mismatch discards
    /// the partial: the next attempt starts from nothing.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::DigestMismatch`] naming `what`.
    pub fn finish(mut self, what: &str) -> MicrosandboxResult<VerifiedPartial> {
        if self.written != self.size {
            self.discard();
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!(
                    "{what}: size mismatch for {}: expected {} bytes, got {}",
                    self.digest, self.size, self.written
                ),
            ));
        }
        let actual = self.current_digest();
        if actual != self.digest {
            self.discard();
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!(
                    "{what}: digest mismatch: expected {}, content hashes to {actual}",
                    self.digest
                ),
            ));
        }
        self.file.sync_all().at("fsync", &self.path)?;
        let ino = self.file.metadata().at("stat", &self.path)?.ino();
        let uncompressed = self.layer.take().map(|l| l.finish(&self.digest, what));
        Ok(VerifiedPartial {
            writer: self,
            ino,
            uncompressed,
        })
    }
}

impl VerifiedPartial {
    /// The file, locked: safe to read until [`VerifiedPartial::park`].
    pub fn path(&self) -> &Path {
        &self.writer.path
    }

    /// The layer's uncompressed digest, when the claim asked for it.
    pub fn take_uncompressed(&mut self) -> Option<MicrosandboxResult<Option<Digest>>> {
        self.uncompressed.take()
    }

    /// Unlocks the file, leaving it for a commit (ours or another pull's);
    /// the file stays open.
    pub fn park(self) -> ParkedBlob {
        let writer = self.writer;
        unlock(&writer.file);
        ParkedBlob {
            file: writer.file,
            path: writer.path,
            digest: writer.digest,
            size: writer.size,
            ino: self.ino,
        }
    }
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
    /// pull committed it). The caller holds the exclusive cache lock; the
    /// file stays locked until this value is dropped.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Busy`] when the file is gone or still held.
    pub fn hold(&self, layout: &Layout, timeout: Duration) -> MicrosandboxResult<bool> {
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
        let start = Instant::now();
        while !try_flock(&self.file, LockMode::Exclusive).at("lock", &self.path)? {
            if start.elapsed() >= timeout {
                return Err(gone());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let len = self.file.metadata().at("stat", &self.path)?.len();
        let named = fs::symlink_metadata(&self.path).map(|m| m.ino()).ok();
        if named != Some(self.ino) || len != self.size {
            return Err(gone());
        }
        Ok(true)
    }

    /// Renames the held file into `blobs/sha256/` (see [`ParkedBlob::hold`]).
    /// The caller fsyncs the blobs directory after a batch.
    pub fn commit(&self, layout: &Layout) -> MicrosandboxResult<()> {
        let target = layout.blob_path(&self.digest);
        crate::util::fault::point("partial-before-rename");
        fs::rename(&self.path, &target).at("commit blob to", &target)
    }
}

/// Releases a file's flock, keeping the file open.
fn unlock(file: &File) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: an flock call on a descriptor this File owns.
    unsafe {
        libc::flock(file.as_raw_fd(), libc::LOCK_UN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::layout::tests::temp as layout;

    fn mine(c: Claim) -> PartialWriter {
        match c {
            Claim::Mine(w) => *w,
            Claim::Present => panic!("the blob is present"),
        }
    }

    #[test]
    fn a_partial_resumes_and_commits() {
        let (_home, layout) = layout();
        let data = b"0123456789".repeat(1000);
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        let mut w = mine(claim(&layout, &digest, size, None, || Ok(())).unwrap());
        w.write(&data[..4000], "t").unwrap();
        drop(w); // an attempt that stops midway
        let mut w = mine(claim(&layout, &digest, size, None, || Ok(())).unwrap());
        assert_eq!(w.written(), 4000);
        w.write(&data[4000..], "t").unwrap();
        let parked = w.finish("t").unwrap().park();
        // Another claim finds the parked file whole and verified.
        let again = mine(claim(&layout, &digest, size, None, || Ok(())).unwrap());
        assert!(again.is_whole());
        drop(again);
        assert!(parked.hold(&layout, Duration::from_secs(1)).unwrap());
        parked.commit(&layout).unwrap();
        drop(parked);
        assert_eq!(fs::read(layout.blob_path(&digest)).unwrap(), data);
        assert!(matches!(
            claim(&layout, &digest, size, None, || Ok(())).unwrap(),
            Claim::Present
        ));
        assert_eq!(fs::read_dir(layout.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_held_partial_makes_others_wait_and_bad_bytes_start_over() {
        let (_home, layout) = layout();
        let data = b"abc".repeat(100);
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        let w = mine(claim(&layout, &digest, size, None, || Ok(())).unwrap());
        let mut looks = 0;
        let err = claim(&layout, &digest, size, None, || {
            looks += 1;
            if looks == 3 {
                Err(MicrosandboxError::new(ErrorKind::Busy, "stop"))
            } else {
                Ok(())
            }
        })
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::Busy);
        drop(w);
        // Whole-sized but wrong content: the claim starts from nothing.
        fs::write(path_of(&layout, &digest, size), vec![b'x'; data.len()]).unwrap();
        let mut w = mine(claim(&layout, &digest, size, None, || Ok(())).unwrap());
        assert_eq!(w.written(), 0);
        // Too many bytes are refused, and the partial goes.
        let err = w.write(&[0u8; 301], "layer 0").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DigestMismatch);
        assert!(!path_of(&layout, &digest, size).exists());
    }

    #[test]
    fn a_parked_download_survives_pulls_that_declare_another_size() {
        // Found in review: a pull declaring size - 1 used to unlink the
        // parked file, and the next file there could get the same inode
        // number and pass the commit's checks with other bytes.
        let (_home, layout) = layout();
        let data = b"parked".repeat(500);
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        let mut w = mine(claim(&layout, &digest, size, None, || Ok(())).unwrap());
        w.write(&data, "t").unwrap();
        let parked = w.finish("t").unwrap().park();
        // Another manifest lies about the size: it gets a file of its own.
        let mut liar = mine(claim(&layout, &digest, size - 1, None, || Ok(())).unwrap());
        assert_eq!(liar.written(), 0);
        liar.write(&vec![b'z'; data.len() - 1], "t").unwrap();
        drop(liar);
        let mut longer = mine(claim(&layout, &digest, size + 1, None, || Ok(())).unwrap());
        longer.write(b"q", "t").unwrap();
        drop(longer);
        // The parked bytes are untouched and commit as verified.
        assert!(parked.hold(&layout, Duration::from_secs(1)).unwrap());
        parked.commit(&layout).unwrap();
        drop(parked);
        assert_eq!(fs::read(layout.blob_path(&digest)).unwrap(), data);
        // A parked file whose name now points elsewhere is refused.
        let other = b"other".repeat(10);
        let od = Digest::of(&other);
        let mut w = mine(claim(&layout, &od, other.len() as u64, None, || Ok(())).unwrap());
        w.write(&other, "t").unwrap();
        let parked = w.finish("t").unwrap().park();
        let path = path_of(&layout, &od, other.len() as u64);
        fs::remove_file(&path).unwrap();
        fs::write(&path, &other).unwrap();
        let err = parked.hold(&layout, Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy);
    }

    #[test]
    fn a_mismatch_discards_the_partial() {
        let (_home, layout) = layout();
        let digest = Digest::of(b"right");
        let mut w = mine(claim(&layout, &digest, 5, None, || Ok(())).unwrap());
        w.write(b"wrong", "t").unwrap();
        let err = w.finish("layer 1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DigestMismatch);
        assert!(err.to_string().contains("layer 1"), "{err}");
        assert!(!path_of(&layout, &digest, 5).exists());
        assert_eq!(
            digest_of_name(&format!("{PARTIAL_PREFIX}{}-5", digest.hex())),
            Some(digest)
        );
        assert_eq!(digest_of_name("ingest-abc"), None);
    }
}
