//! An image's disk from its layer images: the merged metadata-only fsmeta
//! (whiteouts applied, each file's data found in the layer that provides
//! it through a device table, bottom layer first) and the VMDK descriptor
//! that joins the fsmeta and the layer images into one disk. Paths in the
//! descriptor are relative (`../layers/...`), so the cache can move.

use std::fs::File;

use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::artifact::{ArtifactKind, ArtifactWriter};

/// The most bytes a VMDK descriptor of this cache is read (a few lines
/// per layer).
pub const VMDK_LIMIT: u64 = 1 << 20;

/// One layer image of a disk, open.
pub struct DiskLayer<'a> {
    /// The layer's diff_id (the device table's tag).
    pub diff_id: &'a Digest,
    /// The image.
    pub file: &'a File,
    /// Its size.
    pub size: u64,
}

fn format_error(e: erofs::Error, what: &str) -> MicrosandboxError {
    MicrosandboxError::new(
        ErrorKind::CorruptCache,
        format!("{what}: the layer images do not merge: {e}"),
    )
}

/// Writes the fsmeta of `layers` (bottom first) into `writer`'s file.
///
/// # Errors
///
/// `CorruptCache` when a layer image does not read; `Io`.
pub fn write_fsmeta(
    layers: &[DiskLayer<'_>],
    writer: &ArtifactWriter,
    what: &str,
) -> MicrosandboxResult<erofs::ImageInfo> {
    let mut merger = erofs::Merger::new();
    for layer in layers {
        merger
            .add_layer(layer.file, layer.diff_id.hex().as_bytes())
            .map_err(|e| format_error(e, what))?;
    }
    merger.finish(writer.out()?).map_err(|e| {
        if e.kind() == erofs::ErrorKind::Io {
            MicrosandboxError::io(
                "write fsmeta",
                &writer.path(),
                std::io::Error::other(e.to_string()),
            )
        } else {
            format_error(e, what)
        }
    })
}

/// Checks an fsmeta in the cache against the layer images it was made
/// over, each of which the caller has checked already ([`crate::vm::check`]):
/// the fsmeta is a sound image (every inode, every chunk inside its device),
/// and its device table lists each layer, by its diff_id, with its size, one
/// after the other on the disk after the fsmeta. (What
/// [`erofs::check_fsmeta`] checks, without walking the layer images again.)
pub fn fsmeta_matches(fsmeta: &File, layers: &[DiskLayer<'_>]) -> bool {
    let Ok(info) = erofs::check_image(fsmeta) else {
        return false;
    };
    let mut next = info.blocks;
    info.devices.len() == layers.len()
        && info.devices.iter().zip(layers).all(|(d, l)| {
            let at = next;
            next += d.blocks;
            d.tag == l.diff_id.hex().as_bytes()
                && d.blocks.checked_mul(erofs::BLOCK_SIZE) == Some(l.size)
                && d.mapped_blkaddr == at
        })
}

/// The descriptor of the disk: the fsmeta of `manifest` (`fsmeta_size`
/// bytes), then each layer image, by paths relative to `vmdk/`.
///
/// # Errors
///
/// `CorruptCache` for sizes a VMDK cannot hold (never made by this cache).
pub fn vmdk_text(
    manifest: &Digest,
    fsmeta_size: u64,
    layers: &[DiskLayer<'_>],
) -> MicrosandboxResult<String> {
    let mut files = vec![erofs::vmdk::File {
        path: format!("../fsmeta/{}", ArtifactKind::Fsmeta.name(manifest)),
        size: fsmeta_size,
    }];
    files.extend(layers.iter().map(|l| erofs::vmdk::File {
        path: format!("../layers/{}", ArtifactKind::Layer.name(l.diff_id)),
        size: l.size,
    }));
    erofs::vmdk::descriptor(&files).map_err(|e| {
        MicrosandboxError::corrupt(format!("the disk of {manifest} cannot be described: {e}"))
    })
}

/// Whether a descriptor read from the cache is the one [`vmdk_text`]
/// writes for these files (its extents name them, with their sizes).
pub fn vmdk_matches(
    text: &str,
    manifest: &Digest,
    fsmeta_size: u64,
    layers: &[DiskLayer<'_>],
) -> bool {
    let Ok(want) = vmdk_text(manifest, fsmeta_size, layers) else {
        return false;
    };
    let (Ok(have), Ok(want)) = (erofs::vmdk::parse(text), erofs::vmdk::parse(&want)) else {
        return false;
    };
    have.extents == want.extents
}
