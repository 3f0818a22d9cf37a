//! Reading EROFS images back: the superblock (magic, checksum, size) and
//! device table, inodes, inline and shared xattrs, directories, symlinks and
//! the block layout of regular files, into a [`Tree`] that merging uses,
//! or walked to check every inode as the kernel would read it.
//! Uncompressed images only; every offset, size and block address is
//! checked against the image before it is used, and no read is larger
//! than a block, an inode's xattrs, the device table or a chunk table
//! paid for from a [`Budget`].
//!
//! From the bottom up: `source` (where the bytes come from), `image` (the
//! superblock, inodes, xattrs, directories), `layout` (where a file's data
//! lies), `walk` (the whole tree, the whole check).

mod image;
mod layout;
mod source;
mod walk;

pub(crate) use image::{Budget, Image};
pub use source::ReadAt;
