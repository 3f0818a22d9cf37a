//! The EROFS on-disk format this crate writes and reads: the superblock,
//! compact and extended inodes, inline xattrs, directory entries, chunk
//! indexes and device slots, little-endian, 4 KiB blocks.

use crate::error::{Error, ErrorKind, Result};

/// The block size of every image this crate writes (and the only one it reads).
pub const BLOCK_SIZE: u64 = 4096;
/// `log2(BLOCK_SIZE)`.
pub const BLOCK_BITS: u8 = 12;
/// Where the superblock starts in block 0.
pub const SUPER_OFFSET: usize = 1024;
/// The superblock's size without extension slots.
pub const SUPER_SIZE: usize = 128;
/// The superblock magic.
pub const MAGIC: u32 = 0xE0F5_E1E2;
/// A block address meaning "no block" (a hole, or no data blocks at all).
pub const NULL_ADDR: u32 = u32::MAX;
/// Inode slots are 32-byte units; a nid is an offset from the metadata area in them.
pub const NID_UNIT: u64 = 32;
/// The longest name a directory entry can hold.
pub const NAME_MAX: usize = 255;

/// The superblock carries a crc32c of block 0 from [`SUPER_OFFSET`] on.
pub const COMPAT_SB_CHKSUM: u32 = 0x1;
/// Some inodes are chunk-based.
pub const INCOMPAT_CHUNKED_FILE: u32 = 0x4;
/// The image has a device table (extra devices).
pub const INCOMPAT_DEVICE_TABLE: u32 = 0x8;

/// Data layout: blocks from `raw_blkaddr`, no tail packing.
pub const LAYOUT_FLAT_PLAIN: u8 = 0;
/// Data layout: blocks from `raw_blkaddr`, the last partial block after the inode.
pub const LAYOUT_FLAT_INLINE: u8 = 2;
/// Data layout: a chunk table after the inode.
pub const LAYOUT_CHUNK_BASED: u8 = 4;

/// Chunk format bit: 8-byte chunk indexes (device id + block) instead of a
/// 4-byte block map.
pub const CHUNK_FORMAT_INDEXES: u16 = 0x20;
/// The chunk size is `BLOCK_SIZE << (format & CHUNK_BLKBITS_MASK)`.
pub const CHUNK_BLKBITS_MASK: u16 = 0x1f;

/// Size of a compact inode.
pub const INODE_COMPACT_SIZE: u64 = 32;
/// Size of an extended inode.
pub const INODE_EXTENDED_SIZE: u64 = 64;
/// Size of a directory entry.
pub const DIRENT_SIZE: usize = 12;
/// Size of a device table slot.
pub const DEVICE_SLOT_SIZE: usize = 128;
/// Size of a device tag in a slot.
pub const DEVICE_TAG_SIZE: usize = 64;
/// Size of the inline xattr header.
pub const XATTR_HEADER_SIZE: usize = 12;

/// Directory entry file types.
pub mod ftype {
    /// Regular file.
    pub const REG: u8 = 1;
    /// Directory.
    pub const DIR: u8 = 2;
    /// Character device.
    pub const CHR: u8 = 3;
    /// Block device.
    pub const BLK: u8 = 4;
    /// FIFO.
    pub const FIFO: u8 = 5;
    /// Socket.
    pub const SOCK: u8 = 6;
    /// Symbolic link.
    pub const LNK: u8 = 7;
}

/// `st_mode` type bits.
pub mod mode {
    /// Type mask.
    pub const S_IFMT: u16 = 0o170000;
    /// Socket.
    pub const S_IFSOCK: u16 = 0o140000;
    /// Symbolic link.
    pub const S_IFLNK: u16 = 0o120000;
    /// Regular file.
    pub const S_IFREG: u16 = 0o100000;
    /// Block device.
    pub const S_IFBLK: u16 = 0o060000;
    /// Directory.
    pub const S_IFDIR: u16 = 0o040000;
    /// Character device.
    pub const S_IFCHR: u16 = 0o020000;
    /// FIFO.
    pub const S_IFIFO: u16 = 0o010000;
}

/// The directory entry file type of an `st_mode`.
pub fn ftype_of(m: u16) -> u8 {
    match m & mode::S_IFMT {
        mode::S_IFREG => ftype::REG,
        mode::S_IFDIR => ftype::DIR,
        mode::S_IFCHR => ftype::CHR,
        mode::S_IFBLK => ftype::BLK,
        mode::S_IFIFO => ftype::FIFO,
        mode::S_IFSOCK => ftype::SOCK,
        mode::S_IFLNK => ftype::LNK,
        _ => 0,
    }
}

/// xattr name prefixes and their indexes in the format.
pub const XATTR_PREFIXES: [(u8, &[u8]); 5] = [
    (1, b"user."),
    (2, b"system.posix_acl_access"),
    (3, b"system.posix_acl_default"),
    (4, b"trusted."),
    (6, b"security."),
];

/// Splits a full xattr name into its prefix index and the rest, or `None`
/// when the format has no index for its namespace.
pub fn split_xattr_name(name: &[u8]) -> Option<(u8, &[u8])> {
    for (index, prefix) in XATTR_PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            // The ACL names are whole names; the namespaces need a suffix.
            let whole = index == 2 || index == 3;
            if whole == rest.is_empty() {
                return Some((index, rest));
            }
            return None;
        }
    }
    None
}

/// The full xattr name of a prefix index and suffix.
pub fn join_xattr_name(index: u8, suffix: &[u8]) -> Option<Vec<u8>> {
    let (_, prefix) = XATTR_PREFIXES.iter().find(|(i, _)| *i == index)?;
    let mut v = prefix.to_vec();
    v.extend_from_slice(suffix);
    Some(v)
}

/// Linux's `new_encode_dev`: major up to 12 bits, minor up to 20 bits.
pub fn encode_dev(major: u32, minor: u32) -> Option<u32> {
    if major > 0xfff || minor > 0xfffff {
        return None;
    }
    Some((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
}

/// Linux's `new_decode_dev`, as `(major, minor)`.
#[cfg(test)]
pub fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The superblock fields this crate uses (the rest are zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Superblock {
    /// Stored checksum (crc32c, see [`checksum_block0`]).
    pub checksum: u32,
    /// Compatible feature bits.
    pub feature_compat: u32,
    /// Incompatible feature bits.
    pub feature_incompat: u32,
    /// nid of the root directory (16 bits in this format version).
    pub root_nid: u16,
    /// Number of inodes.
    pub inos: u64,
    /// Timestamp of every compact inode (seconds).
    pub build_time: u64,
    /// Timestamp of every compact inode (nanoseconds).
    pub build_time_nsec: u32,
    /// Size of the image in blocks.
    pub blocks: u32,
    /// Start block of the metadata area (nids count from here).
    pub meta_blkaddr: u32,
    /// Start block of shared xattrs.
    pub xattr_blkaddr: u32,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume name.
    pub volume_name: [u8; 16],
    /// Number of devices besides the primary one.
    pub extra_devices: u16,
    /// Start of the device table, in device slots.
    pub devt_slotoff: u16,
    /// The superblock's own block size, as a shift.
    pub blkszbits: u8,
    /// Superblock extension slots.
    pub sb_extslots: u8,
}

impl Superblock {
    /// The 128 bytes at [`SUPER_OFFSET`].
    pub fn encode(&self) -> [u8; SUPER_SIZE] {
        let mut b = [0u8; SUPER_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.checksum.to_le_bytes());
        b[8..12].copy_from_slice(&self.feature_compat.to_le_bytes());
        b[12] = self.blkszbits;
        b[13] = self.sb_extslots;
        b[14..16].copy_from_slice(&self.root_nid.to_le_bytes());
        b[16..24].copy_from_slice(&self.inos.to_le_bytes());
        b[24..32].copy_from_slice(&self.build_time.to_le_bytes());
        b[32..36].copy_from_slice(&self.build_time_nsec.to_le_bytes());
        b[36..40].copy_from_slice(&self.blocks.to_le_bytes());
        b[40..44].copy_from_slice(&self.meta_blkaddr.to_le_bytes());
        b[44..48].copy_from_slice(&self.xattr_blkaddr.to_le_bytes());
        b[48..64].copy_from_slice(&self.uuid);
        b[64..80].copy_from_slice(&self.volume_name);
        b[80..84].copy_from_slice(&self.feature_incompat.to_le_bytes());
        // 84..86: compression algorithms, unused.
        b[86..88].copy_from_slice(&self.extra_devices.to_le_bytes());
        b[88..90].copy_from_slice(&self.devt_slotoff.to_le_bytes());
        b
    }

    /// Parses the superblock out of block 0 (at least 1152 bytes).
    pub fn decode(block0: &[u8]) -> Result<Superblock> {
        let bad = |m: &str| Error::new(ErrorKind::InvalidImage, m.to_string());
        if block0.len() < SUPER_OFFSET + SUPER_SIZE {
            return Err(bad("the image is shorter than its superblock"));
        }
        let b = &block0[SUPER_OFFSET..SUPER_OFFSET + SUPER_SIZE];
        if le32(b, 0) != MAGIC {
            return Err(bad("no EROFS magic in the superblock"));
        }
        let mut volume_name = [0u8; 16];
        volume_name.copy_from_slice(&b[64..80]);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[48..64]);
        Ok(Superblock {
            checksum: le32(b, 4),
            feature_compat: le32(b, 8),
            blkszbits: b[12],
            sb_extslots: b[13],
            root_nid: le16(b, 14),
            inos: le64(b, 16),
            build_time: le64(b, 24),
            build_time_nsec: le32(b, 32),
            blocks: le32(b, 36),
            meta_blkaddr: le32(b, 40),
            xattr_blkaddr: le32(b, 44),
            uuid,
            volume_name,
            feature_incompat: le32(b, 80),
            extra_devices: le16(b, 86),
            devt_slotoff: le16(b, 88),
        })
    }
}

/// CRC-32C (Castagnoli), reflected, without the final inversion, as the
/// kernel's `crc32c(seed, ...)` computes it.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = seed;
    for &byte in data {
        crc = table[((crc ^ byte as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The superblock checksum of block 0: crc32c seeded with `!0` over the
/// bytes from [`SUPER_OFFSET`] to the end of the block, with the checksum
/// field taken as zero.
pub fn checksum_block0(block0: &[u8]) -> u32 {
    let mut tail = block0[SUPER_OFFSET..BLOCK_SIZE as usize].to_vec();
    tail[4..8].fill(0);
    crc32c(!0, &tail)
}

/// An inode as stored, compact or extended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawInode {
    /// Extended (64 bytes) rather than compact (32 bytes).
    pub extended: bool,
    /// One of the `LAYOUT_*` values.
    pub layout: u8,
    /// Inline xattr size in 4-byte units past the 12-byte header (0: none).
    pub xattr_icount: u16,
    /// `st_mode`.
    pub mode: u16,
    /// Link count.
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// Start block, device number or chunk format, by type and layout.
    pub i_u: u32,
    /// The 32-bit inode number for old `stat` calls.
    pub ino: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds (extended inodes only).
    pub mtime: i64,
    /// Modification time, nanoseconds (extended inodes only).
    pub mtime_nsec: u32,
}

impl RawInode {
    /// The on-disk size of this inode.
    pub fn size_on_disk(&self) -> u64 {
        if self.extended {
            INODE_EXTENDED_SIZE
        } else {
            INODE_COMPACT_SIZE
        }
    }

    /// Appends the inode's bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let format = (self.extended as u16) | ((self.layout as u16) << 1);
        out.extend_from_slice(&format.to_le_bytes());
        out.extend_from_slice(&self.xattr_icount.to_le_bytes());
        out.extend_from_slice(&self.mode.to_le_bytes());
        if self.extended {
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&self.size.to_le_bytes());
            out.extend_from_slice(&self.i_u.to_le_bytes());
            out.extend_from_slice(&self.ino.to_le_bytes());
            out.extend_from_slice(&self.uid.to_le_bytes());
            out.extend_from_slice(&self.gid.to_le_bytes());
            out.extend_from_slice(&self.mtime.to_le_bytes());
            out.extend_from_slice(&self.mtime_nsec.to_le_bytes());
            out.extend_from_slice(&self.nlink.to_le_bytes());
            out.extend_from_slice(&[0u8; 16]);
        } else {
            out.extend_from_slice(&(self.nlink as u16).to_le_bytes());
            out.extend_from_slice(&(self.size as u32).to_le_bytes());
            // The compact mtime field (an offset from the superblock's
            // time on kernels that read it): zero, as compact inodes are
            // only used for inodes whose time is the superblock's.
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&self.i_u.to_le_bytes());
            out.extend_from_slice(&self.ino.to_le_bytes());
            out.extend_from_slice(&(self.uid as u16).to_le_bytes());
            out.extend_from_slice(&(self.gid as u16).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
    }

    /// Parses an inode; `bytes` holds at least the inode (64 bytes for an
    /// extended one). Compact inodes get the superblock's time.
    pub fn decode(bytes: &[u8], sb: &Superblock) -> Result<RawInode> {
        let bad = |m: &str| Error::new(ErrorKind::InvalidImage, m.to_string());
        if bytes.len() < INODE_COMPACT_SIZE as usize {
            return Err(bad("an inode runs past the end of the image"));
        }
        let format = le16(bytes, 0);
        if format & !0x0f != 0 {
            return Err(bad("an inode has format bits this reader does not know"));
        }
        let extended = format & 1 == 1;
        let layout = ((format >> 1) & 0x7) as u8;
        let xattr_icount = le16(bytes, 2);
        let mode = le16(bytes, 4);
        if extended {
            if bytes.len() < INODE_EXTENDED_SIZE as usize {
                return Err(bad("an inode runs past the end of the image"));
            }
            Ok(RawInode {
                extended,
                layout,
                xattr_icount,
                mode,
                size: le64(bytes, 8),
                i_u: le32(bytes, 16),
                ino: le32(bytes, 20),
                uid: le32(bytes, 24),
                gid: le32(bytes, 28),
                mtime: le64(bytes, 32) as i64,
                mtime_nsec: le32(bytes, 40),
                nlink: le32(bytes, 44),
            })
        } else {
            Ok(RawInode {
                extended,
                layout,
                xattr_icount,
                mode,
                nlink: le16(bytes, 6) as u32,
                size: le32(bytes, 8) as u64,
                i_u: le32(bytes, 16),
                ino: le32(bytes, 20),
                uid: le16(bytes, 24) as u32,
                gid: le16(bytes, 26) as u32,
                mtime: sb.build_time as i64,
                mtime_nsec: sb.build_time_nsec,
            })
        }
    }
}

/// The inline xattr area size for an `i_xattr_icount`.
pub fn xattr_ibody_size(icount: u16) -> u64 {
    if icount == 0 {
        0
    } else {
        XATTR_HEADER_SIZE as u64 + 4 * (icount as u64 - 1)
    }
}

/// The size of one xattr entry: 4-byte header, name suffix, value, padded to 4.
pub fn xattr_entry_size(suffix_len: usize, value_len: usize) -> usize {
    (4 + suffix_len + value_len).div_ceil(4) * 4
}

/// A device table slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSlot {
    /// A tag (up to 64 bytes, NUL-padded): a digest or a name.
    pub tag: Vec<u8>,
    /// Size of the device in blocks.
    pub blocks: u32,
    /// Where the device starts in the flat (concatenated) address space.
    pub mapped_blkaddr: u32,
}

impl DeviceSlot {
    /// The slot's 128 bytes.
    pub fn encode(&self) -> [u8; DEVICE_SLOT_SIZE] {
        let mut b = [0u8; DEVICE_SLOT_SIZE];
        let n = self.tag.len().min(DEVICE_TAG_SIZE);
        b[..n].copy_from_slice(&self.tag[..n]);
        b[64..68].copy_from_slice(&self.blocks.to_le_bytes());
        b[68..72].copy_from_slice(&self.mapped_blkaddr.to_le_bytes());
        b
    }

    /// Parses a slot.
    pub fn decode(b: &[u8]) -> DeviceSlot {
        let tag = &b[..DEVICE_TAG_SIZE];
        let end = tag.iter().position(|&c| c == 0).unwrap_or(DEVICE_TAG_SIZE);
        DeviceSlot {
            tag: tag[..end].to_vec(),
            blocks: le32(b, 64),
            mapped_blkaddr: le32(b, 68),
        }
    }
}

/// Reads a little-endian `u16` (for the reader's dirents).
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    le16(b, at)
}

/// Reads a little-endian `u32`.
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    le32(b, at)
}

/// Reads a little-endian `u64`.
pub(crate) fn read_u64(b: &[u8], at: usize) -> u64 {
    le64(b, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The standard CRC-32C of "123456789" is 0xE3069283, which is the
        // inverted form of the kernel-style value.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn dev_numbers_round_trip() {
        for (ma, mi) in [(0, 0), (1, 3), (8, 1), (259, 65537), (4095, 0xfffff)] {
            let d = encode_dev(ma, mi).unwrap();
            assert_eq!(decode_dev(d), (ma, mi));
        }
        assert_eq!(encode_dev(4096, 0), None);
        assert_eq!(encode_dev(0, 1 << 20), None);
    }

    #[test]
    fn xattr_names_split_by_namespace() {
        assert_eq!(split_xattr_name(b"user.foo"), Some((1, &b"foo"[..])));
        assert_eq!(
            split_xattr_name(b"security.capability"),
            Some((6, &b"capability"[..]))
        );
        assert_eq!(
            split_xattr_name(b"system.posix_acl_access"),
            Some((2, &b""[..]))
        );
        assert_eq!(split_xattr_name(b"system.posix_acl_accessx"), None);
        assert_eq!(split_xattr_name(b"user."), None);
        assert_eq!(split_xattr_name(b"system.nfs4_acl"), None);
        assert_eq!(
            join_xattr_name(4, b"overlay.opaque").unwrap(),
            b"trusted.overlay.opaque"
        );
    }

    #[test]
    fn inodes_round_trip() {
        let sb = Superblock {
            build_time: 77,
            build_time_nsec: 5,
            ..Default::default()
        };
        for extended in [false, true] {
            let i = RawInode {
                extended,
                layout: LAYOUT_FLAT_INLINE,
                xattr_icount: 3,
                mode: mode::S_IFDIR | 0o755,
                nlink: 4,
                size: 100,
                i_u: NULL_ADDR,
                ino: 9,
                uid: 1000,
                gid: 1001,
                mtime: if extended { -5 } else { 77 },
                mtime_nsec: if extended { 999 } else { 5 },
            };
            let mut v = Vec::new();
            i.encode(&mut v);
            assert_eq!(v.len() as u64, i.size_on_disk());
            v.resize(64, 0);
            assert_eq!(RawInode::decode(&v, &sb).unwrap(), i);
        }
    }
}
