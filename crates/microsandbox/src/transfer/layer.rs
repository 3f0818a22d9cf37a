//! Layers: decompression and the diff_id check. A layer's uncompressed
//! digest is told by its content, not its label (gzip and zstd by their
//! magic, a tar by its `ustar` header), computed as the blob streams in (a
//! [`LayerDigester`] is the blob writer's tap) or from a file, and bounded:
//! a compressed layer that inflates past the limit is a decompression bomb.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::error::{ErrorKind, IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::blob::{ReadAt, Tap};
use crate::store::fs::read_full;
use crate::transfer::progress::{Phase, ProgressFn, ProgressReader};
use crate::transfer::zstd_stream::{is_zstd, ZstdWriter};

const CHUNK: usize = 256 * 1024;

/// Whether a media type names an uncompressed tar layer.
fn is_plain_tar(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

/// A compression a layer (or an archive) may come in, told by its first
/// bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip (RFC 1952), one member or several.
    Gzip,
    /// zstd (RFC 8878), one frame or several, skippable frames included.
    Zstd,
}

impl Compression {
    /// The compression whose magic `head` opens with (4 bytes tell both).
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if is_zstd(head) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The OCI media type of a tar layer in this compression.
    pub fn oci_layer_media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// The digest of a layer's uncompressed content, told by the content, not
/// by the label: gzip and zstd (by their magic) are decompressed and
/// hashed; a tar (`ustar` magic, or labelled a plain tar) is its own
/// digest. `None` for what cannot be checked here (an unknown kind). `file` is read with
/// positioned reads (a cache blob, or a verified temporary); `path` names
/// it in messages.
///
/// The uncompressed bytes also feed `sink` (then the whole file is read,
/// whatever its kind).
///
/// # Errors
///
/// [`ErrorKind::InvalidArchive`] naming `what` for a corrupt compressed
/// stream, or one that inflates past `limit`.
#[allow(clippy::too_many_arguments)]
pub fn feed_layer(
    file: &File,
    path: &Path,
    stored: &Digest,
    media_type: &str,
    what: &str,
    progress: Option<&ProgressFn>,
    limit: u64,
    sink: Option<Box<dyn LayerSink>>,
) -> MicrosandboxResult<Fed> {
    let feed = |reader: &mut dyn Read, tap: &mut LayerTap, upto: Option<u64>| {
        let mut buf = vec![0u8; CHUNK];
        let mut reader = reader.take(upto.unwrap_or(u64::MAX));
        loop {
            let n = read_full(&mut reader, &mut buf).at("read", path)?;
            if n == 0 {
                return Ok::<(), MicrosandboxError>(());
            }
            Tap::update(tap, &buf[..n]);
        }
    };
    // The first bytes tell the kind; only a compressed layer (or a sink)
    // needs the rest, read again from the start with progress.
    if sink.is_none() {
        let mut head = LayerTap::new(media_type, limit, None);
        feed(&mut ReadAt::new(file), &mut head, Some(512))?;
        if !head.digester.is_compressed() {
            return head.finish(stored, what);
        }
    }
    let size = file.metadata().at("stat", path)?.len();
    let mut reader = ProgressReader::new(
        ReadAt::new(file),
        progress.cloned(),
        Phase::Verify,
        Some(stored.to_string()),
        Some(size),
    );
    let mut tap = LayerTap::new(media_type, limit, sink);
    feed(&mut reader, &mut tap, None)?;
    tap.finish(stored, what)
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
/// download), with the same rules as [`feed_layer`]: gzip and zstd (by
/// their magic) are decompressed and hashed, a tar is its own digest,
/// anything else cannot be checked here.
pub struct LayerDigester {
    media_type: String,
    limit: u64,
    head: Vec<u8>,
    state: DigesterState,
    /// What the layer was told to be compressed with, once told.
    compression: Option<Compression>,
    /// Where the uncompressed bytes go too, until the kind is told.
    forward: Option<Forward>,
}

/// Where a layer's uncompressed bytes go besides the hash (a VM layer
/// image being written in the same pass). It records its own errors and
/// never fails a write: the hash goes on, and its owner asks it.
pub type Forward = Box<dyn Write + Send>;

enum DigesterState {
    /// Fewer bytes than it takes to tell the kind.
    Sniffing,
    Gzip(Box<flate2::write::MultiGzDecoder<HashSink>>),
    Zstd(Box<ZstdWriter<HashSink>>),
    Tar,
    Unknown,
    Corrupt(String),
}

/// A `Write` that hashes what it is given, up to a limit, and hands it on.
struct HashSink {
    hasher: Sha256,
    left: u64,
    forward: Option<Forward>,
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
        if let Some(f) = &mut self.forward {
            f.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes it takes to see a tar header's `ustar` magic.
const SNIFF: usize = 262;

/// Bytes it takes to tell a compression by its magic.
const MAGIC: usize = 4;

impl LayerDigester {
    /// A digester for a layer of `media_type` that refuses to decompress
    /// more than `limit` bytes.
    pub fn new(media_type: &str, limit: u64) -> LayerDigester {
        LayerDigester {
            media_type: media_type.to_owned(),
            limit,
            head: Vec::new(),
            state: DigesterState::Sniffing,
            compression: None,
            forward: None,
        }
    }

    /// Hands the uncompressed bytes (a tar stream) to `to` as well: a
    /// compressed layer's as they inflate, a plain tar's as they come. A layer
    /// of another kind hands on nothing ([`LayerDigester::finish`] then
    /// says it cannot be told).
    pub fn forwarding(mut self, to: Forward) -> LayerDigester {
        self.forward = Some(to);
        self
    }

    /// Takes the next bytes of the layer.
    pub fn update(&mut self, bytes: &[u8]) {
        Tap::update(self, bytes)
    }
}

impl std::fmt::Debug for LayerDigester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerDigester")
    }
}

impl Tap for LayerDigester {
    fn update(&mut self, bytes: &[u8]) {
        if let DigesterState::Sniffing = self.state {
            let want = (SNIFF - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..want]);
            if self.head.len() >= MAGIC {
                if let Some(c) = Compression::sniff(&self.head) {
                    self.inflate(c);
                    self.feed(&bytes[want..]);
                    return;
                }
            }
            if self.head.len() < SNIFF {
                return;
            }
            self.decide();
            self.feed(&bytes[want..]);
            return;
        }
        self.feed(bytes);
    }
}

impl LayerDigester {
    /// Whether the bytes so far are a compressed stream (gzip or zstd).
    pub fn is_compressed(&self) -> bool {
        matches!(
            self.state,
            DigesterState::Gzip(_) | DigesterState::Zstd(_) | DigesterState::Corrupt(_)
        )
    }

    /// Starts inflating a stream of compression `c`, from the bytes held.
    fn inflate(&mut self, c: Compression) {
        self.compression = Some(c);
        let sink = HashSink {
            hasher: Sha256::new(),
            left: self.limit,
            forward: self.forward.take(),
        };
        self.state = match c {
            Compression::Gzip => {
                DigesterState::Gzip(Box::new(flate2::write::MultiGzDecoder::new(sink)))
            }
            Compression::Zstd => match ZstdWriter::new(sink) {
                Ok(z) => DigesterState::Zstd(Box::new(z)),
                Err(e) => DigesterState::Corrupt(e.to_string()),
            },
        };
        let head = std::mem::take(&mut self.head);
        self.feed(&head);
    }

    fn decide(&mut self) {
        if let Some(c) = Compression::sniff(&self.head) {
            return self.inflate(c);
        }
        let ustar = self.head.get(257..262) == Some(b"ustar".as_slice());
        self.state = if ustar || is_plain_tar(&self.media_type) {
            DigesterState::Tar
        } else {
            self.forward = None;
            DigesterState::Unknown
        };
        let head = std::mem::take(&mut self.head);
        self.feed(&head);
    }

    fn feed(&mut self, bytes: &[u8]) {
        match &mut self.state {
            DigesterState::Gzip(gz) => {
                if let Err(e) = gz.write_all(bytes) {
                    self.state = DigesterState::Corrupt(e.to_string());
                }
            }
            DigesterState::Zstd(z) => {
                if let Err(e) = z.write_all(bytes) {
                    self.state = DigesterState::Corrupt(e.to_string());
                }
            }
            DigesterState::Tar => {
                if let Some(f) = &mut self.forward {
                    // A forward records its own failures.
                    let _ = f.write_all(bytes);
                }
            }
            _ => {}
        }
    }

    /// The uncompressed digest; `stored` is the layer's own digest (a tar's
    /// uncompressed digest). `None` when it cannot be told.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArchive`] naming `what` for a corrupt compressed
    /// stream, or one that inflates past the limit.
    pub fn finish(mut self, stored: &Digest, what: &str) -> MicrosandboxResult<Option<Digest>> {
        if let DigesterState::Sniffing = self.state {
            self.decide();
        }
        let kind = self.compression.map_or("compressed", Compression::name);
        let corrupt = |e: String| {
            MicrosandboxError::new(
                ErrorKind::InvalidArchive,
                format!("{what}: corrupt {kind} layer {stored}: {e}"),
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
            DigesterState::Zstd(z) => {
                let sink = z.finish().map_err(|e| fail(e.to_string()))?;
                Ok(Some(Digest::from_hasher(sink.hasher)))
            }
            DigesterState::Tar => Ok(Some(stored.clone())),
            DigesterState::Unknown | DigesterState::Sniffing => Ok(None),
            DigesterState::Corrupt(e) => Err(fail(e)),
        }
    }
}

/// What else a layer's uncompressed stream feeds, in the same pass as its
/// diff_id check: a VM layer image being written (made by `crate::vm`;
/// transfer only hands the bytes on).
pub trait LayerSink: Send {
    /// Where the uncompressed bytes go, from the first.
    fn forward(&self) -> Forward;
    /// The stream is whole: the image is finished and flushed, ready for
    /// the commit.
    ///
    /// # Errors
    ///
    /// A layer the sink cannot make (the caller carries on without it).
    fn finish(
        self: Box<Self>,
        what: &str,
    ) -> MicrosandboxResult<crate::store::artifact::SealedArtifact>;
}

/// What a pass over a layer found (its uncompressed digest, `None` when
/// it cannot be told) and its sink, which saw the whole stream.
pub type Fed = (Option<Digest>, Option<Box<dyn LayerSink>>);

/// Makes the sink of a layer, by its diff_id; `None` when there is
/// nothing to make (its image exists, or another process is making it).
pub type LayerSinks = std::sync::Arc<dyn Fn(&Digest) -> Option<Box<dyn LayerSink>> + Send + Sync>;

/// The tap of a layer's download: its uncompressed digest, and a sink fed
/// the same uncompressed bytes.
pub struct LayerTap {
    digester: LayerDigester,
    sink: Option<Box<dyn LayerSink>>,
}

impl LayerTap {
    /// A tap for a layer of `media_type` (decompression bounded by
    /// `limit`), feeding `sink` too.
    pub fn new(media_type: &str, limit: u64, sink: Option<Box<dyn LayerSink>>) -> LayerTap {
        let mut digester = LayerDigester::new(media_type, limit);
        if let Some(s) = &sink {
            digester = digester.forwarding(s.forward());
        }
        LayerTap { digester, sink }
    }

    /// The uncompressed digest (as [`LayerDigester::finish`]) and the
    /// sink, which saw the whole stream.
    ///
    /// # Errors
    ///
    /// As [`LayerDigester::finish`].
    pub fn finish(self, stored: &Digest, what: &str) -> MicrosandboxResult<Fed> {
        let digest = self.digester.finish(stored, what)?;
        // A layer told by its content as neither gzip nor tar handed on
        // nothing: no image can come of it.
        let sink = self.sink.filter(|_| digest.is_some());
        Ok((digest, sink))
    }
}

impl Tap for LayerTap {
    fn update(&mut self, bytes: &[u8]) {
        self.digester.update(bytes)
    }
}

impl std::fmt::Debug for LayerTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerTap")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streaming_digester_agrees_with_the_file_one() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gzip = gz.finish().unwrap();
        let mut truncated = gzip.clone();
        truncated.truncate(gzip.len() - 6);
        let zstd = zstd::encode_all(&tar[..], 3).unwrap();
        let cut_zstd = &zstd[..zstd.len() - 2];
        let cases: [(&[u8], &str); 8] = [
            (&gzip, "application/vnd.oci.image.layer.v1.tar+gzip"),
            (&zstd, "application/vnd.oci.image.layer.v1.tar+zstd"),
            // Told by the content, whatever the label says.
            (&zstd, "application/vnd.oci.image.layer.v1.tar+gzip"),
            (cut_zstd, "application/vnd.oci.image.layer.v1.tar+zstd"),
            (&tar, "application/vnd.oci.image.layer.v1.tar"),
            (b"zstd?", "application/vnd.oci.image.layer.v1.tar+zstd"),
            (b"x", "application/vnd.oci.image.layer.v1.tar"),
            (&truncated, "application/vnd.oci.image.layer.v1.tar+gzip"),
        ];
        for (bytes, media_type) in cases {
            let stored = Digest::of(bytes);
            let path = dir.path().join("layer");
            std::fs::write(&path, bytes).unwrap();
            let file = File::open(&path).unwrap();
            let from_file = feed_layer(
                &file,
                &path,
                &stored,
                media_type,
                "t",
                None,
                DEFAULT_MAX_LAYER_BYTES,
                None,
            )
            .map(|(d, _)| d);
            // Fed in small, uneven pieces, as a download comes.
            let mut d = LayerDigester::new(media_type, DEFAULT_MAX_LAYER_BYTES);
            for piece in bytes.chunks(7) {
                d.update(piece);
            }
            let streamed = d.finish(&stored, "t");
            if bytes == zstd {
                assert_eq!(streamed.as_ref().unwrap().as_ref(), Some(&Digest::of(&tar)));
            }
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
        let mut d = LayerDigester::new("application/vnd.oci.image.layer.v1.tar+zstd", 4096);
        d.update(&zstd::encode_all(&vec![0u8; 1 << 20][..], 3).unwrap());
        let err = d.finish(&Digest::of(b"z"), "layer 3").unwrap_err();
        assert!(err.to_string().contains("more than 4096 bytes"), "{err}");
        let mut d = LayerDigester::new("application/vnd.oci.image.layer.v1.tar+zstd", 1 << 20);
        d.update(cut_zstd);
        let err = d.finish(&Digest::of(cut_zstd), "layer 4").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArchive);
        assert!(err.to_string().contains("corrupt zstd layer"), "{err}");
    }
}
