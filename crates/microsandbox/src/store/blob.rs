//! Verified writes: the only way content enters `blobs/`.
//!
//! A [`BlobWriter`] streams into its own file in `tmp/`, hashing as it
//! writes, and holds an exclusive `flock` on that file for its whole life
//! so prune can tell a live writer from one a crash left behind.
//! [`BlobWriter::finish`] fsyncs and checks size and digest against the
//! descriptor the caller expected; only a [`VerifiedBlob`] can be
//! committed, by a rename into `blobs/sha256/` under the caller's exclusive
//! cache lock. Whatever is dropped uncommitted is unlinked.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{ErrorKind, IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::fs::random_hex;
use crate::store::layout::Layout;
use crate::store::lock::{try_flock, LockMode};
use crate::transfer::progress::{Phase, ProgressFn, ProgressReader};

/// The prefix of every writer's file in `tmp/`.
pub const INGEST_PREFIX: &str = "ingest-";
const CHUNK: usize = 256 * 1024;

/// A write in progress in `tmp/`.
#[derive(Debug)]
pub struct BlobWriter {
    file: File,
    path: PathBuf,
    hasher: Sha256,
    written: u64,
    committed: bool,
}

/// A temporary whose digest and size matched; ready to commit once synced.
#[derive(Debug)]
pub struct VerifiedBlob {
    writer: BlobWriter,
    digest: Digest,
    synced: std::sync::atomic::AtomicBool,
}

impl BlobWriter {
    /// Opens a new locked temporary file in `tmp/`.
    pub fn create(layout: &Layout) -> MicrosandboxResult<BlobWriter> {
        loop {
            let path = layout
                .tmp_dir()
                .join(format!("{INGEST_PREFIX}{}", random_hex(12)));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .at("create", &path)?;
            if !try_flock(&file, LockMode::Exclusive).at("lock", &path)? {
                continue;
            }
            // A prune may have taken the file between its creation and the
            // lock; then the name is gone or names another file.
            let ours = file.metadata().at("stat", &path)?.ino();
            match fs::metadata(&path) {
                Ok(m) if m.ino() == ours => {}
                _ => continue,
            }
            return Ok(BlobWriter {
                file,
                path,
                hasher: Sha256::new(),
                written: 0,
                committed: false,
            });
        }
    }

    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> MicrosandboxResult<()> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        self.file.write_all(bytes).at("write", &self.path)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Fsyncs, then checks the size and the digest.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::DigestMismatch`] naming `what` when either differs.
    pub fn finish(
        mut self,
        expected: &Digest,
        expected_size: u64,
        what: &str,
    ) -> MicrosandboxResult<VerifiedBlob> {
        // Start writing back now; the fsync before the commit then waits
        // for less, and overlaps with reading what comes next.
        start_writeback(&self.file);
        if self.written != expected_size {
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!(
                    "{what}: size mismatch for {expected}: expected {expected_size} bytes, got {}",
                    self.written
                ),
            ));
        }
        let hasher = std::mem::take(&mut self.hasher);
        let digest = Digest::from_hasher(hasher);
        if &digest != expected {
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!("{what}: digest mismatch: expected {expected}, content hashes to {digest}"),
            ));
        }
        Ok(VerifiedBlob {
            writer: self,
            digest,
            synced: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

fn start_writeback(file: &File) {
    start_writeback_range(file, 0, 0);
}

/// Asks the kernel to start writing `len` bytes from `offset` (0: to the
/// end) to disk without waiting, so a later fsync has less to wait for.
#[cfg(target_os = "linux")]
pub fn start_writeback_range(file: &File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a hint on a descriptor this File owns; failure is harmless.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Asks the kernel to start writing a range to disk (a no-op here).
#[cfg(not(target_os = "linux"))]
pub fn start_writeback_range(_file: &File, _offset: u64, _len: u64) {}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl BlobWriter {
    /// Fsyncs and names the content by the digest it hashes to, for content
    /// that arrives without one (a layer of a docker-archive). Checks the
    /// size the container of the content (a tar header) announced.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::DigestMismatch`] naming `what` when the size differs.
    pub fn finish_unnamed(
        self,
        expected_size: u64,
        what: &str,
    ) -> MicrosandboxResult<VerifiedBlob> {
        let digest = Digest::from_hasher(self.hasher.clone());
        self.finish(&digest, expected_size, what)
    }
}

impl VerifiedBlob {
    /// The verified digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.writer.written
    }

    /// The temporary file, for reading before the commit.
    pub fn path(&self) -> &Path {
        &self.writer.path
    }

    /// Fsyncs the data: done for a batch before the commit takes the lock
    /// (see [`sync_all`]), and by [`VerifiedBlob::commit`] if not yet.
    pub fn sync(&self) -> MicrosandboxResult<()> {
        use std::sync::atomic::Ordering;
        if !self.synced.load(Ordering::Acquire) {
            self.writer.file.sync_all().at("fsync", &self.writer.path)?;
            self.synced.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Renames the file into `blobs/sha256/`. The caller holds the exclusive
    /// cache lock and fsyncs the blobs directory once after a batch.
    /// Returns false when the blob was there already (the temporary goes).
    pub fn commit(mut self, layout: &Layout) -> MicrosandboxResult<bool> {
        self.sync()?;
        let target = layout.blob_path(&self.digest);
        if target.is_file() {
            return Ok(false);
        }
        crate::util::fault::point("blob-before-rename");
        fs::rename(&self.writer.path, &target).at("commit blob to", &target)?;
        self.writer.committed = true;
        crate::util::fault::point("blob-after-rename");
        Ok(true)
    }
}

/// Fsyncs a batch of verified blobs, several at once.
pub fn sync_all(blobs: &[VerifiedBlob]) -> MicrosandboxResult<()> {
    crate::util::par::in_parallel(blobs, VerifiedBlob::sync).map(drop)
}

/// Streams `reader` into a new temporary and verifies it against `expected`.
/// Reads at most one byte past the announced size, so a source that lies
/// about its size costs no more than the size it announced.
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
    let mut writer = BlobWriter::create(layout)?;
    let mut reader = reader.take(expected_size.saturating_add(1));
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        writer.write(&buf[..n])?;
    }
    writer.finish(expected, expected_size, what)
}

/// Whether a media type names an uncompressed tar layer.
fn is_plain_tar(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

/// The digest of a layer's uncompressed content, told by the content, not
/// by the label: gzip (by its magic) is decompressed and hashed; a tar
/// (`ustar` magic, or labelled a plain tar) is its own digest. `None` for
/// what cannot be checked here (zstd, unknown).
///
/// # Errors
///
/// [`ErrorKind::InvalidArchive`] naming `what` for a corrupt gzip stream.
pub fn uncompressed_digest(
    path: &Path,
    stored: &Digest,
    media_type: &str,
    what: &str,
    progress: Option<&ProgressFn>,
    limit: u64,
) -> MicrosandboxResult<Option<Digest>> {
    let read_all = |reader: &mut dyn Read, digester: &mut LayerDigester, upto: Option<usize>| {
        let mut buf = vec![0u8; upto.unwrap_or(CHUNK)];
        let mut got = 0;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    digester.update(&buf[..n]);
                    got += n;
                    if upto.is_some_and(|u| got >= u) {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(MicrosandboxError::io("read", path, e)),
            }
        }
    };
    // The first bytes tell the kind; only gzip needs the rest, read again
    // from the start with progress.
    let mut file = File::open(path).at("open", path)?;
    let mut digester = LayerDigester::new(media_type, limit);
    read_all(&mut file, &mut digester, Some(512))?;
    if !digester.is_gzip() {
        return digester.finish(stored, what);
    }
    file.seek(SeekFrom::Start(0)).at("seek", path)?;
    let size = file.metadata().at("stat", path)?.len();
    let mut reader = ProgressReader::new(
        file,
        progress.cloned(),
        Phase::Verify,
        Some(stored.to_string()),
        Some(size),
    );
    let mut digester = LayerDigester::new(media_type, limit);
    read_all(&mut reader, &mut digester, None)?;
    digester.finish(stored, what)
}

/// The most bytes a layer may decompress to before it is refused as a
/// decompression bomb, unless the caller sets its own limit (64 GiB).
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 64 << 30;

fn bomb(what: &str, stored: &Digest, limit: u64) -> MicrosandboxError {
    MicrosandboxError::new(
        ErrorKind::InvalidArchive,
        format!("{what}: layer {stored} decompresses to more than {limit} bytes (the limit)"),
    )
}

/// A layer's uncompressed digest, computed as its bytes stream by (a
/// download), with the same rules as [`uncompressed_digest`]: gzip (by its
/// magic) is decompressed and hashed, a tar is its own digest, anything
/// else cannot be checked here.
pub struct LayerDigester {
    media_type: String,
    limit: u64,
    head: Vec<u8>,
    state: DigesterState,
}

enum DigesterState {
    /// Fewer bytes than it takes to tell the kind.
    Sniffing,
    Gzip(Box<flate2::write::MultiGzDecoder<HashSink>>),
    Tar,
    Unknown,
    Corrupt(String),
}

/// A `Write` that hashes what it is given, up to a limit.
struct HashSink {
    hasher: Sha256,
    left: u64,
}

/// The message a [`HashSink`] over its limit fails with.
const OVER_LIMIT: &str = "over the decompression limit";

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len() as u64;
        if n > self.left {
            return Err(io::Error::other(OVER_LIMIT));
        }
        self.left -= n;
        self.hasher.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes it takes to see a tar header's `ustar` magic.
const SNIFF: usize = 262;

impl LayerDigester {
    /// A digester for a layer of `media_type` that refuses to decompress
    /// more than `limit` bytes.
    pub fn new(media_type: &str, limit: u64) -> LayerDigester {
        LayerDigester {
            media_type: media_type.to_owned(),
            limit,
            head: Vec::new(),
            state: DigesterState::Sniffing,
        }
    }

    /// Takes the next bytes of the layer.
    pub fn update(&mut self, bytes: &[u8]) {
        if let DigesterState::Sniffing = self.state {
            let want = (SNIFF - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..want]);
            if self.head.len() >= 2 && self.head.starts_with(&[0x1f, 0x8b]) {
                let head = std::mem::take(&mut self.head);
                self.state =
                    DigesterState::Gzip(Box::new(flate2::write::MultiGzDecoder::new(HashSink {
                        hasher: Sha256::new(),
                        left: self.limit,
                    })));
                self.feed(&head);
                self.feed(&bytes[want..]);
                return;
            }
            if self.head.len() < SNIFF {
                return;
            }
            self.decide();
            return;
        }
        self.feed(bytes);
    }

    /// Whether the bytes so far are a gzip stream.
    pub fn is_gzip(&self) -> bool {
        matches!(
            self.state,
            DigesterState::Gzip(_) | DigesterState::Corrupt(_)
        )
    }

    fn decide(&mut self) {
        let ustar = self.head.get(257..262) == Some(b"ustar".as_slice());
        self.state = if ustar || is_plain_tar(&self.media_type) {
            DigesterState::Tar
        } else {
            DigesterState::Unknown
        };
    }

    fn feed(&mut self, bytes: &[u8]) {
        if let DigesterState::Gzip(gz) = &mut self.state {
            if let Err(e) = gz.write_all(bytes) {
                self.state = DigesterState::Corrupt(e.to_string());
            }
        }
    }

    /// The uncompressed digest; `stored` is the layer's own digest (a tar's
    /// uncompressed digest). `None` when it cannot be told.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArchive`] naming `what` for a corrupt gzip stream.
    pub fn finish(mut self, stored: &Digest, what: &str) -> MicrosandboxResult<Option<Digest>> {
        if let DigesterState::Sniffing = self.state {
            self.decide();
        }
        let corrupt = |e: String| {
            MicrosandboxError::new(
                ErrorKind::InvalidArchive,
                format!("{what}: corrupt gzip layer {stored}: {e}"),
            )
        };
        let limit = self.limit;
        let fail = |e: String| {
            if e.contains(OVER_LIMIT) {
                bomb(what, stored, limit)
            } else {
                corrupt(e)
            }
        };
        match self.state {
            DigesterState::Gzip(mut gz) => {
                gz.try_finish().map_err(|e| fail(e.to_string()))?;
                let sink = gz.finish().map_err(|e| fail(e.to_string()))?;
                Ok(Some(Digest::from_hasher(sink.hasher)))
            }
            DigesterState::Tar => Ok(Some(stored.clone())),
            DigesterState::Unknown | DigesterState::Sniffing => Ok(None),
            DigesterState::Corrupt(e) => Err(fail(e)),
        }
    }
}

/// Checks a layer's uncompressed digest against its config's `diff_id`.
///
/// # Errors
///
/// [`ErrorKind::DigestMismatch`] naming `what` when they differ.
pub fn check_diff_id(
    uncompressed: Option<&Digest>,
    diff_id: &Digest,
    what: &str,
) -> MicrosandboxResult<()> {
    match uncompressed {
        Some(actual) if actual != diff_id => Err(MicrosandboxError::new(
            ErrorKind::DigestMismatch,
            format!(
                "{what}: uncompressed content hashes to {actual}, the config's diff_id is {diff_id}"
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether a file in `tmp/` belongs to no live writer: its lock can be taken.
/// The lock is held by the returned file until it is dropped.
pub fn stale_tmp_file(path: &Path) -> io::Result<Option<File>> {
    let file = File::open(path)?;
    Ok(if try_flock(&file, LockMode::Exclusive)? {
        Some(file)
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::layout::tests::temp as layout;

    fn tmp_count(layout: &Layout) -> usize {
        fs::read_dir(layout.tmp_dir()).unwrap().count()
    }

    #[test]
    fn a_verified_blob_commits_under_its_digest() {
        let (_home, layout) = layout();
        let data = b"hello blob".repeat(1000);
        let digest = Digest::of(&data);
        let blob = copy_verified(&layout, &data[..], &digest, data.len() as u64, "t", |e| {
            MicrosandboxError::io("read", Path::new("src"), e)
        })
        .unwrap();
        assert!(blob.commit(&layout).unwrap());
        assert_eq!(fs::read(layout.blob_path(&digest)).unwrap(), data);
        assert_eq!(tmp_count(&layout), 0);
    }

    #[test]
    fn mismatches_are_refused_and_leave_nothing() {
        let (_home, layout) = layout();
        let data = b"content";
        let wrong = Digest::of(b"other");
        let err = copy_verified(&layout, &data[..], &wrong, 7, "layer x", |e| {
            MicrosandboxError::io("read", Path::new("src"), e)
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DigestMismatch);
        assert!(err.to_string().contains("layer x"), "{err}");
        let right = Digest::of(data);
        let err = copy_verified(&layout, &data[..], &right, 3, "short", |e| {
            MicrosandboxError::io("read", Path::new("src"), e)
        })
        .unwrap_err();
        assert!(err.to_string().contains("size mismatch"), "{err}");
        assert_eq!(tmp_count(&layout), 0);
        assert!(!layout.has_blob(&right));
        assert!(!layout.has_blob(&wrong));
    }

    #[test]
    fn the_streaming_digester_agrees_with_the_file_one() {
        use std::io::Write as _;
        let (_home, layout) = layout();
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gzip = gz.finish().unwrap();
        let mut truncated = gzip.clone();
        truncated.truncate(gzip.len() - 6);
        let cases: [(&[u8], &str); 5] = [
            (&gzip, "application/vnd.oci.image.layer.v1.tar+gzip"),
            (&tar, "application/vnd.oci.image.layer.v1.tar"),
            (b"zstd?", "application/vnd.oci.image.layer.v1.tar+zstd"),
            (b"x", "application/vnd.oci.image.layer.v1.tar"),
            (&truncated, "application/vnd.oci.image.layer.v1.tar+gzip"),
        ];
        for (bytes, media_type) in cases {
            let stored = Digest::of(bytes);
            let path = layout.tmp_dir().join("layer");
            fs::write(&path, bytes).unwrap();
            let from_file = uncompressed_digest(
                &path,
                &stored,
                media_type,
                "t",
                None,
                DEFAULT_MAX_LAYER_BYTES,
            );
            // Fed in small, uneven pieces, as a download comes.
            let mut d = LayerDigester::new(media_type, DEFAULT_MAX_LAYER_BYTES);
            for piece in bytes.chunks(7) {
                d.update(piece);
            }
            let streamed = d.finish(&stored, "t");
            match (from_file, streamed) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{media_type}"),
                (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind()),
                (a, b) => panic!("{media_type}: {a:?} vs {b:?}"),
            }
        }
        let mut d = LayerDigester::new(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            DEFAULT_MAX_LAYER_BYTES,
        );
        d.update(&truncated);
        let err = d.finish(&Digest::of(&truncated), "layer 2").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArchive);
        assert!(err.to_string().contains("layer 2"), "{err}");
    }

    #[test]
    fn a_live_writer_is_not_stale_and_a_dead_one_is() {
        let (_home, layout) = layout();
        let writer = BlobWriter::create(&layout).unwrap();
        let path = writer.path.clone();
        assert!(stale_tmp_file(&path).unwrap().is_none());
        // A crashed writer: the file stays, its lock is gone.
        let mut w = writer;
        w.committed = true; // keeps the file on drop, as a crash would
        drop(w);
        assert!(path.exists());
        assert!(stale_tmp_file(&path).unwrap().is_some());
    }
}
