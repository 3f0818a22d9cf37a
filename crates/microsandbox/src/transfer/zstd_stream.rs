//! A push decoder for zstd layers: a [`Write`] that inflates what it is
//! given into another `Write`, in bounded memory, over libzstd's streaming
//! API. It reads what registries and builders write: several frames one
//! after another (podman and buildkit compress in pieces), skippable
//! frames (zstd:chunked keeps its table of contents in one), and tells at
//! the end whether the input stopped inside a frame (a cut download).

use std::io::{self, Write};

use zstd::zstd_safe::{self, DCtx, DParameter, InBuffer, OutBuffer};

/// The largest window a frame may ask for: 2^27 bytes (128 MiB), the
/// limit libzstd (and the `zstd` tool without `--long`) applies, so a
/// hostile frame cannot make the decoder hold more.
pub const WINDOW_LOG_MAX: u32 = 27;

/// Whether `head` (the first bytes of a stream, at least 4 to tell) opens
/// a zstd frame or a skippable frame.
pub fn is_zstd(head: &[u8]) -> bool {
    match head {
        [0x28, 0xb5, 0x2f, 0xfd, ..] => true,
        [b, 0x2a, 0x4d, 0x18, ..] => b & 0xf0 == 0x50,
        _ => false,
    }
}

/// A zstd stream decoder writing into `W`.
pub struct ZstdWriter<W: Write> {
    ctx: DCtx<'static>,
    out: Vec<u8>,
    inner: W,
    /// Whether the input so far stops inside a frame.
    open: bool,
}

impl<W: Write> ZstdWriter<W> {
    /// A decoder handing what it inflates to `inner`.
    ///
    /// # Errors
    ///
    /// When libzstd cannot set the window limit.
    pub fn new(inner: W) -> io::Result<ZstdWriter<W>> {
        let mut ctx = DCtx::create();
        ctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))
            .map_err(zstd_error)?;
        Ok(ZstdWriter {
            ctx,
            out: Vec::with_capacity(DCtx::out_size()),
            inner,
            open: false,
        })
    }

    /// Decodes `input`, then drains what the decoder still holds.
    fn decode(&mut self, input: &[u8]) -> io::Result<()> {
        let mut src = InBuffer::around(input);
        loop {
            self.out.clear();
            let before = src.pos;
            let mut dst = OutBuffer::around(&mut self.out);
            let hint = self
                .ctx
                .decompress_stream(&mut dst, &mut src)
                .map_err(zstd_error)?;
            let full = dst.pos() == dst.capacity();
            if src.pos == before && self.out.is_empty() {
                return Ok(());
            }
            if !self.out.is_empty() {
                self.inner.write_all(&self.out)?;
            }
            // 0: a frame just ended, everything it held handed on.
            self.open = hint != 0;
            if src.pos == input.len() && !full {
                return Ok(());
            }
        }
    }

    /// Ends the stream, handing back the writer it fed.
    ///
    /// # Errors
    ///
    /// When the input stopped inside a frame (a truncated layer).
    pub fn finish(self) -> io::Result<W> {
        // Each write drained the decoder: what is left is a frame's rest.
        if self.open {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the zstd stream ends inside a frame",
            ));
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for ZstdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() {
            self.decode(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        zstd_safe::get_error_name(code).to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(bytes: &[u8], piece: usize) -> io::Result<Vec<u8>> {
        let mut w = ZstdWriter::new(Vec::new())?;
        for p in bytes.chunks(piece) {
            w.write_all(p)?;
        }
        w.finish()
    }

    /// A skippable frame of `n` payload bytes, as zstd:chunked writes its
    /// table of contents.
    fn skippable(n: usize) -> Vec<u8> {
        let mut f = vec![0x5e, 0x2a, 0x4d, 0x18];
        f.extend_from_slice(&(n as u32).to_le_bytes());
        f.extend(std::iter::repeat_n(0xaa, n));
        f
    }

    #[test]
    fn frames_one_after_another_and_skippable_frames_decode_whole() {
        let a: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let b = b"second frame".repeat(10_000);
        let mut stream = zstd::encode_all(&a[..], 3).unwrap();
        stream.extend(skippable(100));
        stream.extend(zstd::encode_all(&b[..], 19).unwrap());
        stream.extend(skippable(7));
        let mut want = a.clone();
        want.extend_from_slice(&b);
        for piece in [1, 7, 4096, 1 << 20] {
            assert_eq!(decode_in_pieces(&stream, piece).unwrap(), want, "{piece}");
        }
        assert!(is_zstd(&stream));
        assert!(is_zstd(&skippable(0)));
        assert!(!is_zstd(&[0x1f, 0x8b, 8, 0]));
    }

    #[test]
    fn a_cut_stream_and_trailing_garbage_are_errors() {
        let data = b"some layer".repeat(50_000);
        let stream = zstd::encode_all(&data[..], 3).unwrap();
        let cut = &stream[..stream.len() - 3];
        let e = decode_in_pieces(cut, 1000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        let mut garbage = stream.clone();
        garbage.extend_from_slice(b"not a frame");
        assert!(decode_in_pieces(&garbage, 1000).is_err());
    }

    #[test]
    fn a_frame_asking_for_a_window_past_the_limit_is_refused() {
        // A frame header declaring a 2 GiB window (window descriptor
        // exponent 21: 2^(10+21)), no content size.
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 21 << 3];
        frame.extend_from_slice(&[0u8; 16]);
        let e = decode_in_pieces(&frame, 64).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}
