//! Progress of long operations (load now; pull later), reported to a
//! callback the caller gives.
//!
//! The callback runs on the worker thread doing the work and must not
//! block; the Node binding hands each event to a threadsafe function in
//! non-blocking mode. Byte counts are reported every [`STEP`] bytes and at
//! the end of each stream, never per read.

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;

/// How many bytes pass between two events of one stream.
pub const STEP: u64 = 8 << 20;

/// What a load is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading an archive (bytes of the archive file).
    Read,
    /// Writing one blob into `tmp/`, hashing it (bytes of that blob).
    Write,
    /// Decompressing a gzip layer to check its diff_id (compressed bytes).
    Verify,
    /// Committing verified blobs and references (bytes committed).
    Commit,
    /// Making a layer's VM image: reading its blob (compressed bytes).
    Erofs,
}

impl Phase {
    /// `read`, `write`, `verify`, `commit` or `erofs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Read => "read",
            Phase::Write => "write",
            Phase::Verify => "verify",
            Phase::Commit => "commit",
            Phase::Erofs => "erofs",
        }
    }
}

/// One progress event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// What is being done.
    pub phase: Phase,
    /// The blob concerned, for [`Phase::Write`].
    pub digest: Option<String>,
    /// Bytes done so far in this phase (of this blob, for `Write`).
    pub bytes: u64,
    /// Bytes in all, when known.
    pub total_bytes: Option<u64>,
}

/// A progress callback.
#[derive(Clone)]
pub struct ProgressFn(Arc<dyn Fn(&Progress) + Send + Sync>);

impl ProgressFn {
    /// Wraps a callback.
    pub fn new(f: impl Fn(&Progress) + Send + Sync + 'static) -> ProgressFn {
        ProgressFn(Arc::new(f))
    }

    /// Reports one event.
    pub fn report(&self, event: &Progress) {
        (self.0)(event)
    }
}

impl fmt::Debug for ProgressFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressFn")
    }
}

/// What a pull is doing, in the kinds microsandbox's own SDK reports
/// (`PullProgress`): derived from the byte events of the transfer, with the
/// layer's index in its manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullProgress {
    /// Asking the registry what the reference names.
    Resolving {
        /// The reference asked for.
        reference: String,
    },
    /// The manifest is known.
    Resolved {
        /// The reference asked for.
        reference: String,
        /// The platform manifest's digest.
        manifest_digest: String,
        /// How many layers it lists.
        layer_count: usize,
        /// The bytes of the layers the cache lacks, to be downloaded.
        total_download_bytes: Option<u64>,
    },
    /// Bytes of one layer arrived.
    LayerDownloadProgress {
        /// Its position in the manifest, 0 at the bottom.
        layer_index: usize,
        /// Its digest.
        digest: String,
        /// Bytes so far.
        downloaded_bytes: u64,
        /// Its size.
        total_bytes: Option<u64>,
    },
    /// One layer is downloaded (and its digest checked).
    LayerDownloadComplete {
        /// Its position in the manifest.
        layer_index: usize,
        /// Its digest.
        digest: String,
        /// Its size.
        downloaded_bytes: u64,
    },
    /// One layer's uncompressed content is being checked against its
    /// config's diff_id.
    LayerDownloadVerifying {
        /// Its position in the manifest.
        layer_index: usize,
        /// Its digest.
        digest: String,
    },
    /// A layer's VM image is being made (it was not in the cache).
    LayerMaterializeStarted {
        /// Its position in the manifest.
        layer_index: usize,
        /// The layer's diff_id.
        diff_id: String,
    },
    /// Bytes of the layer's blob were read into its VM image.
    LayerMaterializeProgress {
        /// Its position in the manifest.
        layer_index: usize,
        /// Compressed bytes read so far.
        bytes_read: u64,
        /// The blob's size.
        total_bytes: Option<u64>,
    },
    /// The layer's data is written; its metadata is being written.
    LayerMaterializeWriting {
        /// Its position in the manifest.
        layer_index: usize,
    },
    /// The layer's VM image is in the cache (made now or before).
    LayerMaterializeComplete {
        /// Its position in the manifest.
        layer_index: usize,
        /// The layer's diff_id.
        diff_id: String,
        /// The image's size.
        erofs_size_bytes: u64,
    },
    /// The layers' trees are being merged into the image's fsmeta.
    StitchMergingTrees {
        /// How many layers.
        layer_count: usize,
    },
    /// The merged fsmeta is being written.
    StitchWritingFsmeta,
    /// The VMDK descriptor is being written.
    StitchWritingVmdk,
    /// The image's disk is ready.
    StitchComplete {
        /// The VMDK descriptor's path.
        vmdk_path: String,
    },
    /// The image is committed to the cache.
    Complete {
        /// The reference asked for.
        reference: String,
        /// How many layers it has.
        layer_count: usize,
    },
}

/// A pull-progress callback.
#[derive(Clone)]
pub struct PullProgressFn(Arc<dyn Fn(&PullProgress) + Send + Sync>);

impl PullProgressFn {
    /// Wraps a callback.
    pub fn new(f: impl Fn(&PullProgress) + Send + Sync + 'static) -> PullProgressFn {
        PullProgressFn(Arc::new(f))
    }

    /// Reports one event.
    pub fn report(&self, event: &PullProgress) {
        (self.0)(event)
    }

    /// The byte events of a pull of these `layers` (digest, size, in
    /// manifest order) as pull-progress events, passed on to `also` too.
    pub fn from_bytes(&self, layers: Vec<(String, u64)>, also: Option<ProgressFn>) -> ProgressFn {
        let this = self.clone();
        ProgressFn::new(move |e| {
            if let Some(also) = &also {
                also.report(e);
            }
            let Some(digest) = &e.digest else { return };
            let Some(layer_index) = layers.iter().position(|(d, _)| d == digest) else {
                return;
            };
            let total = layers[layer_index].1;
            if e.phase != Phase::Write {
                return;
            }
            this.report(&PullProgress::LayerDownloadProgress {
                layer_index,
                digest: digest.clone(),
                downloaded_bytes: e.bytes,
                total_bytes: Some(total),
            });
            if e.bytes >= total {
                // Its digest was checked as it arrived; its diff_id is
                // checked now, against the config.
                this.report(&PullProgress::LayerDownloadComplete {
                    layer_index,
                    digest: digest.clone(),
                    downloaded_bytes: e.bytes,
                });
                this.report(&PullProgress::LayerDownloadVerifying {
                    layer_index,
                    digest: digest.clone(),
                });
            }
        })
    }
}

impl fmt::Debug for PullProgressFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PullProgressFn")
    }
}

/// A reader that reports the bytes read through it.
pub struct ProgressReader<R> {
    inner: R,
    progress: Option<ProgressFn>,
    event: Progress,
    next: u64,
    done: bool,
}

impl<R> ProgressReader<R> {
    /// Reports `phase` events for `inner` to `progress`, if any.
    pub fn new(
        inner: R,
        progress: Option<ProgressFn>,
        phase: Phase,
        digest: Option<String>,
        total_bytes: Option<u64>,
    ) -> Self {
        ProgressReader {
            inner,
            progress,
            event: Progress {
                phase,
                digest,
                bytes: 0,
                total_bytes,
            },
            next: STEP,
            done: false,
        }
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = &self.progress {
            self.event.bytes += n as u64;
            let finished = n == 0 && !self.done;
            if self.event.bytes >= self.next || finished {
                self.next = self.event.bytes + STEP;
                self.done |= n == 0;
                p.report(&self.event);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn reports_every_step_and_once_at_the_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let p = ProgressFn::new(move |e| s.lock().unwrap().push(e.bytes));
        let data = vec![0u8; (STEP * 2 + 5) as usize];
        let mut r = ProgressReader::new(
            &data[..],
            Some(p),
            Phase::Read,
            None,
            Some(data.len() as u64),
        );
        io::copy(&mut r, &mut io::sink()).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.last(), Some(&(data.len() as u64)));
        assert_eq!(seen.iter().filter(|&&b| b == data.len() as u64).count(), 1);
        assert!(seen.len() >= 3, "{seen:?}");
    }
}
