//! Reading EROFS images back: the superblock (magic, checksum, size) and
//! device table, inodes, inline and shared xattrs, directories, symlinks and
//! the block layout of regular files, into a [`Tree`] that merging uses.
//! Uncompressed images only; every offset is checked against the image.

use std::collections::HashMap;
use std::fs::File;
use std::io;

use crate::error::{Error, ErrorKind, Result};
use crate::format::{
    self, mode, xattr_ibody_size, DeviceSlot, RawInode, Superblock, BLOCK_SIZE, CHUNK_BLKBITS_MASK,
    CHUNK_FORMAT_INDEXES, COMPAT_SB_CHKSUM, DEVICE_SLOT_SIZE, DIRENT_SIZE, INCOMPAT_CHUNKED_FILE,
    INCOMPAT_DEVICE_TABLE, LAYOUT_CHUNK_BASED, LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, NID_UNIT,
    NULL_ADDR,
};
use crate::tree::{Body, FileData, Ino, Inode, Tree, Xattr};

/// Random-access reading of an image: implemented for [`File`] (positioned
/// reads, so a shared `&File` works) and for bytes in memory.
pub trait ReadAt {
    /// Fills `buf` from `offset`; an error if the source is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The source's size in bytes.
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).ok().filter(|&s| s <= self.len());
        match start.and_then(|s| self.get(s..s.checked_add(buf.len())?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

const BS: u64 = BLOCK_SIZE;
/// Incompatible features this reader handles (0x1, zero padding, is set by
/// mkfs.erofs and only matters for compressed data, which is refused per inode).
const KNOWN_INCOMPAT: u32 = 0x1 | INCOMPAT_CHUNKED_FILE | INCOMPAT_DEVICE_TABLE;

fn bad(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidImage, msg)
}

/// An opened image.
pub(crate) struct Image<'a> {
    src: &'a dyn ReadAt,
    pub sb: Superblock,
    pub devices: Vec<DeviceSlot>,
    /// The image's size in bytes (`blocks * 4096`).
    pub len: u64,
}

/// One inode as read, with where its inline part starts.
pub(crate) struct Node {
    pub raw: RawInode,
    pub xattrs: Vec<Xattr>,
    /// Byte offset just past the inode and its xattrs.
    pub after: u64,
}

impl<'a> Image<'a> {
    /// Checks the superblock (magic, block size, checksum, features, the
    /// image's size) and reads the device table.
    pub fn open(src: &'a dyn ReadAt) -> Result<Image<'a>> {
        let size = src
            .size()
            .map_err(|e| Error::io("reading the image's size failed", e))?;
        if size < BS {
            return Err(bad(format!("{size} bytes are too few for an EROFS image")));
        }
        let mut block0 = vec![0u8; BS as usize];
        src.read_exact_at(&mut block0, 0)
            .map_err(|e| Error::io("reading the superblock failed", e))?;
        let sb = Superblock::decode(&block0)?;
        if sb.blkszbits != format::BLOCK_BITS {
            return Err(bad(format!(
                "a block size of 2^{} bytes (this crate reads 4096)",
                sb.blkszbits
            )));
        }
        if sb.feature_compat & COMPAT_SB_CHKSUM != 0 {
            let crc = format::checksum_block0(&block0);
            if crc != sb.checksum {
                return Err(bad(format!(
                    "the superblock checksum is {:08x}, the superblock says {:08x}",
                    crc, sb.checksum
                )));
            }
        }
        if sb.feature_incompat & !KNOWN_INCOMPAT != 0 {
            return Err(bad(format!(
                "incompatible features {:#x} this reader does not know",
                sb.feature_incompat & !KNOWN_INCOMPAT
            )));
        }
        let len = sb.blocks as u64 * BS;
        if len != size {
            return Err(bad(format!(
                "the image has {size} bytes, its superblock says {} blocks ({len} bytes)",
                sb.blocks
            )));
        }
        let mut img = Image {
            src,
            sb,
            devices: Vec::new(),
            len,
        };
        if img.sb.feature_incompat & INCOMPAT_DEVICE_TABLE != 0 {
            let n = img.sb.extra_devices as usize;
            let at = img.sb.devt_slotoff as u64 * DEVICE_SLOT_SIZE as u64;
            let table = img.read(at, (n * DEVICE_SLOT_SIZE) as u64)?;
            img.devices = table
                .chunks(DEVICE_SLOT_SIZE)
                .map(DeviceSlot::decode)
                .collect();
        }
        Ok(img)
    }

    /// Reads `len` bytes at `at`, which must lie inside the image.
    pub fn read(&self, at: u64, len: u64) -> Result<Vec<u8>> {
        let end = at
            .checked_add(len)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                bad(format!(
                    "a read of {len} bytes at {at} runs past the image's end"
                ))
            })?;
        let mut buf = vec![0u8; (end - at) as usize];
        self.src
            .read_exact_at(&mut buf, at)
            .map_err(|e| Error::io("reading the image failed", e))?;
        Ok(buf)
    }

    fn nid_pos(&self, nid: u64) -> Result<u64> {
        nid.checked_mul(NID_UNIT)
            .and_then(|o| o.checked_add(self.sb.meta_blkaddr as u64 * BS))
            .ok_or_else(|| bad("an inode number out of range"))
    }

    /// Reads an inode and its xattrs.
    pub fn node(&self, nid: u64) -> Result<Node> {
        let pos = self.nid_pos(nid)?;
        let head = self.read(pos, (self.len - pos.min(self.len)).min(64))?;
        let raw = RawInode::decode(&head, &self.sb)?;
        let xlen = xattr_ibody_size(raw.xattr_icount);
        let at = pos + raw.size_on_disk();
        let xattrs = if xlen == 0 {
            Vec::new()
        } else {
            self.xattrs(&self.read(at, xlen)?)?
        };
        Ok(Node {
            raw,
            xattrs,
            after: at + xlen,
        })
    }

    fn xattr_entry(&self, b: &[u8]) -> Result<(Xattr, usize)> {
        if b.len() < 4 {
            return Err(bad("a truncated xattr entry"));
        }
        let (nlen, index, vlen) = (b[0] as usize, b[1], format::read_u16(b, 2) as usize);
        let total = format::xattr_entry_size(nlen, vlen);
        if 4 + nlen + vlen > b.len() {
            return Err(bad("an xattr entry runs past its area"));
        }
        if index & 0x80 != 0 || format::join_xattr_name(index, &b[4..4 + nlen]).is_none() {
            return Err(bad(format!(
                "an xattr with the name index {index}, which this reader does not know"
            )));
        }
        Ok((
            Xattr {
                index,
                suffix: b[4..4 + nlen].into(),
                value: b[4 + nlen..4 + nlen + vlen].into(),
            },
            total,
        ))
    }

    fn xattrs(&self, area: &[u8]) -> Result<Vec<Xattr>> {
        let shared = area[4] as usize;
        let mut out = Vec::new();
        let mut at = 12 + 4 * shared;
        if at > area.len() {
            return Err(bad("an xattr header with more shared xattrs than room"));
        }
        for k in 0..shared {
            let id = format::read_u32(area, 12 + 4 * k) as u64;
            let pos = self.sb.xattr_blkaddr as u64 * BS + id * 4;
            let head = self.read(pos, 4)?;
            let len = 4 + head[0] as u64 + format::read_u16(&head, 2) as u64;
            let (x, _) = self.xattr_entry(&self.read(pos, len)?)?;
            out.push(x);
        }
        while at < area.len() {
            let (x, n) = self.xattr_entry(&area[at..])?;
            out.push(x);
            at += n;
        }
        out.sort();
        Ok(out)
    }

    /// The bytes of a directory or symlink (flat layouts).
    fn content(&self, n: &Node) -> Result<Vec<u8>> {
        let size = n.raw.size;
        if size > self.len {
            return Err(bad("a directory or symlink larger than the image"));
        }
        match n.raw.layout {
            LAYOUT_FLAT_PLAIN => {
                if size == 0 {
                    return Ok(Vec::new());
                }
                self.read(n.raw.i_u as u64 * BS, size)
            }
            LAYOUT_FLAT_INLINE => {
                let full = size / BS * BS;
                let mut v = if full > 0 {
                    self.read(n.raw.i_u as u64 * BS, full)?
                } else {
                    Vec::new()
                };
                let tail = size - full;
                if n.after % BS + tail > BS {
                    return Err(bad("an inline tail crosses a block"));
                }
                v.extend(self.read(n.after, tail)?);
                Ok(v)
            }
            l => Err(bad(format!(
                "a directory or symlink with the data layout {l}"
            ))),
        }
    }

    /// The entries of a directory, without `.` and `..`, checked for order.
    pub fn dirents(&self, n: &Node) -> Result<Vec<(Vec<u8>, u64)>> {
        let data = self.content(n)?;
        let mut out: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut prev: Option<Vec<u8>> = None;
        for block in data.chunks(BS as usize) {
            if block.len() < DIRENT_SIZE {
                return Err(bad("a directory block too short for an entry"));
            }
            let first = format::read_u16(block, 8) as usize;
            if first < DIRENT_SIZE || !first.is_multiple_of(DIRENT_SIZE) || first > block.len() {
                return Err(bad("a directory block with a bad first name offset"));
            }
            let count = first / DIRENT_SIZE;
            for k in 0..count {
                let d = &block[k * DIRENT_SIZE..];
                let nid = format::read_u64(d, 0);
                let off = format::read_u16(d, 8) as usize;
                let end = if k + 1 < count {
                    format::read_u16(&block[(k + 1) * DIRENT_SIZE..], 8) as usize
                } else {
                    let rest = &block[off.min(block.len())..];
                    off + rest.iter().position(|&c| c == 0).unwrap_or(rest.len())
                };
                if off > end || end > block.len() || end - off > format::NAME_MAX || end == off {
                    return Err(bad("a directory entry with a bad name"));
                }
                let name = block[off..end].to_vec();
                if let Some(p) = &prev {
                    if *p >= name {
                        return Err(bad("directory entries out of order"));
                    }
                }
                prev = Some(name.clone());
                if name != b"." && name != b".." {
                    out.push((name, nid));
                }
            }
        }
        Ok(out)
    }

    /// A regular file's layout.
    fn file_data(&self, n: &Node) -> Result<FileData> {
        let size = n.raw.size;
        match n.raw.layout {
            LAYOUT_FLAT_PLAIN => {
                if size == 0 {
                    return Ok(FileData::Flat { blkaddr: NULL_ADDR });
                }
                let end = (n.raw.i_u as u64).checked_add(size.div_ceil(BS));
                if end.is_none_or(|e| e > self.sb.blocks as u64) {
                    return Err(bad("a file's blocks run past the image's end"));
                }
                Ok(FileData::Flat { blkaddr: n.raw.i_u })
            }
            LAYOUT_FLAT_INLINE => Err(Error::new(
                ErrorKind::InvalidImage,
                "a file with an inline tail (chunk indexes cannot point at it)",
            )),
            LAYOUT_CHUNK_BASED => {
                let format = (n.raw.i_u & 0xffff) as u16;
                if format & !(CHUNK_BLKBITS_MASK | CHUNK_FORMAT_INDEXES) != 0 {
                    return Err(bad(format!("the chunk format {format:#x}")));
                }
                let bits = (format & CHUNK_BLKBITS_MASK) as u8;
                let chunk = 1u64 << (12 + bits as u32);
                let count = size.div_ceil(chunk);
                let indexes = format & CHUNK_FORMAT_INDEXES != 0;
                let unit = if indexes { 8 } else { 4 };
                let at = n.after.div_ceil(unit) * unit;
                let table = self.read(
                    at,
                    count
                        .checked_mul(unit)
                        .ok_or_else(|| bad("a chunk table out of range"))?,
                )?;
                let check = |blk: u32, limit: u64| -> Result<()> {
                    if blk != NULL_ADDR && blk as u64 >= limit {
                        return Err(bad("a chunk points past its device"));
                    }
                    Ok(())
                };
                if indexes {
                    let chunks: Vec<(u16, u32)> = table
                        .chunks(8)
                        .map(|c| (format::read_u16(c, 2), format::read_u32(c, 4)))
                        .collect();
                    for &(dev, blk) in &chunks {
                        let limit = match dev {
                            0 => self.sb.blocks as u64,
                            d => match self.devices.get(d as usize - 1) {
                                Some(s) => s.blocks as u64,
                                None if blk == NULL_ADDR => 0,
                                None => {
                                    return Err(bad(format!(
                                        "a chunk on device {d}, which the table lacks"
                                    )))
                                }
                            },
                        };
                        check(blk, limit)?;
                    }
                    Ok(FileData::Indexes {
                        chunk_bits: bits,
                        chunks,
                    })
                } else {
                    let blocks: Vec<u32> =
                        table.chunks(4).map(|c| format::read_u32(c, 0)).collect();
                    for &b in &blocks {
                        check(b, self.sb.blocks as u64)?;
                    }
                    Ok(FileData::BlockMap {
                        chunk_bits: bits,
                        blocks,
                    })
                }
            }
            l => Err(bad(format!(
                "a file with the data layout {l} (compressed files are not read)"
            ))),
        }
    }

    /// The tree inode of a node (directories empty, to be filled).
    fn inode(&self, n: &Node) -> Result<Inode> {
        let r = &n.raw;
        let body = match r.mode & mode::S_IFMT {
            mode::S_IFDIR => Body::Dir(Default::default()),
            mode::S_IFREG => Body::File {
                size: r.size,
                data: self.file_data(n)?,
            },
            mode::S_IFLNK => {
                if r.size == 0 || r.size >= BS {
                    return Err(bad("a symlink target of a size Linux cannot have"));
                }
                Body::Symlink(self.content(n)?.into())
            }
            mode::S_IFCHR | mode::S_IFBLK => Body::Device(r.i_u),
            mode::S_IFIFO | mode::S_IFSOCK => Body::Special,
            m => return Err(bad(format!("the inode type {m:o}"))),
        };
        Ok(Inode {
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            mtime: r.mtime,
            mtime_nsec: r.mtime_nsec,
            xattrs: n.xattrs.clone(),
            body,
        })
    }

    /// Reads the whole tree; at most `max_inodes` inodes.
    pub fn tree(&self, max_inodes: u64) -> Result<Tree> {
        let root_nid = self.sb.root_nid as u64;
        let root = self.node(root_nid)?;
        if root.raw.mode & mode::S_IFMT != mode::S_IFDIR {
            return Err(bad("the root is not a directory"));
        }
        let mut tree = Tree::new(self.inode(&root)?);
        let mut seen: HashMap<u64, Ino> = HashMap::new();
        seen.insert(root_nid, tree.root());
        let mut queue = vec![(root, tree.root(), Vec::new())];
        while let Some((node, ino, path)) = queue.pop() {
            let here = |name: &[u8]| {
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(name);
                p
            };
            let entries = self
                .dirents(&node)
                .map_err(|e| e.with_entry(if path.is_empty() { &b"/"[..] } else { &path }))?;
            for (name, nid) in entries {
                if let Some(&known) = seen.get(&nid) {
                    if tree.get(known).is_dir() {
                        return Err(bad("a directory reachable by two paths"));
                    }
                    tree.link(ino, &name, known);
                    continue;
                }
                if seen.len() as u64 >= max_inodes {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!("an image of more than {max_inodes} inodes"),
                    ));
                }
                let child = self.node(nid).map_err(|e| e.with_entry(here(&name)))?;
                let inode = self.inode(&child).map_err(|e| e.with_entry(here(&name)))?;
                let is_dir = inode.is_dir();
                let c = tree.add(inode);
                tree.link(ino, &name, c);
                seen.insert(nid, c);
                if is_dir {
                    queue.push((child, c, here(&name)));
                }
            }
        }
        Ok(tree)
    }
}
