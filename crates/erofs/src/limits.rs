//! How much one input may make a writer hold in memory: [`Limits`], for
//! layer images from tars and for merges alike.

/// Bounds on what one tar may make the writer hold in memory.
///
/// Beyond these, the format's own bounds are refused as
/// [`ErrorKind::LimitExceeded`](crate::ErrorKind::LimitExceeded) (or the kind named): names up to 255 bytes
/// ([`ErrorKind::NameTooLong`](crate::ErrorKind::NameTooLong)), symlink targets up to 4095 bytes, xattr
/// names up to 255 bytes after their prefix and values up to 65,535, about
/// 256 KiB of xattrs per inode, 32-bit uids and gids, device numbers of
/// 12:20 bits ([`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported)), images up to 2^32 blocks
/// (16 TiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Tar members (headers of files, links, directories...), default 1,048,576.
    pub max_entries: u64,
    /// Metadata kept in memory: about 64 bytes per member plus its name,
    /// xattrs, symlink target and chunk map; default 256 MiB.
    pub max_metadata_bytes: u64,
    /// One PAX or GNU long-name extension header, default 1 MiB.
    pub max_extension_bytes: u64,
    /// Runs in one sparse file's map, default 65,536.
    pub max_sparse_runs: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: 1 << 20,
            max_metadata_bytes: 256 << 20,
            max_extension_bytes: 1 << 20,
            max_sparse_runs: 1 << 16,
        }
    }
}
