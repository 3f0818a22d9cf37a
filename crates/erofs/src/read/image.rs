//! An opened image: the superblock (magic, checksum, size) and device
//! table checked, inodes with their inline and shared xattrs, symlink
//! targets and directory blocks, each read checked against the image.

use crate::error::{Error, ErrorKind, Result};
use crate::format::{
    self, ftype_of, mode, xattr_ibody_size, DeviceSlot, RawInode, Superblock, BLOCK_SIZE,
    COMPAT_SB_CHKSUM, DEVICE_SLOT_SIZE, DIRENT_SIZE, INCOMPAT_CHUNKED_FILE, INCOMPAT_DEVICE_TABLE,
    INODE_COMPACT_SIZE, INODE_EXTENDED_SIZE, LAYOUT_CHUNK_BASED, LAYOUT_FLAT_INLINE,
    LAYOUT_FLAT_PLAIN, NID_UNIT, SUPER_OFFSET, SUPER_SIZE,
};
use crate::tree::Xattr;

use super::source::ReadAt;

pub(super) const BS: u64 = BLOCK_SIZE;
/// Incompatible features this reader handles (0x1, zero padding, is set by
/// mkfs.erofs and only matters for compressed data, which is refused per inode).
const KNOWN_INCOMPAT: u32 = 0x1 | INCOMPAT_CHUNKED_FILE | INCOMPAT_DEVICE_TABLE;

pub(super) fn bad(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidImage, msg)
}

/// The largest `i_size` Linux reads (its `loff_t` is signed).
const MAX_ISIZE: u64 = i64::MAX as u64;

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

    pub(super) fn spend(&mut self, bytes: u64) -> Result<()> {
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

/// Bytes of the image read at once into the window cache: a walk reads
/// inodes and directory blocks mostly in the order they lie, so one read
/// serves many (a metadata walk of a layer image is thousands of inodes).
const WINDOW: u64 = 64 * 1024;
/// Windows kept (1 MiB in all), the least recently used replaced.
const WINDOWS: usize = 16;

/// The window cache of an [`Image`]'s reads: each window is the aligned
/// `WINDOW` bytes around a read (cut at the image's end).
#[derive(Default)]
struct Windows {
    /// (start, bytes, last use), unordered.
    held: Vec<(u64, Vec<u8>, u64)>,
    clock: u64,
}

/// An opened image.
pub(crate) struct Image<'a> {
    src: &'a dyn ReadAt,
    windows: std::cell::RefCell<Windows>,
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
            windows: Default::default(),
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
        let start = at - at % WINDOW;
        if end > start + WINDOW {
            // Larger than a window, or across two: read as it is.
            let mut buf = vec![0u8; (end - at) as usize];
            self.src
                .read_exact_at(&mut buf, at)
                .map_err(|e| Error::io("reading the image failed", e))?;
            return Ok(buf);
        }
        let mut w = self.windows.borrow_mut();
        w.clock += 1;
        let clock = w.clock;
        let k = match w.held.iter().position(|(s, _, _)| *s == start) {
            Some(k) => k,
            None => {
                let mut bytes = vec![0u8; (self.len.min(start + WINDOW) - start) as usize];
                self.src
                    .read_exact_at(&mut bytes, start)
                    .map_err(|e| Error::io("reading the image failed", e))?;
                if w.held.len() < WINDOWS {
                    w.held.push((start, bytes, clock));
                    w.held.len() - 1
                } else {
                    let k = (0..w.held.len())
                        .min_by_key(|&k| w.held[k].2)
                        .expect("windows are held");
                    w.held[k] = (start, bytes, clock);
                    k
                }
            }
        };
        w.held[k].2 = clock;
        let from = (at - start) as usize;
        Ok(w.held[k].1[from..from + (end - at) as usize].to_vec())
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
    pub(super) fn blocks_inside(&self, start: u32, count: u64) -> Result<()> {
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
    pub(super) fn flat_extent(&self, n: &Node) -> Result<(u64, u64, u64)> {
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
    pub(super) fn content(&self, n: &Node) -> Result<Vec<u8>> {
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
}
