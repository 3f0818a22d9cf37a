//! Writing an image's metadata from a [`Tree`]: link counts, the choice of
//! compact or extended inodes, inline tails where they fit, the placement of
//! inodes (no inline tail or small inode crosses a block; gaps are reused),
//! directory and symlink blocks after the inodes, and block 0 (superblock,
//! device table, the first inodes) with its checksum, written last.
//!
//! Everything is decided before a byte is written, so the bytes depend only
//! on the tree: the same tree gives the same image.

use std::collections::BTreeSet;
use std::io::{BufWriter, Seek, SeekFrom, Write};

use crate::error::{Error, ErrorKind, Result};
use crate::format::{
    self, ftype_of, DeviceSlot, RawInode, Superblock, BLOCK_SIZE, CHUNK_FORMAT_INDEXES,
    COMPAT_SB_CHKSUM, DEVICE_SLOT_SIZE, DIRENT_SIZE, INCOMPAT_CHUNKED_FILE, INCOMPAT_DEVICE_TABLE,
    LAYOUT_CHUNK_BASED, LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, NID_UNIT, NULL_ADDR, SUPER_OFFSET,
    SUPER_SIZE, XATTR_HEADER_SIZE,
};
use crate::tree::{Body, FileData, Ino, Tree};

/// An extra device of the image (a layer an fsmeta's chunks point into).
#[derive(Debug, Clone)]
pub(crate) struct Device {
    pub tag: Vec<u8>,
    pub blocks: u32,
}

/// What was written.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub blocks: u64,
    pub inodes: u64,
    pub devices: Vec<DeviceSlot>,
}

const BS: u64 = BLOCK_SIZE;
const DEVT_START: u64 = (SUPER_OFFSET + SUPER_SIZE) as u64;

/// How one inode is laid out.
struct Plan {
    raw: RawInode,
    /// Bytes of the inline xattr area.
    xattr_len: u64,
    /// Bytes of inline tail data after the xattrs.
    tail: u64,
    /// Padding before the chunk table, and the table's size.
    chunk_pad: u64,
    chunk_len: u64,
    /// Whole blocks in the block area (directory blocks, long symlinks).
    blocks: u64,
}

impl Plan {
    fn item(&self) -> u64 {
        self.raw.size_on_disk() + self.xattr_len + self.tail + self.chunk_pad + self.chunk_len
    }
}

/// The walk of the reachable tree: order, parents and link counts.
struct Walk {
    order: Vec<Ino>,
    /// Position in `order` of each inode of the arena (`u32::MAX`: unreachable).
    slot: Vec<u32>,
    /// For each inode in order: its parent directory (itself for the root).
    parent: Vec<Ino>,
    nlink: Vec<u32>,
}

fn walk(tree: &Tree) -> Result<Walk> {
    let mut slot = vec![u32::MAX; tree.len()];
    let root = tree.root();
    let mut w = Walk {
        order: vec![root],
        slot: Vec::new(),
        parent: vec![root],
        nlink: vec![2],
    };
    slot[root as usize] = 0;
    let mut at = 0;
    while at < w.order.len() {
        let ino = w.order[at];
        if let Body::Dir(entries) = &tree.get(ino).body {
            for &child in entries.values() {
                let is_dir = tree.get(child).is_dir();
                let s = slot[child as usize];
                if s == u32::MAX {
                    slot[child as usize] = w.order.len() as u32;
                    w.order.push(child);
                    w.parent.push(ino);
                    w.nlink.push(if is_dir { 2 } else { 1 });
                } else if is_dir {
                    return Err(Error::new(
                        ErrorKind::InvalidImage,
                        "a directory is reachable by two paths",
                    ));
                } else {
                    w.nlink[s as usize] = w.nlink[s as usize].saturating_add(1);
                }
                if is_dir {
                    w.nlink[at] = w.nlink[at].saturating_add(1);
                }
            }
        }
        at += 1;
    }
    w.slot = slot;
    Ok(w)
}

/// The most common non-negative mtime: the one compact inodes get.
fn build_time(tree: &Tree, order: &[Ino]) -> (u64, u32) {
    let mut counts: std::collections::HashMap<(i64, u32), u32> = Default::default();
    for &ino in order {
        let i = tree.get(ino);
        if i.mtime >= 0 {
            *counts.entry((i.mtime, i.mtime_nsec)).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|((s, n), _)| (s as u64, n))
        .unwrap_or((0, 0))
}

/// The sorted names of a directory, `.` and `..` included.
fn dir_names(entries: &std::collections::BTreeMap<Box<[u8]>, Ino>) -> Vec<&[u8]> {
    let mut names: Vec<&[u8]> = Vec::with_capacity(entries.len() + 2);
    names.push(b".");
    names.push(b"..");
    names.extend(entries.keys().map(|k| &k[..]));
    names.sort_unstable();
    names
}

/// Packs directory entries into blocks: `(first, end, bytes used)` per block.
fn pack(names: &[&[u8]]) -> Vec<(usize, usize, u64)> {
    let mut blocks = Vec::new();
    let (mut start, mut used) = (0, 0u64);
    for (k, n) in names.iter().enumerate() {
        let add = (DIRENT_SIZE + n.len()) as u64;
        if used + add > BS {
            blocks.push((start, k, used));
            start = k;
            used = 0;
        }
        used += add;
    }
    blocks.push((start, names.len(), used));
    blocks
}

fn dir_size(packed: &[(usize, usize, u64)]) -> u64 {
    (packed.len() as u64 - 1) * BS + packed.last().map_or(0, |b| b.2)
}

fn xattr_len(xattrs: &[crate::tree::Xattr]) -> Result<u64> {
    if xattrs.is_empty() {
        return Ok(0);
    }
    let mut n = XATTR_HEADER_SIZE as u64;
    for x in xattrs {
        n += format::xattr_entry_size(x.suffix.len(), x.value.len()) as u64;
    }
    if (n - XATTR_HEADER_SIZE as u64) / 4 + 1 > u16::MAX as u64 {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            format!("{n} bytes of xattrs on one inode (the format holds 256 KiB)"),
        ));
    }
    Ok(n)
}

fn plan(tree: &Tree, w: &Walk, k: usize, time: (u64, u32)) -> Result<Plan> {
    let ino = w.order[k];
    let i = tree.get(ino);
    let xattr_len = xattr_len(&i.xattrs)?;
    let icount = if xattr_len == 0 {
        0
    } else {
        ((xattr_len - XATTR_HEADER_SIZE as u64) / 4 + 1) as u16
    };
    let (size, mut i_u) = match &i.body {
        Body::Dir(e) => (dir_size(&pack(&dir_names(e))), 0),
        Body::File { size, data } => (
            *size,
            match data {
                FileData::Flat { blkaddr } => *blkaddr,
                FileData::BlockMap { chunk_bits, .. } => *chunk_bits as u32,
                FileData::Indexes { chunk_bits, .. } => {
                    *chunk_bits as u32 | CHUNK_FORMAT_INDEXES as u32
                }
            },
        ),
        Body::Symlink(t) => (t.len() as u64, 0),
        Body::Device(rdev) => (0, *rdev),
        Body::Special => (0, 0),
    };
    let nlink = w.nlink[k];
    let extended = i.uid > u16::MAX as u32
        || i.gid > u16::MAX as u32
        || nlink > u16::MAX as u32
        || size > u32::MAX as u64
        || i.mtime < 0
        || (i.mtime as u64, i.mtime_nsec) != time;
    let mut raw = RawInode {
        extended,
        layout: LAYOUT_FLAT_PLAIN,
        xattr_icount: icount,
        mode: i.mode,
        nlink,
        size,
        i_u,
        ino: (k + 1) as u32,
        uid: i.uid,
        gid: i.gid,
        mtime: i.mtime,
        mtime_nsec: i.mtime_nsec,
    };
    let head = raw.size_on_disk() + xattr_len;
    let (mut tail, mut chunk_pad, mut chunk_len, mut blocks) = (0, 0, 0, 0);
    match &i.body {
        Body::Dir(_) | Body::Symlink(_) => {
            let rest = size % BS;
            if rest != 0 && head + rest <= BS {
                raw.layout = LAYOUT_FLAT_INLINE;
                tail = rest;
                blocks = size / BS;
            } else {
                blocks = size.div_ceil(BS);
            }
            if blocks == 0 {
                i_u = NULL_ADDR;
            }
            raw.i_u = i_u;
        }
        Body::File { data, .. } => match data {
            FileData::Flat { .. } => {}
            FileData::BlockMap { blocks: map, .. } => {
                raw.layout = LAYOUT_CHUNK_BASED;
                chunk_len = 4 * map.len() as u64;
                chunk_pad = (4 - head % 4) % 4;
            }
            FileData::Indexes { chunks, .. } => {
                raw.layout = LAYOUT_CHUNK_BASED;
                chunk_len = 8 * chunks.len() as u64;
                chunk_pad = (8 - head % 8) % 8;
            }
        },
        _ => {}
    }
    Ok(Plan {
        raw,
        xattr_len,
        tail,
        chunk_pad,
        chunk_len,
        blocks,
    })
}

/// Places items in regions; no item of up to a block crosses a block, and
/// the gaps this leaves are reused by later small items.
struct Alloc {
    regions: Vec<(u64, u64)>,
    region: usize,
    cursor: u64,
    gaps: BTreeSet<(u64, u64)>,
    end: u64,
}

impl Alloc {
    fn new(regions: Vec<(u64, u64)>) -> Alloc {
        let cursor = regions[0].0;
        Alloc {
            regions,
            region: 0,
            cursor,
            gaps: BTreeSet::new(),
            end: cursor,
        }
    }

    fn gap(&mut self, start: u64, end: u64) {
        if end >= start + NID_UNIT {
            self.gaps.insert((end - start, start));
        }
    }

    fn place(&mut self, size: u64) -> u64 {
        let size = size.div_ceil(NID_UNIT) * NID_UNIT;
        let small = size <= BS;
        if small {
            if let Some(&(len, start)) = self.gaps.range((size, 0)..).next() {
                self.gaps.remove(&(len, start));
                self.gap(start + size, start + len);
                return start;
            }
        }
        loop {
            let end = self.regions[self.region].1;
            let mut pos = self.cursor;
            let block_end = (pos / BS + 1) * BS;
            if small && pos + size > block_end {
                self.gap(pos, block_end.min(end));
                pos = block_end;
            }
            if pos + size <= end {
                self.cursor = pos + size;
                self.end = self.end.max(self.cursor);
                return pos;
            }
            if pos < end {
                self.gap(pos, end);
            }
            self.region += 1;
            self.cursor = self.regions[self.region].0;
        }
    }
}

/// Writes through to the output at increasing offsets, except block 0,
/// which is kept to be written (with its checksum) at the end.
struct Emitter<'a, W: Write> {
    out: BufWriter<&'a mut W>,
    block0: Vec<u8>,
    pos: u64,
}

static ZEROS: [u8; 65536] = [0; 65536];

impl<W: Write> Emitter<'_, W> {
    fn zeros(&mut self, mut n: u64) -> std::io::Result<()> {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.out.write_all(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn write_at(&mut self, mut at: u64, mut b: &[u8]) -> std::io::Result<()> {
        if at < BS {
            let n = (b.len() as u64).min(BS - at) as usize;
            self.block0[at as usize..at as usize + n].copy_from_slice(&b[..n]);
            b = &b[n..];
            at += n as u64;
            if b.is_empty() {
                return Ok(());
            }
        }
        debug_assert!(at >= self.pos, "metadata written out of order");
        self.zeros(at - self.pos)?;
        self.out.write_all(b)?;
        self.pos = at + b.len() as u64;
        Ok(())
    }
}

fn io_err(e: std::io::Error) -> Error {
    Error::io("writing the image's metadata failed", e)
}

fn encode_xattrs(out: &mut Vec<u8>, xattrs: &[crate::tree::Xattr]) {
    if xattrs.is_empty() {
        return;
    }
    out.extend_from_slice(&[0u8; XATTR_HEADER_SIZE]);
    for x in xattrs {
        let start = out.len();
        out.push(x.suffix.len() as u8);
        out.push(x.index);
        out.extend_from_slice(&(x.value.len() as u16).to_le_bytes());
        out.extend_from_slice(&x.suffix);
        out.extend_from_slice(&x.value);
        let len = out.len() - start;
        out.resize(start + len.div_ceil(4) * 4, 0);
    }
}

/// Writes the metadata of `tree` into `out`, whose file data (if any) ends
/// at `data_end`; `devices` are the extra devices, bottom first.
pub(crate) fn write<W: Write + Seek>(
    tree: &Tree,
    out: &mut W,
    data_end: u64,
    devices: &[Device],
) -> Result<Written> {
    debug_assert!(data_end >= BS && data_end.is_multiple_of(BS));
    let w = walk(tree)?;
    let n = w.order.len();
    let time = build_time(tree, &w.order);
    let mut plans = Vec::with_capacity(n);
    for k in 0..n {
        plans.push(plan(tree, &w, k, time)?);
    }

    // Regions: what block 0 has left, then the metadata area after the data.
    let devt_end = DEVT_START + (devices.len() * DEVICE_SLOT_SIZE) as u64;
    let mut regions = Vec::new();
    if devt_end < BS {
        regions.push((devt_end, BS));
    }
    let tail_start = data_end.max(devt_end.div_ceil(NID_UNIT) * NID_UNIT);
    regions.push((tail_start, u64::MAX));

    // The root's nid has 16 bits: it goes first, and without its inline tail
    // if that is what keeps it in block 0.
    let room0 = regions[0].1 - regions[0].0;
    if plans[0].item() > room0 && plans[0].raw.layout == LAYOUT_FLAT_INLINE {
        let p = &mut plans[0];
        p.raw.layout = LAYOUT_FLAT_PLAIN;
        p.tail = 0;
        p.blocks = p.raw.size.div_ceil(BS);
    }
    let mut alloc = Alloc::new(regions);
    let mut pos = Vec::with_capacity(n);
    for p in &plans {
        pos.push(alloc.place(p.item()));
    }
    let root_nid = pos[0] / NID_UNIT;
    if root_nid > u16::MAX as u64 {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            "the root directory's inode and xattrs do not fit where the superblock can point",
        ));
    }

    // Directory and long-symlink blocks after the inodes.
    let first_block = alloc.end.max(tail_start).div_ceil(BS);
    let mut next_block = first_block;
    for p in plans.iter_mut() {
        if p.blocks > 0 {
            p.raw.i_u = u32::try_from(next_block).map_err(|_| too_large())?;
            next_block += p.blocks;
        }
    }
    // fsck.erofs 1.5 reads an xattr header after every inode, xattrs or
    // not: an image must not end right after its last inode.
    let last_end = plans
        .iter()
        .zip(&pos)
        .map(|(p, &at)| at + p.item())
        .max()
        .unwrap_or(0);
    if next_block == first_block && last_end == next_block * BS {
        next_block += 1;
    }
    let total_blocks = u32::try_from(next_block).map_err(|_| too_large())?;
    let mut slots = Vec::with_capacity(devices.len());
    let mut mapped = total_blocks as u64;
    for d in devices {
        slots.push(DeviceSlot {
            tag: d.tag.clone(),
            blocks: d.blocks,
            mapped_blkaddr: u32::try_from(mapped).map_err(|_| too_large())?,
        });
        mapped += d.blocks as u64;
    }
    if mapped > u32::MAX as u64 {
        return Err(too_large());
    }

    out.seek(SeekFrom::Start(tail_start)).map_err(io_err)?;
    let mut em = Emitter {
        out: BufWriter::with_capacity(1 << 20, out),
        block0: vec![0u8; BS as usize],
        pos: tail_start,
    };
    for (k, s) in slots.iter().enumerate() {
        em.write_at(DEVT_START + (k * DEVICE_SLOT_SIZE) as u64, &s.encode())
            .map_err(io_err)?;
    }
    let nid_of = |ino: Ino| pos[w.slot[ino as usize] as usize] / NID_UNIT;
    let mut by_pos: Vec<usize> = (0..n).collect();
    by_pos.sort_unstable_by_key(|&k| pos[k]);
    let mut buf = Vec::with_capacity(8192);
    let mut any_chunked = false;
    for &k in &by_pos {
        let p = &plans[k];
        let i = tree.get(w.order[k]);
        buf.clear();
        p.raw.encode(&mut buf);
        encode_xattrs(&mut buf, &i.xattrs);
        debug_assert_eq!(buf.len() as u64, p.raw.size_on_disk() + p.xattr_len);
        match &i.body {
            Body::Dir(entries) if p.tail > 0 => {
                let names = dir_names(entries);
                let packed = pack(&names);
                let &(s, e, _) = packed.last().expect("a block");
                encode_dirents(&mut buf, tree, &w, k, entries, &names[s..e], &nid_of);
            }
            Body::Symlink(t) if p.tail > 0 => buf.extend_from_slice(t),
            Body::File { data, .. } => match data {
                FileData::Flat { .. } => {}
                FileData::BlockMap { blocks, .. } => {
                    any_chunked = true;
                    buf.resize(buf.len() + p.chunk_pad as usize, 0);
                    for b in blocks {
                        buf.extend_from_slice(&b.to_le_bytes());
                    }
                }
                FileData::Indexes { chunks, .. } => {
                    any_chunked = true;
                    buf.resize(buf.len() + p.chunk_pad as usize, 0);
                    for &(dev, blk) in chunks {
                        buf.extend_from_slice(&0u16.to_le_bytes());
                        buf.extend_from_slice(
                            &(if blk == NULL_ADDR { 0 } else { dev }).to_le_bytes(),
                        );
                        buf.extend_from_slice(&blk.to_le_bytes());
                    }
                }
            },
            _ => {}
        }
        em.write_at(pos[k], &buf).map_err(io_err)?;
    }
    for (k, p) in plans.iter().enumerate() {
        if p.blocks == 0 {
            continue;
        }
        let i = tree.get(w.order[k]);
        buf.clear();
        match &i.body {
            Body::Dir(entries) => {
                let names = dir_names(entries);
                let packed = pack(&names);
                for &(s, e, _) in packed.iter().take(p.blocks as usize) {
                    let start = buf.len();
                    encode_dirents(&mut buf, tree, &w, k, entries, &names[s..e], &nid_of);
                    buf.resize(start + BS as usize, 0);
                }
            }
            Body::Symlink(t) => buf.extend_from_slice(t),
            _ => unreachable!("only directories and symlinks have metadata blocks"),
        }
        buf.resize((p.blocks * BS) as usize, 0);
        em.write_at(p.raw.i_u as u64 * BS, &buf).map_err(io_err)?;
    }
    let end = total_blocks as u64 * BS;
    if em.pos < end {
        let n = end - em.pos;
        em.zeros(n).map_err(io_err)?;
        em.pos = end;
    }
    let mut block0 = std::mem::take(&mut em.block0);
    em.out.flush().map_err(io_err)?;
    drop(em);

    let mut incompat = 0;
    if any_chunked {
        incompat |= INCOMPAT_CHUNKED_FILE;
    }
    if !devices.is_empty() {
        incompat |= INCOMPAT_DEVICE_TABLE;
    }
    let mut sb = Superblock {
        feature_compat: COMPAT_SB_CHKSUM,
        feature_incompat: incompat,
        blkszbits: format::BLOCK_BITS,
        root_nid: root_nid as u16,
        inos: n as u64,
        build_time: time.0,
        build_time_nsec: time.1,
        blocks: total_blocks,
        extra_devices: devices.len() as u16,
        devt_slotoff: if devices.is_empty() {
            0
        } else {
            (DEVT_START / DEVICE_SLOT_SIZE as u64) as u16
        },
        ..Default::default()
    };
    block0[SUPER_OFFSET..SUPER_OFFSET + SUPER_SIZE].copy_from_slice(&sb.encode());
    sb.checksum = format::checksum_block0(&block0);
    block0[SUPER_OFFSET..SUPER_OFFSET + SUPER_SIZE].copy_from_slice(&sb.encode());
    out.seek(SeekFrom::Start(0)).map_err(io_err)?;
    out.write_all(&block0).map_err(io_err)?;
    out.flush().map_err(io_err)?;
    Ok(Written {
        blocks: total_blocks as u64,
        inodes: n as u64,
        devices: slots,
    })
}

fn too_large() -> Error {
    Error::new(
        ErrorKind::LimitExceeded,
        "the image would pass 2^32 blocks (16 TiB)",
    )
}

/// Appends one block's directory entries (without padding).
fn encode_dirents(
    buf: &mut Vec<u8>,
    tree: &Tree,
    w: &Walk,
    k: usize,
    entries: &std::collections::BTreeMap<Box<[u8]>, Ino>,
    names: &[&[u8]],
    nid_of: &dyn Fn(Ino) -> u64,
) {
    let me = w.order[k];
    let mut nameoff = (names.len() * DIRENT_SIZE) as u16;
    for name in names {
        let (nid, ft) = match *name {
            b"." => (nid_of(me), format::ftype::DIR),
            b".." => (nid_of(w.parent[k]), format::ftype::DIR),
            n => {
                let child = entries[n];
                (nid_of(child), ftype_of(tree.get(child).mode))
            }
        };
        buf.extend_from_slice(&nid.to_le_bytes());
        buf.extend_from_slice(&nameoff.to_le_bytes());
        buf.push(ft);
        buf.push(0);
        nameoff += name.len() as u16;
    }
    for name in names {
        buf.extend_from_slice(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_fills_blocks_without_splitting_entries() {
        let long = vec![b'x'; 255];
        let mut names: Vec<&[u8]> = vec![b".", b".."];
        for _ in 0..40 {
            names.push(&long);
        }
        let packed = pack(&names);
        assert!(packed.len() > 1);
        for &(s, e, used) in &packed {
            let sum: u64 = names[s..e].iter().map(|n| 12 + n.len() as u64).sum();
            assert_eq!(sum, used);
            assert!(used <= BS);
        }
        assert_eq!(packed.last().unwrap().1, names.len());
    }

    #[test]
    fn small_items_never_cross_a_block_and_gaps_are_reused() {
        let mut a = Alloc::new(vec![(1152, BS), (10 * BS, u64::MAX)]);
        let root = a.place(64 + 2000);
        assert_eq!(root, 1152);
        let big = a.place(3000); // does not fit in block 0: goes after the data
        assert_eq!(big, 10 * BS);
        let small = a.place(32); // fills the gap left in block 0
        assert!(small < BS);
        let next = a.place(2000); // would cross block 10's end
        assert_eq!(next, 11 * BS);
        for (p, s) in [(root, 2064), (big, 3000), (small, 32), (next, 2000)] {
            assert_eq!(p / BS, (p + s - 1) / BS);
        }
    }
}
