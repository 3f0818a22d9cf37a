//! What the tar parser hands out: each member as an [`Entry`] of some
//! [`Kind`], to a [`Sink`] that also receives the member's data.

use crate::error::Result;

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

/// One tar member, with its extension headers applied.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub kind: Kind,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// The file's logical size (the real size of a sparse file).
    pub size: u64,
    pub dev_major: u64,
    pub dev_minor: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The data runs `(offset, length)` of a sparse file, in order; the
    /// stored bytes are these runs one after the other.
    pub sparse: Option<Vec<(u64, u64)>>,
}

/// Receives what the parser reads.
pub(crate) trait Sink {
    /// A member begins; for a regular file its stored data bytes follow
    /// (the size, or the sum of a sparse file's runs).
    fn entry(&mut self, e: &Entry) -> Result<()>;
    /// Data of the current regular file.
    fn data(&mut self, bytes: &[u8]) -> Result<()>;
    /// The current member's data is complete.
    fn end(&mut self) -> Result<()>;
}

/// The largest size or offset a tar may give: Linux's `loff_t` (and an
/// EROFS inode's `i_size`) is signed.
pub(crate) const MAX_SIZE: u64 = i64::MAX as u64;
