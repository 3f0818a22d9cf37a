//! The facts of an image and their check: [`check_image`] reads the
//! superblock (magic, 4 KiB blocks, checksum, size against the file) and the
//! device table, then walks every inode as the kernel would read it;
//! [`check_fsmeta`] also holds an fsmeta's device table
//! against the layer images it was built for.

use crate::error::{Error, ErrorKind, Result};
use crate::format::{mode, DeviceSlot, BLOCK_SIZE};
use crate::meta::Written;
use crate::read::{Image, ReadAt};

/// What an image is: its size and, for an fsmeta, its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in 4 KiB blocks.
    pub blocks: u64,
    /// Number of inodes.
    pub inodes: u64,
    /// The extra devices (layer images) of an fsmeta, bottom first.
    pub devices: Vec<DeviceInfo>,
}

impl ImageInfo {
    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.blocks * BLOCK_SIZE
    }

    pub(crate) fn of(w: &Written) -> ImageInfo {
        ImageInfo {
            blocks: w.blocks,
            inodes: w.inodes,
            devices: w.devices.iter().map(DeviceInfo::of).collect(),
        }
    }
}

/// One entry of an fsmeta's device table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The tag given when merging (a digest or a name; at most 64 bytes).
    pub tag: Vec<u8>,
    /// The layer image's size in blocks.
    pub blocks: u64,
    /// Where the layer starts on a disk of the fsmeta followed by the layers.
    pub mapped_blkaddr: u64,
}

impl DeviceInfo {
    fn of(d: &DeviceSlot) -> DeviceInfo {
        DeviceInfo {
            tag: d.tag.clone(),
            blocks: d.blocks as u64,
            mapped_blkaddr: d.mapped_blkaddr as u64,
        }
    }
}

/// Checks that `image` is an EROFS image of this crate's kind and returns
/// its facts: magic, 4 KiB blocks, a superblock checksum (required), a size that matches
/// the superblock, a device table that lies inside it (and each device
/// inside 2^32 blocks), a root directory; and then every inode reachable
/// from the root, as the kernel would check it when it reads it, without
/// reading file data:
///
/// - the inode (and its xattrs) inside the image, a known type, a known
///   uncompressed data layout, a size Linux reads as positive (at most
///   2^63-1), at least one link;
/// - a directory's or symlink's blocks inside the image, an inline tail
///   inside one block, a symlink of 1 to 4095 bytes; a regular file's
///   blocks inside the image, or each of its chunks (block map or chunk
///   indexes) a hole or inside its device, the table inside the image;
///   devices, FIFOs and sockets without data;
/// - every directory block's entries: the first name offset, each name
///   inside the block, 1 to 255 bytes, in order, a known file type that is
///   its inode's, `.` and `..` naming the directory and its parent, no
///   directory reachable by two paths, and as many inodes as the
///   superblock counts.
///
/// # Errors
///
/// [`ErrorKind::InvalidImage`] naming what is wrong (and the path, when it
/// is about an inode), or I/O errors.
pub fn check_image(image: &dyn ReadAt) -> Result<ImageInfo> {
    let img = Image::open(image)?;
    // Every image this crate writes carries a superblock checksum; one
    // without it could hide a flipped bit anywhere in block 0.
    if img.sb.feature_compat & crate::format::COMPAT_SB_CHKSUM == 0 {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            "the superblock carries no checksum",
        ));
    }
    let root = img.node(img.sb.root_nid as u64)?;
    if root.raw.mode & mode::S_IFMT != mode::S_IFDIR {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            "the root inode is not a directory",
        ));
    }
    let inodes = img.check_all()?;
    Ok(ImageInfo {
        blocks: img.sb.blocks as u64,
        inodes,
        devices: img.devices.iter().map(DeviceInfo::of).collect(),
    })
}

/// Checks an fsmeta against its layer images (bottom first): each image is
/// valid, there is one device per layer, each device has its layer's size,
/// and the devices follow each other after the fsmeta in the flat address
/// space (so the concatenated disk mounts).
///
/// # Errors
///
/// [`ErrorKind::LayerMismatch`] naming the layer, [`ErrorKind::InvalidImage`]
/// for a bad image, or I/O errors.
pub fn check_fsmeta(fsmeta: &dyn ReadAt, layers: &[&dyn ReadAt]) -> Result<ImageInfo> {
    let info = check_image(fsmeta)?;
    if info.devices.len() != layers.len() {
        return Err(Error::new(
            ErrorKind::LayerMismatch,
            format!(
                "the fsmeta has {} devices for {} layers",
                info.devices.len(),
                layers.len()
            ),
        ));
    }
    let mut next = info.blocks;
    for (k, (dev, layer)) in info.devices.iter().zip(layers).enumerate() {
        let li = check_image(*layer).map_err(|e| e.with_entry(format!("layer {k}")))?;
        if li.blocks != dev.blocks || dev.mapped_blkaddr != next {
            return Err(Error::new(
                ErrorKind::LayerMismatch,
                format!(
                    "device {k} has {} blocks at {}, the layer image has {} (expected at {next})",
                    dev.blocks, dev.mapped_blkaddr, li.blocks
                ),
            )
            .with_entry(format!("layer {k}")));
        }
        next += dev.blocks;
    }
    Ok(info)
}
