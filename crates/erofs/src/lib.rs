//! EROFS images from tar layers, a merged metadata-only EROFS over them
//! ("fsmeta"), and the VMDK descriptor that makes them one disk: what a
//! microVM boots instead of an unpacked root file system. Pure Rust, no
//! external tools; the Linux kernel, `fsck.erofs` and qemu are its tests'
//! oracles.
//!
//! ```no_run
//! use std::fs::File;
//!
//! # fn main() -> erofs::Result<()> {
//! // One image per layer, from its uncompressed tar.
//! let mut layers = Vec::new();
//! for (k, tar) in ["base.tar", "app.tar"].iter().enumerate() {
//!     let path = format!("layer{k}.erofs");
//!     erofs::Builder::new().build(File::open(tar)?, &mut File::create(&path)?)?;
//!     layers.push((path, File::open(format!("layer{k}.erofs"))?));
//! }
//! // The merged tree, its files pointing into the layers.
//! let mut merger = erofs::Merger::new();
//! for (path, file) in &layers {
//!     merger.add_layer(file, path.as_bytes())?;
//! }
//! let fsmeta = merger.finish(&mut File::create("fsmeta.erofs")?)?;
//! // One disk: the fsmeta, then the layers.
//! let mut disk = vec![erofs::vmdk::File { path: "fsmeta.erofs".into(), size: fsmeta.size_bytes() }];
//! for (path, file) in &layers {
//!     disk.push(erofs::vmdk::File { path: path.clone(), size: file.metadata()?.len() });
//! }
//! std::fs::write("disk.vmdk", erofs::vmdk::descriptor(&disk)?)?;
//! # Ok(()) }
//! ```
//!
//! A layer can also be pushed as it streams in, for example out of a gzip
//! decoder, since [`LayerWriter`] is an `io::Write`:
//!
//! ```no_run
//! # fn main() -> erofs::Result<()> {
//! # let mut gunzipped: &[u8] = &[];
//! let mut out = std::fs::File::create("layer.erofs")?;
//! let mut w = erofs::Builder::new().writer(&mut out)?;
//! std::io::copy(&mut gunzipped, &mut w)?;
//! let info = w.finish()?;
//! erofs::check_image(&out)?; // what a cache's verify would do later
//! println!("{} blocks", info.blocks);
//! # Ok(()) }
//! ```
//!
//! # Layer images
//!
//! 4 KiB blocks, superblock checksum, compact inodes where the metadata
//! allows and extended ones elsewhere; regular files uncompressed, each in
//! whole blocks of its own (a sparse file: a block map with holes), so that
//! an fsmeta's chunk indexes can point at them; directories and symlinks
//! inline after their inode where they fit. Everything a tar carries:
//! hard links (one inode), devices, FIFOs, setuid/setgid/sticky bits, 32-bit
//! ids, nanosecond mtimes from PAX, xattrs from `SCHILY.xattr.*` and
//! `LIBARCHIVE.xattr.*`, the root's own entry, GNU and PAX long names,
//! GNU sparse files (old, 0.0, 0.1, 1.0). Overlay whiteouts are kept the way
//! overlayfs reads them: `.wh.NAME` becomes a character device 0:0 named
//! `NAME`, `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its
//! directory. Bad input is an [`Error`] naming the entry; memory is bounded
//! by [`Limits`], never by file data. The same tar gives the same bytes.
//!
//! # fsmeta
//!
//! [`Merger`] reads layer images bottom first and writes the merged tree
//! (whiteouts and opaque directories applied, markers gone), metadata only:
//! each regular file is chunk indexes into the layer that provides it,
//! through a device table with flat addressing, so it mounts both with
//! `-o device=` options and as one disk of the fsmeta followed by the
//! layers ([`vmdk`] describes that disk).
//!
//! # Checking artifacts
//!
//! [`check_image`] reads an image's facts back (magic, checksum, size,
//! devices) and checks every inode the way the kernel would read it
//! (sizes, block and chunk addresses, directory entries), metadata only;
//! [`check_fsmeta`] holds an fsmeta against its layers;
//! [`vmdk::parse`] and [`vmdk::Descriptor::check_files`] check a
//! descriptor. [`FORMAT_VERSION`] changes whenever the bytes written for
//! the same input would.

#![deny(missing_docs)]

mod builder;
mod check;
mod chunks;
mod error;
mod extract;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod limits;
mod merge;
mod meta;
mod read;
mod tar;
mod tree;
pub mod vmdk;

pub use builder::{Builder, LayerWriter};
pub use check::{check_fsmeta, check_image, DeviceInfo, ImageInfo};
pub use error::{Error, ErrorKind, Result};
pub use format::BLOCK_SIZE;
pub use limits::Limits;
pub use merge::{merge, Merger};
pub use read::ReadAt;

/// The version of what this crate writes: it changes whenever the bytes
/// written for the same input change, so artifacts of different writers
/// never mix (put it into their file names).
pub const FORMAT_VERSION: u32 = 1;
