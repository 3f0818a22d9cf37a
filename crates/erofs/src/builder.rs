//! Layer images from tar streams. [`Builder`] holds the options;
//! [`Builder::build`] reads a tar from any `Read`, and [`LayerWriter`] takes
//! the same stream pushed in pieces (it is an `io::Write`).
//!
//! File data is written as it arrives, block-aligned, from block 1 on;
//! metadata (the tree) stays in memory and is written after the data, and
//! block 0 (superblock) last, so a failed build leaves no valid image.
//!
//! How a tar's members become files and directories is in `extract`.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::check::ImageInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::extract::Layer;
use crate::format::BLOCK_SIZE;
use crate::limits::Limits;
use crate::meta;
use crate::tar::Parser;
use crate::tree::Tree;

/// Builds layer images. See the crate documentation for an example.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    limits: Limits,
}

impl Builder {
    /// A builder with default [`Limits`].
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Sets the limits.
    pub fn limits(&mut self, limits: Limits) -> &mut Builder {
        self.limits = limits;
        self
    }

    /// Reads an uncompressed tar to its end and writes its EROFS image to
    /// `out` (which should be empty; the image starts at offset 0). The
    /// reader is read to EOF, past the end-of-archive blocks.
    ///
    /// # Errors
    ///
    /// Bad input (see [`ErrorKind`]) or I/O errors. On error `out` holds no
    /// valid image: its block 0, where the superblock goes, is written last.
    pub fn build<R: Read, W: Write + Seek>(&self, mut tar: R, out: W) -> Result<ImageInfo> {
        let mut w = self.writer(out)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match tar.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading the tar stream failed", e)),
            };
            w.push(&buf[..n])?;
        }
        w.finish()
    }

    /// A writer that takes the tar stream in pieces.
    ///
    /// # Errors
    ///
    /// When `out` cannot seek to where the data starts.
    pub fn writer<W: Write + Seek>(&self, mut out: W) -> Result<LayerWriter<W>> {
        out.seek(SeekFrom::Start(BLOCK_SIZE))
            .map_err(|e| Error::io("seeking in the output failed", e))?;
        Ok(LayerWriter {
            parser: Parser::new(
                self.limits.max_extension_bytes,
                self.limits.max_sparse_runs.min(usize::MAX as u64) as usize,
            ),
            layer: Layer::new(out, self.limits.clone()),
            failed: false,
        })
    }
}

/// Builds a layer image from a tar stream pushed in pieces; also an
/// [`io::Write`](std::io::Write), so `io::copy` from a decompressor works.
/// Errors surface from [`push`](LayerWriter::push) (or `write`, as an
/// `io::Error` that converts back into this crate's [`Error`]) and from
/// [`finish`](LayerWriter::finish).
pub struct LayerWriter<W: Write + Seek> {
    parser: Parser,
    layer: Layer<W>,
    failed: bool,
}

impl<W: Write + Seek> LayerWriter<W> {
    /// Feeds the next bytes of the tar stream.
    ///
    /// # Errors
    ///
    /// Bad input or I/O errors; after one, every call fails.
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        if self.failed {
            return Err(Error::new(ErrorKind::Io, "the layer writer failed before"));
        }
        let r = self.parser.push(bytes, &mut self.layer);
        self.failed = r.is_err();
        r
    }

    /// Ends the stream and writes the metadata and block 0.
    ///
    /// # Errors
    ///
    /// A stream that ended early ([`ErrorKind::Truncated`]), an earlier
    /// failure, or I/O errors.
    pub fn finish(self) -> Result<ImageInfo> {
        self.finish_with_tree().map(|(info, _)| info)
    }

    /// [`finish`](LayerWriter::finish), also giving back the tree written.
    pub(crate) fn finish_with_tree(self) -> Result<(ImageInfo, Tree)> {
        if self.failed {
            return Err(Error::new(ErrorKind::Io, "the layer writer failed before"));
        }
        self.parser.finish()?;
        let (out, data_end, tree) = self.layer.into_parts();
        let mut w = out
            .into_inner()
            .map_err(|e| Error::io("writing the image failed", e.into_error()))?;
        let written = meta::write(&tree, &mut w, data_end, &[])?;
        Ok((ImageInfo::of(&written), tree))
    }
}

impl<W: Write + Seek> Write for LayerWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
