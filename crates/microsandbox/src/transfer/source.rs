//! Where a load reads from: an OCI layout directory, a tar archive
//! (staged in one pass), or a registry; its JSON blobs read once per
//! digest, bounded and checked, and taken from the cache when it holds
//! them already (its copy was verified when it entered).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::dir::DirOrigin;
use super::tarball::TarStage;
use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::Descriptor;
use crate::store::blob::{ParkedBlob, VerifiedBlob};
use crate::store::layout::{Layout, JSON_BLOB_LIMIT};
use crate::transfer::layer::{Compression, LayerSink, LayerSinks, LayerTap};
use crate::transfer::progress::{Phase, Progress, ProgressFn, ProgressReader};
use crate::transfer::registry::{Fetched, RegistryOrigin};
use crate::transfer::zstd_stream::WINDOW_LOG_MAX;

/// Where a load reads from.
pub(super) enum Origin {
    Dir(DirOrigin),
    Tar(TarStage),
    Registry(RegistryOrigin),
}

/// The origin of a load, with its JSON blobs read once per digest however
/// many references share them.
pub(super) struct Source<'a> {
    /// The cache: a JSON blob it holds is read from it, not the origin.
    pub(super) cache: &'a Layout,
    pub(super) label: String,
    pub(super) origin: Origin,
    pub(super) progress: Option<ProgressFn>,
    pub(super) json: Mutex<HashMap<Digest, Arc<[u8]>>>,
    /// The decompression limit of a layer.
    pub(super) max_layer_bytes: u64,
    /// What else each layer's uncompressed stream feeds (VM layer images,
    /// for a materializing load or pull).
    pub(super) sinks: Option<LayerSinks>,
}

impl Source<'_> {
    pub(super) fn json_cache(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<[u8]>>> {
        self.json.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn invalid(&self, what: impl std::fmt::Display) -> MicrosandboxError {
        MicrosandboxError::new(ErrorKind::InvalidArchive, format!("{}: {what}", self.label))
    }

    /// A top-level file (`oci-layout`, `index.json`, `manifest.json`), at
    /// most `limit` bytes; `None` if absent.
    pub(super) fn top(&self, name: &str, limit: u64) -> MicrosandboxResult<Option<Vec<u8>>> {
        let bytes = match &self.origin {
            Origin::Dir(d) => d.top(name, limit)?,
            Origin::Tar(t) => t.top(name, limit)?,
            Origin::Registry(_) => None,
        };
        match bytes {
            Some(b) if b.len() as u64 > limit => {
                Err(self.invalid(format!("{name} is larger than {limit} bytes")))
            }
            other => Ok(other),
        }
    }

    /// Like [`Source::top`], for a file that must be there.
    pub(super) fn read_small(&self, name: &str, limit: u64) -> MicrosandboxResult<Vec<u8>> {
        self.top(name, limit)?
            .ok_or_else(|| self.invalid(format!("{name} is missing")))
    }

    /// Reads a JSON blob whole (bounded) and checks its digest and size.
    pub(super) fn read_json(&self, d: &Descriptor, what: &str) -> MicrosandboxResult<Arc<[u8]>> {
        if let Some(bytes) = self.json_cache().get(&d.digest) {
            if bytes.len() as u64 != d.size {
                return Err(self.invalid(format!(
                    "{what}: {} is declared with {} bytes here and {} elsewhere",
                    d.digest,
                    d.size,
                    bytes.len()
                )));
            }
            return Ok(bytes.clone());
        }
        if d.size > JSON_BLOB_LIMIT {
            return Err(self.invalid(format!(
                "{what}: {} declares {} bytes, over the {JSON_BLOB_LIMIT}-byte limit for JSON",
                d.digest, d.size
            )));
        }
        // The cache's copy, when it has a sound one, is the same bytes (it
        // hashes to the same digest) and costs no request.
        if self.cache.has_blob(&d.digest) {
            if let Ok(bytes) = self.cache.read_json_blob(&d.digest, Some(d.size)) {
                return self.remember(d, bytes);
            }
        }
        let bytes = match &self.origin {
            Origin::Dir(o) => o.read(&d.digest, d.size, what)?,
            Origin::Tar(t) => t.read(&d.digest, d.size, what)?,
            Origin::Registry(r) => r.read(d, d.size, what)?,
        };
        let actual = Digest::of(&bytes);
        if bytes.len() as u64 != d.size || actual != d.digest {
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!(
                    "{}: {what}: expected {} ({} bytes), content is {actual} ({} bytes)",
                    self.label,
                    d.digest,
                    d.size,
                    bytes.len()
                ),
            ));
        }
        self.remember(d, bytes)
    }

    /// Keeps a JSON blob for the rest of the load, within the budget all
    /// of a source's manifests and configs share.
    fn remember(&self, d: &Descriptor, bytes: Vec<u8>) -> MicrosandboxResult<Arc<[u8]>> {
        let mut cache = self.json_cache();
        let held: u64 = cache.values().map(|b| b.len() as u64).sum();
        if held + bytes.len() as u64 > JSON_TOTAL_LIMIT {
            return Err(self.invalid(format!(
                "its manifests and configs take more than {JSON_TOTAL_LIMIT} bytes (at {})",
                d.digest
            )));
        }
        let bytes: Arc<[u8]> = bytes.into();
        cache.insert(d.digest.clone(), bytes.clone());
        Ok(bytes)
    }

    /// The size of a blob of the source; `None` if it has none of that digest.
    pub(super) fn blob_size(&self, digest: &Digest) -> MicrosandboxResult<Option<u64>> {
        match &self.origin {
            Origin::Dir(o) => o.blob_size(digest),
            Origin::Tar(t) => Ok(t
                .entry(&format!("blobs/sha256/{}", digest.hex()))
                .map(|(_, size)| size)),
            Origin::Registry(_) => Ok(None),
        }
    }

    /// A blob as a verified temporary, ready to commit. `waiting` is
    /// called while another pull downloads the same blob.
    pub(super) fn stage(
        &self,
        layout: &Layout,
        d: &Descriptor,
        diff_id: Option<&Digest>,
        what: &str,
        waiting: impl FnMut() -> MicrosandboxResult<()>,
    ) -> MicrosandboxResult<Staged> {
        let make = |diff_id: &Digest| self.sinks.as_ref().and_then(|f| f(diff_id));
        let sink = diff_id.map(|id| move || make(id));
        Ok(match &self.origin {
            Origin::Dir(o) => Staged::Written(o.stage(layout, d, what, self.progress.clone())?),
            Origin::Tar(t) => {
                let blob = t.stage(layout, d, what)?;
                // The archive's bytes were written while it was read: say
                // so for this blob now that it is known to be one the
                // cache did not have.
                if let Some(p) = &self.progress {
                    p.report(&Progress {
                        phase: Phase::Write,
                        digest: Some(d.digest.to_string()),
                        bytes: blob.size(),
                        total_bytes: Some(blob.size()),
                    });
                }
                Staged::Written(blob)
            }
            Origin::Registry(r) => {
                match r.stage(
                    layout,
                    d,
                    what,
                    self.progress.as_ref(),
                    self.max_layer_bytes,
                    sink.as_ref()
                        .map(|f| f as &dyn Fn() -> Option<Box<dyn LayerSink>>),
                    waiting,
                )? {
                    Fetched::Present => Staged::Present,
                    Fetched::Verified(p, tap) => Staged::Partial(p, tap),
                }
            }
        })
    }

    /// How many blobs to bring in at once: downloads wait on the network,
    /// local copies and decompression on the disk and the cores.
    pub(super) fn parallelism(&self) -> usize {
        match self.origin {
            Origin::Registry(_) => DOWNLOADS,
            Origin::Dir(_) | Origin::Tar(_) => crate::util::par::cores().map_or(2, |n| n.min(8)),
        }
    }
}

/// The most bytes all the JSON blobs (manifests, configs, indexes) of one
/// source may take in memory together.
const JSON_TOTAL_LIMIT: u64 = 256 << 20;

/// How many layers a pull downloads at once (skopeo takes six too).
pub(super) const DOWNLOADS: usize = 6;

/// A blob brought in by [`Source::stage`].
pub(super) enum Staged {
    /// Written to a temporary of its own.
    Written(VerifiedBlob),
    /// Downloaded to its partial file, still locked, with the layer's
    /// uncompressed digest when it was computed on the way.
    Partial(Box<VerifiedBlob>, Option<LayerTap>),
    /// Committed to the cache by another pull meanwhile.
    Present,
}

/// A blob waiting for the commit.
pub(super) enum Arrived {
    Written(VerifiedBlob),
    Parked(ParkedBlob),
}

/// Opens `path`: a directory is an OCI layout; a file is a tar archive,
/// gzip-compressed or not (told by its first bytes), staged in one pass.
pub(super) fn open<'a>(
    layout: &'a Layout,
    path: &Path,
    progress: Option<ProgressFn>,
    max_bytes: u64,
) -> MicrosandboxResult<Source<'a>> {
    use rustix::fs::{self as rfs, Mode, OFlags};
    let label = path.display().to_string();
    let invalid =
        |what: &str| MicrosandboxError::new(ErrorKind::InvalidArchive, format!("{label}: {what}"));
    // Opened without blocking (a FIFO swapped in after a look would hang
    // the load), then looked at through the descriptor.
    let fd = rfs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT => invalid("no such file or directory"),
        e => MicrosandboxError::io("open", path, e.into()),
    })?;
    let stat = rfs::fstat(&fd).map_err(|e| MicrosandboxError::io("stat", path, e.into()))?;
    let kind = crate::store::fs::kind(&stat);
    let origin = if kind == rfs::FileType::Directory {
        Origin::Dir(DirOrigin::new(path))
    } else if kind == rfs::FileType::RegularFile {
        let flags =
            rfs::fcntl_getfl(&fd).map_err(|e| MicrosandboxError::io("open", path, e.into()))?;
        rfs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
            .map_err(|e| MicrosandboxError::io("open", path, e.into()))?;
        let file = std::fs::File::from(fd);
        let len = stat.st_size as u64;
        let counted = ProgressReader::new(file, progress.clone(), Phase::Read, None, Some(len));
        let mut reader = io::BufReader::with_capacity(1 << 20, counted);
        let head = io::BufRead::fill_buf(&mut reader)
            .map_err(|e| MicrosandboxError::io("read", path, e))?;
        // A whole archive may be compressed too (`.tar.gz`, `.tar.zst`).
        let stage = match Compression::sniff(head) {
            Some(Compression::Gzip) => {
                let inflated = flate2::bufread::MultiGzDecoder::new(reader);
                TarStage::from_reader(layout, inflated, &label, max_bytes)?
            }
            Some(Compression::Zstd) => {
                let inflated = zstd::stream::read::Decoder::with_buffer(reader)
                    .and_then(|mut d| {
                        d.window_log_max(WINDOW_LOG_MAX)?;
                        Ok(d)
                    })
                    .map_err(|e| MicrosandboxError::io("read", path, e))?;
                TarStage::from_reader(layout, inflated, &label, max_bytes)?
            }
            None => TarStage::from_reader(layout, reader, &label, max_bytes)?,
        };
        // tar stops at its end marker, before the reader sees EOF.
        if let Some(p) = &progress {
            p.report(&Progress {
                phase: Phase::Read,
                digest: None,
                bytes: len,
                total_bytes: Some(len),
            });
        }
        Origin::Tar(stage)
    } else {
        return Err(invalid("neither a directory nor a regular file"));
    };
    Ok(Source {
        cache: layout,
        label,
        origin,
        progress,
        json: Mutex::default(),
        max_layer_bytes: max_bytes,
        sinks: None,
    })
}
