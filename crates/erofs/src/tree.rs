//! The in-memory metadata tree an image is written from: an arena of inodes
//! (metadata, xattrs, where a file's data lies) and directories mapping
//! names to inodes. Hard links are two names for one inode; link counts are
//! derived when the image is written. No file data is held here.

use std::collections::BTreeMap;

use crate::format::{mode, NULL_ADDR};

/// An index into [`Tree::inodes`].
pub(crate) type Ino = u32;

/// An extended attribute, its name split into the format's prefix index and
/// the rest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Xattr {
    pub index: u8,
    pub suffix: Box<[u8]>,
    pub value: Box<[u8]>,
}

/// Where a regular file's data lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileData {
    /// Contiguous blocks of the image itself from `blkaddr` (`NULL_ADDR`
    /// for an empty file).
    Flat { blkaddr: u32 },
    /// Chunks of `4096 << chunk_bits` bytes in the image itself, one block
    /// address per chunk (`NULL_ADDR`: a hole).
    BlockMap { chunk_bits: u8, blocks: Vec<u32> },
    /// Chunks on other devices: `(device id, block)` per chunk
    /// (`NULL_ADDR`: a hole).
    Indexes {
        chunk_bits: u8,
        chunks: Vec<(u16, u32)>,
    },
}

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    Dir(BTreeMap<Box<[u8]>, Ino>),
    File {
        size: u64,
        data: FileData,
    },
    Symlink(Box<[u8]>),
    /// A character or block device (by `mode`), Linux-encoded.
    Device(u32),
    /// A FIFO or socket (by `mode`).
    Special,
}

/// One inode's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inode {
    /// `st_mode`, type bits included.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Sorted by (index, suffix), names unique.
    pub xattrs: Vec<Xattr>,
    pub body: Body,
}

impl Inode {
    /// An empty directory.
    pub fn dir(perm: u16, uid: u32, gid: u32, mtime: i64, mtime_nsec: u32) -> Inode {
        Inode {
            mode: mode::S_IFDIR | (perm & 0o7777),
            uid,
            gid,
            mtime,
            mtime_nsec,
            xattrs: Vec::new(),
            body: Body::Dir(BTreeMap::new()),
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }

    /// Sets or replaces an xattr, keeping the list sorted.
    pub fn set_xattr(&mut self, x: Xattr) {
        match self
            .xattrs
            .binary_search_by(|o| (o.index, &o.suffix).cmp(&(x.index, &x.suffix)))
        {
            Ok(i) => self.xattrs[i] = x,
            Err(i) => self.xattrs.insert(i, x),
        }
    }

    /// Removes an xattr if present.
    pub fn remove_xattr(&mut self, index: u8, suffix: &[u8]) {
        self.xattrs
            .retain(|o| !(o.index == index && &*o.suffix == suffix));
    }

    /// The value of an xattr.
    pub fn xattr(&self, index: u8, suffix: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|o| o.index == index && &*o.suffix == suffix)
            .map(|o| &*o.value)
    }
}

/// The nanoseconds of the mtime (1970-01-01T00:00:00.000000001) a directory
/// gets when a tar never lists it: no real entry carries it, and a merge
/// reads it as "this layer did not set the directory's metadata".
pub(crate) const IMPLICIT_NSEC: u32 = 1;

/// A directory a tar implies: mode 0755, owner 0:0, the implicit mtime.
pub(crate) fn implicit_dir() -> Inode {
    Inode::dir(0o755, 0, 0, 0, IMPLICIT_NSEC)
}

/// Whether a directory's metadata is the made-up one of [`implicit_dir`]
/// (an opaque mark aside).
pub(crate) fn is_implicit(i: &Inode) -> bool {
    i.is_dir()
        && i.mode == mode::S_IFDIR | 0o755
        && (i.uid, i.gid, i.mtime, i.mtime_nsec) == (0, 0, 0, IMPLICIT_NSEC)
        && i.xattrs.iter().all(|x| (x.index, &*x.suffix) == OPAQUE)
}

/// The trusted. prefix index and the suffix of overlayfs' opaque marker.
pub(crate) const OPAQUE: (u8, &[u8]) = (4, b"overlay.opaque");

/// Whether an inode is an overlay whiteout (a character device 0:0).
pub(crate) fn is_whiteout(i: &Inode) -> bool {
    i.mode & mode::S_IFMT == mode::S_IFCHR && i.body == Body::Device(0)
}

/// Whether a directory is marked opaque for overlayfs.
pub(crate) fn is_opaque(i: &Inode) -> bool {
    i.xattr(OPAQUE.0, OPAQUE.1) == Some(b"y")
}

/// An arena of inodes with a root directory.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    inodes: Vec<Inode>,
    root: Ino,
}

impl Tree {
    /// A tree of one root directory.
    pub fn new(root: Inode) -> Tree {
        debug_assert!(root.is_dir());
        Tree {
            inodes: vec![root],
            root: 0,
        }
    }

    pub fn root(&self) -> Ino {
        self.root
    }

    /// How many inodes were ever added (reachable or not).
    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    pub fn add(&mut self, inode: Inode) -> Ino {
        self.inodes.push(inode);
        (self.inodes.len() - 1) as Ino
    }

    pub fn get(&self, ino: Ino) -> &Inode {
        &self.inodes[ino as usize]
    }

    pub fn get_mut(&mut self, ino: Ino) -> &mut Inode {
        &mut self.inodes[ino as usize]
    }

    /// A directory's entries.
    pub fn entries(&self, dir: Ino) -> &BTreeMap<Box<[u8]>, Ino> {
        match &self.get(dir).body {
            Body::Dir(m) => m,
            _ => panic!("inode {dir} is not a directory"),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> &mut BTreeMap<Box<[u8]>, Ino> {
        match &mut self.get_mut(dir).body {
            Body::Dir(m) => m,
            _ => panic!("inode {dir} is not a directory"),
        }
    }

    pub fn lookup(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        self.entries(dir).get(name).copied()
    }

    /// Links `name` in `dir` to `ino`, replacing (and returning) what was there.
    pub fn link(&mut self, dir: Ino, name: &[u8], ino: Ino) -> Option<Ino> {
        self.entries_mut(dir).insert(name.into(), ino)
    }

    pub fn unlink(&mut self, dir: Ino, name: &[u8]) -> Option<Ino> {
        self.entries_mut(dir).remove(name)
    }

    /// Removes every entry of a directory.
    pub fn clear(&mut self, dir: Ino) {
        self.entries_mut(dir).clear();
    }

    /// A canonical listing of everything reachable, for comparing two trees
    /// built differently: one line per path, hard links named by the first
    /// path (in name order) of their inode.
    pub fn listing(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut first: std::collections::HashMap<Ino, String> = Default::default();
        let mut stack = vec![(String::from("/"), self.root)];
        while let Some((path, ino)) = stack.pop() {
            let i = self.get(ino);
            let xattrs: Vec<String> = i
                .xattrs
                .iter()
                .map(|x| {
                    format!(
                        "{}:{}={}",
                        x.index,
                        String::from_utf8_lossy(&x.suffix),
                        hex(&x.value)
                    )
                })
                .collect();
            let what = match &i.body {
                Body::Dir(_) => "dir".to_string(),
                Body::File { size, .. } => format!("file {size}"),
                Body::Symlink(t) => format!("symlink {}", hex(t)),
                Body::Device(d) => format!("dev {d}"),
                Body::Special => "special".to_string(),
            };
            let meta = format!(
                "{:o} {}:{} {}.{:09} [{}]",
                i.mode,
                i.uid,
                i.gid,
                i.mtime,
                i.mtime_nsec,
                xattrs.join(" ")
            );
            match first.get(&ino) {
                Some(p) if !i.is_dir() => out.push(format!("{path} => {p}")),
                _ => {
                    first.insert(ino, path.clone());
                    out.push(format!("{path} {what} {meta}"));
                }
            }
            if let Body::Dir(m) = &i.body {
                for (name, &child) in m.iter().rev() {
                    let sep = if path == "/" { "" } else { "/" };
                    stack.push((
                        format!("{path}{sep}{}", String::from_utf8_lossy(name)),
                        child,
                    ));
                }
            }
        }
        out
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// The empty-file layout.
pub(crate) fn empty_file() -> Body {
    Body::File {
        size: 0,
        data: FileData::Flat { blkaddr: NULL_ADDR },
    }
}
