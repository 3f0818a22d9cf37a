//! Reading and patching an image's bytes as a forger would, for tests of
//! what refuses forged images: superblock fields, inodes by path, dirents,
//! and the superblock checksum after a patch. Images of one-block
//! directories only.

pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// CRC-32C, reflected, no final inversion (the superblock's checksum).
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    let mut crc = seed;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Recomputes the superblock checksum after a patch (block 0 from 1024
/// on, the checksum field taken as zero).
pub fn fix_checksum(img: &mut [u8]) {
    let mut tail = img[1024..4096].to_vec();
    tail[4..8].fill(0);
    let c = crc32c(!0, &tail);
    img[1028..1032].copy_from_slice(&c.to_le_bytes());
}

/// An inode as the forger sees it.
pub struct Ino {
    pub pos: usize,
    pub extended: bool,
    pub size: u64,
    pub i_u: u32,
    /// Just past the inode and its inline xattrs.
    pub after: usize,
}

pub fn inode(img: &[u8], nid: u64) -> Ino {
    let meta = le32(img, 1024 + 40) as usize;
    let pos = meta * 4096 + nid as usize * 32;
    let format = le16(img, pos);
    let extended = format & 1 == 1;
    let icount = le16(img, pos + 2) as usize;
    let xattrs = if icount == 0 {
        0
    } else {
        12 + 4 * (icount - 1)
    };
    let (size, isize) = if extended {
        (le64(img, pos + 8), 64)
    } else {
        (le32(img, pos + 8) as u64, 32)
    };
    Ino {
        pos,
        extended,
        size,
        i_u: le32(img, pos + 16),
        after: pos + isize + xattrs,
    }
}

/// Where a directory's entries are: `(byte offset of the entries, their
/// bytes)` (directories here are under a block: inline or one block).
pub fn dir_block(img: &[u8], d: &Ino) -> usize {
    assert!(d.size < 4096, "a test directory of one block");
    let layout = (le16(img, d.pos) >> 1) & 7;
    if layout == 2 {
        d.after
    } else {
        d.i_u as usize * 4096
    }
}

/// The nid of `name` in directory `d`, and where its dirent is.
pub fn lookup(img: &[u8], d: &Ino, name: &str) -> (u64, usize) {
    let at = dir_block(img, d);
    let block = &img[at..at + d.size as usize];
    let count = le16(block, 8) as usize / 12;
    for k in 0..count {
        let off = le16(block, k * 12 + 8) as usize;
        let end = if k + 1 < count {
            le16(block, (k + 1) * 12 + 8) as usize
        } else {
            off + block[off..]
                .iter()
                .position(|&c| c == 0)
                .unwrap_or(block.len() - off)
        };
        if &block[off..end] == name.as_bytes() {
            return (le64(block, k * 12), at + k * 12);
        }
    }
    panic!("no {name} in the directory");
}

pub fn resolve(img: &[u8], path: &str) -> Ino {
    let root = le16(img, 1024 + 14) as u64;
    let mut at = inode(img, root);
    for c in path.split('/') {
        at = inode(img, lookup(img, &at, c).0);
    }
    at
}
