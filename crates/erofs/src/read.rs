//! Reading EROFS images back: the superblock (magic, checksum, size) and
//! device table, inodes, inline and shared xattrs, directories, symlinks and
//! the block layout of regular files, into a [`Tree`] that merging uses,
//! or walked to check every inode as the kernel would read it.
//! Uncompressed images only; every offset, size and block address is
//! checked against the image before it is used, and no read is larger
//! than a block, an inode's xattrs, the device table or a chunk table
//! paid for from a [`Budget`].

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;

use crate::error::{Error, ErrorKind, Result};
use crate::format::{
    self, ftype_of, mode, xattr_ibody_size, DeviceSlot, RawInode, Superblock, BLOCK_SIZE,
    CHUNK_BLKBITS_MASK, CHUNK_FORMAT_INDEXES, COMPAT_SB_CHKSUM, DEVICE_SLOT_SIZE, DIRENT_SIZE,
    INCOMPAT_CHUNKED_FILE, INCOMPAT_DEVICE_TABLE, INODE_COMPACT_SIZE, INODE_EXTENDED_SIZE,
    LAYOUT_CHUNK_BASED, LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, NID_UNIT, NULL_ADDR, SUPER_OFFSET,
    SUPER_SIZE,
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

/// The largest `i_size` Linux reads (its `loff_t` is signed).
const MAX_ISIZE: u64 = i64::MAX as u64;
/// Chunk table entries read at once while checking.
const TABLE_PIECE: u64 = 8192;

/// What reading a tree may hold: inodes, and bytes of names, xattrs and
/// chunk tables.
pub(crate) struct Budget {
    pub inodes: u64,
    pub bytes: u64,
}

impl Budget {
    /// No bounds (for images this crate just wrote, and for checks that
    /// hold nothing).
    pub fn unbounded() -> Budget {
        Budget {
            inodes: u64::MAX,
            bytes: u64::MAX,
        }
    }

    fn spend(&mut self, bytes: u64) -> Result<()> {
        self.bytes = self.bytes.checked_sub(bytes).ok_or_else(|| {
            Error::new(
                ErrorKind::LimitExceeded,
                "the image's metadata passes the limit of bytes to hold",
            )
        })?;
        Ok(())
    }
}

/// What [`Image::for_each_dirent`] calls with each entry: its name, nid
/// and file type.
pub(crate) type DirentFn<'f> = dyn FnMut(&[u8], u64, u8) -> Result<()> + 'f;

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
        if SUPER_OFFSET + SUPER_SIZE + 16 * sb.sb_extslots as usize > BS as usize {
            return Err(bad(format!(
                "{} superblock extension slots do not fit block 0",
                sb.sb_extslots
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
            for (k, d) in img.devices.iter().enumerate() {
                if d.mapped_blkaddr as u64 + d.blocks as u64 > 1 << 32 {
                    return Err(bad(format!(
                        "device {} ends past 2^32 blocks of the flat address space",
                        k + 1
                    )));
                }
            }
        }
        if img.sb.meta_blkaddr >= img.sb.blocks {
            return Err(bad("the metadata area starts past the image's end"));
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
        if pos.saturating_add(INODE_COMPACT_SIZE) > self.len {
            return Err(bad(format!("inode {nid} lies past the image's end")));
        }
        let head = self.read(pos, (self.len - pos).min(INODE_EXTENDED_SIZE))?;
        let raw = RawInode::decode(&head, &self.sb)?;
        if raw.size > MAX_ISIZE {
            return Err(bad(format!(
                "an inode whose size {} is negative as Linux reads it",
                raw.size
            )));
        }
        if !matches!(
            raw.layout,
            LAYOUT_FLAT_PLAIN | LAYOUT_FLAT_INLINE | LAYOUT_CHUNK_BASED
        ) {
            return Err(bad(format!(
                "an inode with the data layout {} (compressed or unknown)",
                raw.layout
            )));
        }
        if ftype_of(raw.mode) == 0 {
            return Err(bad(format!("the inode type {:o}", raw.mode & mode::S_IFMT)));
        }
        if raw.nlink == 0 {
            return Err(bad("an inode with no links"));
        }
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

    /// `count` blocks from `start` lie inside the image.
    fn blocks_inside(&self, start: u32, count: u64) -> Result<()> {
        if count > 0 && start as u64 + count > self.sb.blocks as u64 {
            return Err(bad(format!(
                "{count} data blocks from block {start} run past the image's end ({} blocks)",
                self.sb.blocks
            )));
        }
        Ok(())
    }

    /// Where a flat inode's data lies, checked against the image: its
    /// first block, the whole blocks there, and the bytes of an inline
    /// tail after the inode.
    fn flat_extent(&self, n: &Node) -> Result<(u64, u64, u64)> {
        let size = n.raw.size;
        match n.raw.layout {
            LAYOUT_FLAT_PLAIN => {
                let blocks = size.div_ceil(BS);
                self.blocks_inside(n.raw.i_u, blocks)?;
                Ok((n.raw.i_u as u64, blocks, 0))
            }
            LAYOUT_FLAT_INLINE => {
                let (full, tail) = (size / BS, size % BS);
                self.blocks_inside(n.raw.i_u, full)?;
                if n.after % BS + tail > BS {
                    return Err(bad("an inline tail crosses a block"));
                }
                if n.after + tail > self.len {
                    return Err(bad("an inline tail runs past the image's end"));
                }
                Ok((n.raw.i_u as u64, full, tail))
            }
            l => Err(bad(format!(
                "a directory or symlink with the data layout {l}"
            ))),
        }
    }

    /// The bytes of a symlink (at most a block; flat layouts).
    fn content(&self, n: &Node) -> Result<Vec<u8>> {
        let size = n.raw.size;
        if size == 0 || size >= BS {
            return Err(bad("a symlink target of a size Linux cannot have"));
        }
        let (blk, full, _) = self.flat_extent(n)?;
        if full > 0 {
            self.read(blk * BS, size)
        } else {
            self.read(n.after, size)
        }
    }

    /// Calls `f` with each entry of a directory, `.` and `..` included
    /// (name, nid, file type), reading one block at a time, checking each
    /// block's layout, the names' bounds and their order.
    pub fn for_each_dirent(&self, n: &Node, f: &mut DirentFn<'_>) -> Result<()> {
        let size = n.raw.size;
        let (blk, full, _) = self.flat_extent(n)?;
        let mut prev: Vec<u8> = Vec::new();
        for b in 0..size.div_ceil(BS) {
            let len = (size - b * BS).min(BS);
            let block = if b < full {
                self.read((blk + b) * BS, len)?
            } else {
                self.read(n.after, len)?
            };
            if block.len() < DIRENT_SIZE {
                return Err(bad("a directory block too short for an entry"));
            }
            let first = format::read_u16(&block, 8) as usize;
            if first < DIRENT_SIZE || !first.is_multiple_of(DIRENT_SIZE) || first >= block.len() {
                return Err(bad("a directory block with a bad first name offset"));
            }
            let count = first / DIRENT_SIZE;
            for k in 0..count {
                let d = &block[k * DIRENT_SIZE..];
                let nid = format::read_u64(d, 0);
                let off = format::read_u16(d, 8) as usize;
                let ftype = d[10];
                let end = if k + 1 < count {
                    format::read_u16(&block[(k + 1) * DIRENT_SIZE..], 8) as usize
                } else {
                    let rest = &block[off.min(block.len())..];
                    off + rest.iter().position(|&c| c == 0).unwrap_or(rest.len())
                };
                if off < first
                    || off > end
                    || end > block.len()
                    || end - off > format::NAME_MAX
                    || end == off
                {
                    return Err(bad("a directory entry with a bad name"));
                }
                if ftype > format::ftype::LNK {
                    return Err(bad(format!("a directory entry of file type {ftype}")));
                }
                let name = &block[off..end];
                if !prev.is_empty() && prev[..] >= *name {
                    return Err(bad("directory entries out of order"));
                }
                prev.clear();
                prev.extend_from_slice(name);
                f(name, nid, ftype)?;
            }
        }
        Ok(())
    }

    /// The entries of a directory, without `.` and `..`, checked for order.
    pub fn dirents(&self, n: &Node, budget: &mut Budget) -> Result<Vec<(Vec<u8>, u64)>> {
        let mut out: Vec<(Vec<u8>, u64)> = Vec::new();
        self.for_each_dirent(n, &mut |name, nid, _| {
            if name != b"." && name != b".." {
                budget.spend(name.len() as u64 + 32)?;
                out.push((name.to_vec(), nid));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// A chunk-based file's chunk size (log2, in blocks), chunk count, entry
    /// size and where its table starts, the table checked to lie inside
    /// the image.
    fn chunk_table(&self, n: &Node) -> Result<(u8, u64, u64, u64)> {
        let format = (n.raw.i_u & 0xffff) as u16;
        if n.raw.i_u >> 16 != 0 || format & !(CHUNK_BLKBITS_MASK | CHUNK_FORMAT_INDEXES) != 0 {
            return Err(bad(format!("the chunk format {:#x}", n.raw.i_u)));
        }
        let bits = (format & CHUNK_BLKBITS_MASK) as u8;
        let count = n.raw.size.div_ceil(BS << bits);
        let unit = if format & CHUNK_FORMAT_INDEXES != 0 {
            8
        } else {
            4
        };
        let at = n.after.div_ceil(unit) * unit;
        count
            .checked_mul(unit)
            .and_then(|len| at.checked_add(len))
            .filter(|&end| end <= self.len)
            .ok_or_else(|| bad("a chunk table runs past the image's end"))?;
        Ok((bits, count, unit, at))
    }

    /// Checks chunk `c` (of `1 << bits` blocks) of a file of `size` bytes:
    /// a hole, or blocks inside its device.
    fn check_chunk(&self, size: u64, bits: u8, c: u64, dev: u16, blk: u32) -> Result<()> {
        if blk == NULL_ADDR {
            return Ok(());
        }
        let limit = match dev {
            0 => self.sb.blocks as u64,
            d => match self.devices.get(d as usize - 1) {
                Some(s) => s.blocks as u64,
                None => return Err(bad(format!("a chunk on device {d}, which the table lacks"))),
            },
        };
        let per = 1u64 << bits;
        let span = (size.div_ceil(BS) - c * per).min(per);
        if blk as u64 + span > limit {
            return Err(bad(format!(
                "chunk {c} ({span} blocks from block {blk}) runs past the end of device {dev}"
            )));
        }
        Ok(())
    }

    /// Reads a chunk table `piece` entries at a time, checking each entry.
    fn for_each_chunk(
        &self,
        n: &Node,
        piece: u64,
        f: &mut dyn FnMut(u16, u32) -> Result<()>,
    ) -> Result<u8> {
        let (bits, count, unit, at) = self.chunk_table(n)?;
        let mut c = 0;
        while c < count {
            let k = (count - c).min(piece);
            let table = self.read(at + c * unit, k * unit)?;
            for e in table.chunks(unit as usize) {
                let (dev, blk) = if unit == 8 {
                    (format::read_u16(e, 2), format::read_u32(e, 4))
                } else {
                    (0, format::read_u32(e, 0))
                };
                self.check_chunk(n.raw.size, bits, c, dev, blk)?;
                f(dev, blk)?;
                c += 1;
            }
        }
        Ok(bits)
    }

    /// A regular file's layout, its chunk table paid for from `budget`
    /// before it is read.
    fn file_data(&self, n: &Node, budget: &mut Budget) -> Result<FileData> {
        let size = n.raw.size;
        match n.raw.layout {
            LAYOUT_FLAT_PLAIN => {
                if size == 0 {
                    return Ok(FileData::Flat { blkaddr: NULL_ADDR });
                }
                self.blocks_inside(n.raw.i_u, size.div_ceil(BS))?;
                Ok(FileData::Flat { blkaddr: n.raw.i_u })
            }
            LAYOUT_FLAT_INLINE => Err(Error::new(
                ErrorKind::InvalidImage,
                "a file with an inline tail (chunk indexes cannot point at it)",
            )),
            LAYOUT_CHUNK_BASED => {
                let (_, count, unit, _) = self.chunk_table(n)?;
                budget.spend(count * unit)?;
                let piece = count.max(1);
                if unit == 8 {
                    let mut chunks = Vec::with_capacity(count as usize);
                    let bits = self.for_each_chunk(n, piece, &mut |d, b| {
                        chunks.push((d, b));
                        Ok(())
                    })?;
                    Ok(FileData::Indexes {
                        chunk_bits: bits,
                        chunks,
                    })
                } else {
                    let mut blocks = Vec::with_capacity(count as usize);
                    let bits = self.for_each_chunk(n, piece, &mut |_, b| {
                        blocks.push(b);
                        Ok(())
                    })?;
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

    /// Checks an inode's data as the kernel would map it, reading no file
    /// data: directories and symlinks flat and inside the image, regular
    /// files' blocks or every chunk inside their devices, other types
    /// without data.
    pub fn check_layout(&self, n: &Node) -> Result<()> {
        let r = &n.raw;
        match r.mode & mode::S_IFMT {
            mode::S_IFDIR => {
                self.flat_extent(n)?;
            }
            mode::S_IFLNK => {
                self.content(n)?;
            }
            mode::S_IFREG => match r.layout {
                LAYOUT_CHUNK_BASED => {
                    self.for_each_chunk(n, TABLE_PIECE, &mut |_, _| Ok(()))?;
                }
                _ => {
                    self.file_data(n, &mut Budget::unbounded())?;
                }
            },
            _ => {
                if r.size != 0 || r.layout != LAYOUT_FLAT_PLAIN {
                    return Err(bad("a device, FIFO or socket with data"));
                }
            }
        }
        Ok(())
    }

    /// The tree inode of a node (directories empty, to be filled).
    fn inode(&self, n: &Node, budget: &mut Budget) -> Result<Inode> {
        let r = &n.raw;
        let xattr_bytes: u64 = n
            .xattrs
            .iter()
            .map(|x| (x.suffix.len() + x.value.len()) as u64 + 32)
            .sum();
        budget.spend(64 + xattr_bytes)?;
        let body = match r.mode & mode::S_IFMT {
            mode::S_IFDIR => {
                self.check_layout(n)?;
                Body::Dir(Default::default())
            }
            mode::S_IFREG => Body::File {
                size: r.size,
                data: self.file_data(n, budget)?,
            },
            mode::S_IFLNK => Body::Symlink(self.content(n)?.into()),
            mode::S_IFCHR | mode::S_IFBLK => {
                self.check_layout(n)?;
                Body::Device(r.i_u)
            }
            mode::S_IFIFO | mode::S_IFSOCK => {
                self.check_layout(n)?;
                Body::Special
            }
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

    /// Reads the whole tree, holding at most what `budget` allows.
    pub fn tree(&self, budget: &mut Budget) -> Result<Tree> {
        let root_nid = self.sb.root_nid as u64;
        let root = self.node(root_nid)?;
        if root.raw.mode & mode::S_IFMT != mode::S_IFDIR {
            return Err(bad("the root is not a directory"));
        }
        let mut tree = Tree::new(self.inode(&root, budget)?);
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
                .dirents(&node, budget)
                .map_err(|e| e.with_entry(if path.is_empty() { &b"/"[..] } else { &path }))?;
            for (name, nid) in entries {
                if let Some(&known) = seen.get(&nid) {
                    if tree.get(known).is_dir() {
                        return Err(bad("a directory reachable by two paths"));
                    }
                    tree.link(ino, &name, known);
                    continue;
                }
                if seen.len() as u64 >= budget.inodes {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!("an image of more than {} inodes", budget.inodes),
                    ));
                }
                let child = self.node(nid).map_err(|e| e.with_entry(here(&name)))?;
                let inode = self
                    .inode(&child, budget)
                    .map_err(|e| e.with_entry(here(&name)))?;
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

    /// Walks every inode reachable from the root and checks what the
    /// kernel would check when it reads them (see [`Image::node`],
    /// [`Image::check_layout`], [`Image::for_each_dirent`]), and more:
    /// `.` and `..` name the directory and its parent, a directory entry's
    /// file type is its inode's, no directory has two paths, and the
    /// superblock counts the inodes found. Reads metadata only; returns
    /// the number of inodes.
    pub fn check_all(&self) -> Result<u64> {
        let root_nid = self.sb.root_nid as u64;
        let root = self.node(root_nid).map_err(|e| e.with_entry("/"))?;
        if root.raw.mode & mode::S_IFMT != mode::S_IFDIR {
            return Err(bad("the root inode is not a directory"));
        }
        let mut seen: HashSet<u64> = HashSet::new();
        seen.insert(root_nid);
        // (nid, parent nid, node, path)
        let mut stack = vec![(root_nid, root_nid, root, b"/".to_vec())];
        while let Some((nid, parent, node, path)) = stack.pop() {
            let (mut dot, mut dotdot) = (false, false);
            let mut visit = |name: &[u8], child: u64, ft: u8| -> Result<()> {
                let here = || {
                    let mut p = path.clone();
                    if p.len() > 1 {
                        p.push(b'/');
                    }
                    p.extend_from_slice(name);
                    p
                };
                if name == b"." || name == b".." {
                    let (want, flag) = if name == b"." {
                        (nid, &mut dot)
                    } else {
                        (parent, &mut dotdot)
                    };
                    if child != want || ft != format::ftype::DIR {
                        return Err(bad(format!(
                            "the entry {:?} names inode {child}, not {want}",
                            String::from_utf8_lossy(name)
                        )));
                    }
                    *flag = true;
                    return Ok(());
                }
                let c = self.node(child).map_err(|e| e.with_entry(here()))?;
                let t = ftype_of(c.raw.mode);
                if t != ft {
                    return Err(bad(format!(
                        "a directory entry of file type {ft} for an inode of type {t}"
                    ))
                    .with_entry(here()));
                }
                if !seen.insert(child) {
                    if t == format::ftype::DIR {
                        return Err(bad("a directory reachable by two paths").with_entry(here()));
                    }
                    return Ok(());
                }
                if seen.len() as u64 > self.sb.inos {
                    return Err(bad(format!(
                        "more inodes than the {} the superblock counts",
                        self.sb.inos
                    )));
                }
                if t == format::ftype::DIR {
                    stack.push((child, nid, c, here()));
                } else {
                    self.check_layout(&c).map_err(|e| e.with_entry(here()))?;
                }
                Ok(())
            };
            self.for_each_dirent(&node, &mut visit)
                .map_err(|e| e.with_entry(&path))?;
            if !dot || !dotdot {
                return Err(bad("a directory without its . and .. entries").with_entry(&path));
            }
        }
        if seen.len() as u64 != self.sb.inos {
            return Err(bad(format!(
                "{} inodes reachable, the superblock counts {}",
                seen.len(),
                self.sb.inos
            )));
        }
        Ok(seen.len() as u64)
    }
}
