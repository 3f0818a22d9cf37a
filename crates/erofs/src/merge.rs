//! fsmeta: the merged tree of layer images, bottom first, as overlayfs would
//! show it, written as a metadata-only image whose regular files are chunk
//! indexes into the layers, found through a device table.
//!
//! Merging follows overlayfs: a whiteout (a character device 0:0) removes
//! the name below it and is itself dropped; a directory marked
//! `trusted.overlay.opaque=y` hides what is below it and loses the mark; a
//! directory over a directory merges (the upper one's metadata wins);
//! anything else replaces what was there. A whiteout in a directory that
//! nothing below has hides nothing and is dropped. A directory that a
//! layer's tar never listed (made with the builder's implicit metadata)
//! keeps the metadata of the directory below it, as extracting the layer
//! over the lower ones would.
//!
//! Chunk indexes name the layer (device `k + 1` for layer `k`) and a block
//! inside it; the device table gives each layer's size and where it starts
//! on a disk made of the fsmeta followed by the layers, so the image mounts
//! both with `-o device=L0,device=L1,...` and as that one disk. Each file's
//! chunk size is the largest its layout allows: a file stored contiguously
//! is one chunk.

use std::collections::HashMap;
use std::io::{Seek, Write};

use crate::check::ImageInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::format::{BLOCK_SIZE, CHUNK_BLKBITS_MASK, DEVICE_TAG_SIZE, NULL_ADDR};
use crate::limits::Limits;
use crate::meta::{self, Device};
use crate::read::{Budget, Image, ReadAt};
use crate::tree::{self, Body, FileData, Ino, Inode, Tree};

/// Builds an fsmeta from layer images added bottom first. Memory holds the
/// merged tree and the tree of the layer being added.
pub struct Merger {
    limits: Limits,
    tree: Tree,
    devices: Vec<Device>,
}

impl Default for Merger {
    fn default() -> Merger {
        Merger::new()
    }
}

impl Merger {
    /// An empty merge (a root directory, 0755, root's).
    pub fn new() -> Merger {
        Merger {
            limits: Limits::default(),
            tree: Tree::new(tree::implicit_dir()),
            devices: Vec::new(),
        }
    }

    /// Sets the limits: `max_entries` bounds the inodes read from one
    /// layer, `max_metadata_bytes` what is held of its names, xattrs and
    /// chunk tables.
    pub fn limits(&mut self, limits: Limits) -> &mut Merger {
        self.limits = limits;
        self
    }

    /// Adds the next layer image, above those added before. `tag` (at most
    /// 64 bytes, e.g. the layer's digest in hex) goes into its device slot.
    ///
    /// # Errors
    ///
    /// An invalid layer image ([`ErrorKind::InvalidImage`], naming the layer
    /// and path), a tag over 64 bytes, more than 65,535 layers, I/O errors.
    pub fn add_layer(&mut self, image: &dyn ReadAt, tag: &[u8]) -> Result<()> {
        let k = self.devices.len();
        let name = format!("layer {k}");
        if tag.len() > DEVICE_TAG_SIZE || k >= u16::MAX as usize {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                "a device tag over 64 bytes, or more than 65,535 layers",
            )
            .with_entry(&name));
        }
        let img = Image::open(image).map_err(|e| e.with_entry(&name))?;
        if !img.devices.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidImage,
                "a layer image with a device table (an fsmeta?)",
            )
            .with_entry(&name));
        }
        let layer = img
            .tree(&mut Budget {
                inodes: self.limits.max_entries,
                bytes: self.limits.max_metadata_bytes,
            })
            .map_err(|e| e.with_entry(&name))?;
        self.apply(&layer, (k + 1) as u16)?;
        self.devices.push(Device {
            tag: tag.to_vec(),
            blocks: img.sb.blocks,
        });
        Ok(())
    }

    /// Writes the fsmeta to `out` (which should be empty).
    ///
    /// # Errors
    ///
    /// No layers, I/O errors, or an image past the format's bounds.
    pub fn finish<W: Write + Seek>(self, mut out: W) -> Result<ImageInfo> {
        if self.devices.is_empty() {
            return Err(Error::new(
                ErrorKind::LayerMismatch,
                "an fsmeta of no layers",
            ));
        }
        let w = meta::write(&self.tree, &mut out, BLOCK_SIZE, &self.devices)?;
        Ok(ImageInfo::of(&w))
    }

    fn apply(&mut self, t: &Tree, dev: u16) -> Result<()> {
        let troot = t.root();
        let mroot = self.tree.root();
        let first = self.devices.is_empty();
        let opaque = tree::is_opaque(t.get(troot));
        if opaque {
            self.tree.clear(mroot);
        }
        if first || !tree::is_implicit(t.get(troot)) {
            set_dir_meta(self.tree.get_mut(mroot), t.get(troot));
        }
        // Inodes of this layer already copied (hard links).
        let mut copied: HashMap<Ino, Ino> = HashMap::new();
        let mut stack = vec![(troot, mroot, first || opaque)];
        while let Some((tdir, mdir, fresh)) = stack.pop() {
            for (name, &tc) in t.entries(tdir) {
                let ti = t.get(tc);
                if tree::is_whiteout(ti) {
                    if !fresh {
                        self.tree.unlink(mdir, name);
                    }
                    continue;
                }
                if ti.is_dir() {
                    let below = self
                        .tree
                        .lookup(mdir, name)
                        .filter(|&m| self.tree.get(m).is_dir());
                    // A directory the layer's tar never listed keeps the
                    // metadata of the one below.
                    let src = match below {
                        Some(m) if tree::is_implicit(ti) => self.tree.get(m).clone(),
                        _ => ti.clone(),
                    };
                    match below {
                        Some(m) if !tree::is_opaque(ti) => {
                            set_dir_meta(self.tree.get_mut(m), &src);
                            stack.push((tc, m, false));
                        }
                        _ => {
                            let mut d = Inode::dir(0, 0, 0, 0, 0);
                            set_dir_meta(&mut d, &src);
                            let m = self.tree.add(d);
                            self.tree.link(mdir, name, m);
                            stack.push((tc, m, true));
                        }
                    }
                    continue;
                }
                let m = match copied.get(&tc) {
                    Some(&m) => m,
                    None => {
                        let body = match &ti.body {
                            Body::File { size, data } => Body::File {
                                size: *size,
                                data: chunks(*size, data, dev).map_err(|e| e.with_entry(name))?,
                            },
                            other => other.clone(),
                        };
                        let m = self.tree.add(Inode { body, ..ti.clone() });
                        copied.insert(tc, m);
                        m
                    }
                };
                self.tree.link(mdir, name, m);
            }
        }
        Ok(())
    }
}

/// Gives a merged directory the metadata of a layer's, without the opaque mark.
fn set_dir_meta(dst: &mut Inode, src: &Inode) {
    dst.mode = src.mode;
    dst.uid = src.uid;
    dst.gid = src.gid;
    dst.mtime = src.mtime;
    dst.mtime_nsec = src.mtime_nsec;
    dst.xattrs = src.xattrs.clone();
    dst.remove_xattr(tree::OPAQUE.0, tree::OPAQUE.1);
}

/// A layer file's data as chunk indexes on device `dev`, with the largest
/// chunk size its block layout allows.
pub(crate) fn chunks(size: u64, data: &FileData, dev: u16) -> Result<FileData> {
    let nblocks = size.div_ceil(BLOCK_SIZE);
    if nblocks == 0 {
        return Ok(FileData::Flat { blkaddr: NULL_ADDR });
    }
    // Extents: (first logical block, its physical block or None for a hole).
    let mut ext: Vec<(u64, Option<u64>)> = Vec::new();
    let mut push = |l: u64, p: Option<u64>| {
        if let Some(&(pl, pp)) = ext.last() {
            let continues = match (pp, p) {
                (None, None) => true,
                (Some(a), Some(b)) => b == a + (l - pl),
                _ => false,
            };
            if continues {
                return;
            }
        }
        ext.push((l, p));
    };
    let some = |b: u32| (b != NULL_ADDR).then_some(b as u64);
    match data {
        FileData::Flat { blkaddr } => push(0, some(*blkaddr)),
        FileData::BlockMap { chunk_bits, blocks } => {
            for (c, &b) in blocks.iter().enumerate() {
                push((c as u64) << chunk_bits, some(b));
            }
        }
        FileData::Indexes { chunk_bits, chunks } => {
            for (c, &(d, b)) in chunks.iter().enumerate() {
                if d != 0 && b != NULL_ADDR {
                    return Err(Error::new(
                        ErrorKind::InvalidImage,
                        "a layer file whose chunks are on another device",
                    ));
                }
                push((c as u64) << chunk_bits, some(b));
            }
        }
    }
    let max_bits = (64 - (nblocks - 1).leading_zeros()).min(CHUNK_BLKBITS_MASK as u32);
    let bits = ext
        .iter()
        .skip(1)
        .map(|&(l, _)| l.trailing_zeros())
        .min()
        .unwrap_or(max_bits)
        .min(max_bits);
    let count = nblocks.div_ceil(1 << bits);
    let mut out = Vec::with_capacity(count as usize);
    let mut e = 0;
    for c in 0..count {
        let l = c << bits;
        while e + 1 < ext.len() && ext[e + 1].0 <= l {
            e += 1;
        }
        let (el, ep) = ext[e];
        out.push(match ep {
            None => (0, NULL_ADDR),
            Some(p) => {
                let b = u32::try_from(p + (l - el))
                    .ok()
                    .filter(|&b| b != NULL_ADDR)
                    .ok_or_else(|| {
                        Error::new(ErrorKind::LimitExceeded, "a block address past 32 bits")
                    })?;
                (dev, b)
            }
        });
    }
    Ok(FileData::Indexes {
        chunk_bits: bits as u8,
        chunks: out,
    })
}

/// Merges layer images (bottom first) into an fsmeta written to `out`; the
/// device tags are `layer0`, `layer1`, ...
///
/// # Errors
///
/// As [`Merger::add_layer`] and [`Merger::finish`].
pub fn merge<W: Write + Seek>(layers: &[&dyn ReadAt], out: W) -> Result<ImageInfo> {
    let mut m = Merger::new();
    for (k, l) in layers.iter().enumerate() {
        m.add_layer(*l, format!("layer{k}").as_bytes())?;
    }
    m.finish(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexes(d: FileData) -> (u8, Vec<(u16, u32)>) {
        match d {
            FileData::Indexes { chunk_bits, chunks } => (chunk_bits, chunks),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_contiguous_file_is_one_chunk() {
        let (chunk_bits, c) = indexes(chunks(10 << 20, &FileData::Flat { blkaddr: 7 }, 2).unwrap());
        assert_eq!(c, vec![(2, 7)]);
        assert!((BLOCK_SIZE << chunk_bits) >= 10 << 20);
    }

    #[test]
    fn holes_and_jumps_bound_the_chunk_size() {
        // 4 chunks of 16 blocks: data, hole, data elsewhere, data continuing it.
        let map = FileData::BlockMap {
            chunk_bits: 4,
            blocks: vec![100, NULL_ADDR, 500, 516],
        };
        let (chunk_bits, c) = indexes(chunks(64 * BLOCK_SIZE, &map, 1).unwrap());
        assert_eq!(chunk_bits, 4);
        assert_eq!(c, vec![(1, 100), (0, NULL_ADDR), (1, 500), (1, 516)]);
        // A jump at block 8 forces chunks of 8 blocks.
        let map = FileData::BlockMap {
            chunk_bits: 3,
            blocks: vec![10, 50],
        };
        assert_eq!(indexes(chunks(16 * BLOCK_SIZE, &map, 1).unwrap()).0, 3);
    }
}
