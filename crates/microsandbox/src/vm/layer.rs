//! One layer's VM image, made in one pass over its blob: the bytes are
//! decompressed once, and the uncompressed tar stream is hashed (the
//! diff_id check) and written as EROFS at the same time.
//!
//! [`ErofsSink`] is the EROFS side, a [`Forward`] of the layer digester,
//! so the same pass serves a blob read from the cache and one streaming
//! in from a registry.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::error::{ErrorKind, IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::artifact::{
    self, ArtifactKind, ArtifactOut, ArtifactWriter, Claim, SealedArtifact,
};
use crate::store::blob::ReadAt;
use crate::store::fs::read_full;
use crate::store::layout::Layout;
use crate::transfer::layer::{check_diff_id, Forward, LayerDigester, LayerSink, LayerSinks};
use crate::transfer::progress::{Phase, ProgressFn, ProgressReader};

const CHUNK: usize = 256 * 1024;

/// One layer of an image, as its VM image is made from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    /// The blob.
    pub blob: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size, as the manifest declares.
    pub size: u64,
    /// What it decompresses to, as the config says.
    pub diff_id: Digest,
}

/// An EROFS layer writer fed with a layer's uncompressed bytes. Cloning
/// shares the writer; its first error is kept and stops the writing.
#[derive(Clone)]
pub struct ErofsSink(Arc<Mutex<SinkState>>);

struct SinkState {
    writer: Option<erofs::LayerWriter<ArtifactOut>>,
    error: Option<erofs::Error>,
}

impl ErofsSink {
    /// A sink writing an image into a claimed artifact.
    ///
    /// # Errors
    ///
    /// `Io` when the file cannot be used.
    pub fn new(artifact: &ArtifactWriter) -> MicrosandboxResult<ErofsSink> {
        let writer = erofs::Builder::new()
            .writer(artifact.out()?)
            .map_err(|e| erofs_error(e, "start", &artifact.path()))?;
        Ok(ErofsSink(Arc::new(Mutex::new(SinkState {
            writer: Some(writer),
            error: None,
        }))))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether writing has failed (the rest of the layer can be skipped).
    pub fn failed(&self) -> bool {
        self.state().error.is_some()
    }

    /// As a digester's [`Forward`].
    pub fn forward(&self) -> Forward {
        Box::new(self.clone())
    }

    /// Ends the stream: the image's metadata and superblock are written.
    /// `what` names the layer in errors.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArchive`] for a layer EROFS cannot hold (an
    /// entry escaping the root, a hard link to nowhere, a truncated tar),
    /// naming the entry; `Io` for the disk.
    pub fn finish(self, what: &str) -> MicrosandboxResult<erofs::ImageInfo> {
        let mut state = self.state();
        if let Some(e) = state.error.take() {
            return Err(erofs_error(e, what, std::path::Path::new("")));
        }
        let writer = state.writer.take().expect("an erofs sink is finished once");
        writer
            .finish()
            .map_err(|e| erofs_error(e, what, std::path::Path::new("")))
    }
}

impl Write for ErofsSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.state();
        if state.error.is_none() {
            if let Some(w) = state.writer.as_mut() {
                if let Err(e) = w.push(buf) {
                    state.error = Some(e);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A layer image made while a load or a pull brings its blob in.
struct InPassImage {
    writer: ArtifactWriter,
    erofs: ErofsSink,
}

impl LayerSink for InPassImage {
    fn forward(&self) -> Forward {
        self.erofs.forward()
    }

    fn finish(self: Box<Self>, what: &str) -> MicrosandboxResult<SealedArtifact> {
        let InPassImage { writer, erofs } = *self;
        let info = erofs.finish(what)?;
        let path = writer.path();
        let len = writer.len()?;
        if len != info.size_bytes() {
            return Err(MicrosandboxError::corrupt(format!(
                "{}: {len} bytes written for an image of {}",
                path.display(),
                info.size_bytes()
            )));
        }
        writer.seal()
    }
}

/// The sinks of a materializing load or pull: each layer whose image is
/// neither in the cache nor being made elsewhere gets one, fed in the
/// same pass as its diff_id check. (One another maker holds is left to
/// the materialize after the commit, which waits for it.)
pub fn sinks(layout: Arc<Layout>) -> LayerSinks {
    Arc::new(move |diff_id: &Digest| {
        // With `cache/vm/` damaged nothing can be committed: the
        // materialize after the commit clears it and makes the images.
        if !layout.vm_ready() {
            return None;
        }
        let Ok(Some(Claim::Mine(writer))) =
            artifact::try_claim(&layout, ArtifactKind::Layer, diff_id)
        else {
            return None;
        };
        let erofs = ErofsSink::new(&writer).ok()?;
        Some(Box::new(InPassImage { writer, erofs }) as Box<dyn LayerSink>)
    })
}

/// An EROFS writer's error as the cache's: the disk's failures are `Io`,
/// everything else is a layer the format cannot hold.
fn erofs_error(e: erofs::Error, what: &str, path: &std::path::Path) -> MicrosandboxError {
    if e.kind() == erofs::ErrorKind::Io {
        let source = e
            .io_error()
            .map(|io| io::Error::new(io.kind(), io.to_string()))
            .unwrap_or_else(|| io::Error::other(e.to_string()));
        return MicrosandboxError::io(&format!("write the VM image of {what} at"), path, source);
    }
    MicrosandboxError::new(
        ErrorKind::InvalidArchive,
        format!("{what} cannot be made a VM image: {e}"),
    )
}

/// Makes the VM image of `layer` into `writer`'s file, reading its blob
/// once. `what` names the layer in errors.
///
/// # Errors
///
/// [`ErrorKind::CorruptCache`] when the blob is missing or not what its
/// name says; [`ErrorKind::DigestMismatch`] when it does not decompress
/// to its diff_id; [`ErrorKind::Unsupported`] for a compression this
/// crate cannot read (neither gzip nor zstd, nor a plain tar);
/// [`ErrorKind::InvalidArchive`] for a tar EROFS
/// cannot hold; `Io`.
pub fn build(
    layout: &Layout,
    layer: &LayerSpec,
    writer: &ArtifactWriter,
    progress: Option<ProgressFn>,
    limit: u64,
    what: &str,
) -> MicrosandboxResult<erofs::ImageInfo> {
    let blob_path = layout.blob_path(&layer.blob);
    let blob = layout.open_blob(&layer.blob)?.ok_or_else(|| {
        MicrosandboxError::corrupt(format!("{what}: blob {} is missing", layer.blob))
    })?;
    let sink = ErofsSink::new(writer)?;
    let mut digester = LayerDigester::new(&layer.media_type, limit).forwarding(sink.forward());
    let mut reader = ProgressReader::new(
        ReadAt::new(&blob),
        progress,
        Phase::Erofs,
        Some(layer.blob.to_string()),
        Some(layer.size),
    );
    // A plain tar is its own diff_id: its bytes are hashed here (a
    // compressed layer's uncompressed hash is the digester's).
    let mut raw = Sha256::new();
    let mut raw_len = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(&mut reader, &mut buf).at("read", &blob_path)?;
        if n == 0 {
            break;
        }
        digester.update(&buf[..n]);
        if !digester.is_compressed() {
            raw.update(&buf[..n]);
        }
        raw_len += n as u64;
        if sink.failed() {
            break;
        }
    }
    if sink.failed() {
        drop(digester);
        return sink
            .finish(what)
            .map(|_| unreachable!("a failed sink fails"));
    }
    let compressed = digester.is_compressed();
    let uncompressed = digester.finish(&layer.blob, what)?.ok_or_else(|| {
        MicrosandboxError::new(
            ErrorKind::Unsupported,
            format!(
                "{what}: layer {} ({}) is in a compression this version cannot read",
                layer.blob, layer.media_type
            ),
        )
    })?;
    if !compressed && (Digest::from_hasher(raw) != layer.blob || raw_len != layer.size) {
        return Err(MicrosandboxError::corrupt(format!(
            "{what}: blob {} does not hash to its name",
            layer.blob
        )));
    }
    check_diff_id(Some(&uncompressed), &layer.diff_id, what)?;
    let info = sink.finish(what)?;
    let len = writer.len()?;
    if len != info.size_bytes() {
        return Err(MicrosandboxError::corrupt(format!(
            "{}: {len} bytes written for an image of {}",
            writer.path().display(),
            info.size_bytes()
        )));
    }
    Ok(info)
}
