//! A tar's members into a layer image: file data written as it arrives,
//! block-aligned, and the tree of metadata kept in memory, within the
//! [`Limits`].
//!
//! Extraction rules: a later entry for a path replaces the earlier one,
//! parents the tar never lists are made (0755, owner 0:0, the mtime
//! 1970-01-01T00:00:00.000000001, which tells a merge to keep a lower
//! layer's metadata for the directory), `.wh.NAME`
//! becomes a character device 0:0 named `NAME` (its mode, owner and mtime
//! kept, its xattrs dropped), `.wh..wh..opq` marks its
//! directory with `trusted.overlay.opaque=y`, other `.wh..wh.*` names
//! (aufs' own) are dropped.

use std::io::{BufWriter, Write};

use crate::chunks::{chunk_map, image_too_large, sparse_plan};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{self, mode, split_xattr_name, BLOCK_SIZE, NAME_MAX, NULL_ADDR};
use crate::limits::Limits;
use crate::tar::{Entry, Kind, Sink, MAX_SIZE};
use crate::tree::{self, Body, FileData, Ino, Inode, Tree, Xattr};

/// The data area being written.
struct DataOut<W: Write> {
    w: BufWriter<W>,
    pos: u64,
}

static ZEROS: [u8; 65536] = [0; 65536];

impl<W: Write> DataOut<W> {
    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.w
            .write_all(b)
            .map_err(|e| Error::io("writing the image failed", e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn zeros_to(&mut self, to: u64) -> Result<()> {
        while self.pos < to {
            let n = (to - self.pos).min(ZEROS.len() as u64) as usize;
            self.write(&ZEROS[..n])?;
        }
        Ok(())
    }
}

/// The regular file whose data is arriving.
struct Current {
    /// Where the data goes: `None` discards it (whiteouts, hard links).
    ino: Option<Ino>,
    runs: Vec<(u64, u64)>,
    run: usize,
    done: u64,
    /// log2 of the chunk size.
    shift: u32,
    /// The block of each chunk (`NULL_ADDR`: a hole).
    map: Vec<u32>,
    /// Where the file's blocks end.
    end: u64,
    flat: bool,
    size: u64,
}

/// A layer image being made from the members of a tar.
pub(crate) struct Layer<W: Write> {
    out: DataOut<W>,
    tree: Tree,
    limits: Limits,
    entries: u64,
    meta_bytes: u64,
    file: Option<Current>,
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> Error {
    Error::new(kind, msg)
}

/// The components of a tar path: `.` and empty ones dropped, `..` applied.
pub(crate) fn components(path: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(err(
                        ErrorKind::PathEscapesRoot,
                        "a path whose `..` climbs above the root",
                    ));
                }
            }
            name => {
                if name.contains(&0) {
                    return Err(err(ErrorKind::InvalidHeader, "a NUL byte in a path"));
                }
                if name.len() > NAME_MAX {
                    return Err(err(
                        ErrorKind::NameTooLong,
                        format!("a name of {} bytes (at most {NAME_MAX})", name.len()),
                    ));
                }
                out.push(name);
            }
        }
    }
    Ok(out)
}

impl<W: Write> Layer<W> {
    /// A layer whose data goes to `out`, which is at block 1 (block 0, the
    /// superblock, is written last).
    pub(crate) fn new(out: W, limits: Limits) -> Layer<W> {
        Layer {
            out: DataOut {
                w: BufWriter::with_capacity(1 << 20, out),
                pos: BLOCK_SIZE,
            },
            tree: Tree::new(tree::implicit_dir()),
            limits,
            entries: 0,
            meta_bytes: 0,
            file: None,
        }
    }

    /// The output (not yet flushed), where the data ends, and the tree.
    pub(crate) fn into_parts(self) -> (BufWriter<W>, u64, Tree) {
        let Layer { out, tree, .. } = self;
        (out.w, out.pos, tree)
    }

    fn charge(&mut self, bytes: u64) -> Result<()> {
        self.meta_bytes = self.meta_bytes.saturating_add(bytes);
        if self.meta_bytes > self.limits.max_metadata_bytes {
            return Err(err(
                ErrorKind::LimitExceeded,
                format!(
                    "the tar's metadata passes the limit of {} bytes",
                    self.limits.max_metadata_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The directory at `path`, made (with its parents) if absent.
    fn dir_at(&mut self, path: &[&[u8]]) -> Result<Ino> {
        let mut at = self.tree.root();
        for name in path {
            at = match self.tree.lookup(at, name) {
                Some(i) if self.tree.get(i).is_dir() => i,
                Some(_) => {
                    return Err(err(
                        ErrorKind::NotADirectory,
                        format!(
                            "a path below {:?}, which is not a directory",
                            String::from_utf8_lossy(name)
                        ),
                    ))
                }
                None => {
                    self.charge(64 + name.len() as u64)?;
                    let d = self.tree.add(tree::implicit_dir());
                    self.tree.link(at, name, d);
                    d
                }
            };
        }
        Ok(at)
    }

    /// The inode an existing path names, without making anything.
    fn resolve(&self, path: &[&[u8]]) -> Option<Ino> {
        let mut at = self.tree.root();
        for name in path {
            if !self.tree.get(at).is_dir() {
                return None;
            }
            at = self.tree.lookup(at, name)?;
        }
        Some(at)
    }

    fn xattrs(&mut self, e: &Entry) -> Result<Vec<Xattr>> {
        let mut out = Vec::with_capacity(e.xattrs.len());
        for (name, value) in &e.xattrs {
            let (index, suffix) = split_xattr_name(name).ok_or_else(|| {
                err(
                    ErrorKind::UnsupportedXattr,
                    format!(
                        "the xattr {:?} is in a namespace EROFS cannot name",
                        String::from_utf8_lossy(name)
                    ),
                )
            })?;
            if suffix.len() > 255 || value.len() > u16::MAX as usize {
                return Err(err(
                    ErrorKind::LimitExceeded,
                    format!(
                        "the xattr {:?} is too long (names up to 255 bytes, values up to 65535)",
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
            self.charge((name.len() + value.len() + 8) as u64)?;
            out.push(Xattr {
                index,
                suffix: suffix.into(),
                value: value.as_slice().into(),
            });
        }
        out.sort();
        out.dedup_by(|a, b| a.index == b.index && a.suffix == b.suffix);
        Ok(out)
    }

    fn inode(&mut self, e: &Entry, type_bits: u16, body: Body) -> Result<Inode> {
        let too_big =
            |what: &str| err(ErrorKind::LimitExceeded, format!("a {what} beyond 32 bits"));
        let uid = u32::try_from(e.uid).map_err(|_| too_big("uid"))?;
        let gid = u32::try_from(e.gid).map_err(|_| too_big("gid"))?;
        Ok(Inode {
            mode: type_bits | (e.mode & 0o7777) as u16,
            uid,
            gid,
            mtime: e.mtime,
            mtime_nsec: e.mtime_nsec,
            xattrs: self.xattrs(e)?,
            body,
        })
    }

    fn add(&mut self, parent: Ino, name: &[u8], inode: Inode) -> Result<Ino> {
        self.charge(64 + name.len() as u64)?;
        let ino = self.tree.add(inode);
        self.tree.link(parent, name, ino);
        Ok(ino)
    }

    fn start_file(&mut self, e: &Entry, ino: Option<Ino>) -> Result<()> {
        let size = e.size;
        if size > MAX_SIZE {
            return Err(err(
                ErrorKind::LimitExceeded,
                format!("a file of {size} bytes (an inode holds at most 2^63-1)"),
            ));
        }
        let bs = BLOCK_SIZE;
        let start = self.out.pos;
        // Whole blocks up to the file's end (at most 2^63, so no overflow).
        let blocks_bytes = size.div_ceil(bs) * bs;
        let runs = e.sparse.clone().unwrap_or_else(|| vec![(0, size)]);
        let (shift, map, end, flat) = if ino.is_none() {
            (63, vec![], start, true)
        } else {
            match e.sparse.as_ref().and_then(|r| sparse_plan(r, size)) {
                Some(shift) => {
                    let n = size.div_ceil(1 << shift);
                    // The map is paid for before it is made.
                    self.charge(n.saturating_mul(4))?;
                    let n = usize::try_from(n).map_err(|_| image_too_large())?;
                    let (map, next) = chunk_map(&runs, shift, n, start / bs)?;
                    let mut end = next.checked_mul(bs).ok_or_else(image_too_large)?;
                    if map.last().is_some_and(|&b| b != NULL_ADDR) {
                        let last_start = (n as u64 - 1) << shift;
                        end -= (1u64 << shift) - (blocks_bytes - last_start);
                    }
                    (shift, map, end, false)
                }
                None => {
                    let blk = if size == 0 {
                        NULL_ADDR
                    } else {
                        u32::try_from(start / bs).map_err(|_| image_too_large())?
                    };
                    let end = start
                        .checked_add(blocks_bytes)
                        .ok_or_else(image_too_large)?;
                    (63, vec![blk], end, true)
                }
            }
        };
        if end / bs > u32::MAX as u64 {
            return Err(image_too_large());
        }
        self.file = Some(Current {
            ino,
            runs,
            run: 0,
            done: 0,
            shift,
            map,
            end,
            flat,
            size,
        });
        Ok(())
    }

    fn regular(&mut self, e: &Entry, parent: Ino, name: &[u8]) -> Result<()> {
        let inode = self.inode(e, mode::S_IFREG, tree::empty_file())?;
        let ino = self.add(parent, name, inode)?;
        self.start_file(e, Some(ino))
    }

    fn whiteout(&mut self, e: &Entry, parent: Ino, name: &[u8]) -> Result<()> {
        if name.is_empty() || name == b"." || name == b".." {
            return Err(err(ErrorKind::InvalidHeader, "a whiteout without a name"));
        }
        let mut inode = self.inode(e, mode::S_IFCHR, Body::Device(0))?;
        // A whiteout means only its name; Linux shows no user.* xattrs on
        // a device anyway.
        inode.xattrs.clear();
        self.add(parent, name, inode)?;
        Ok(())
    }

    fn update_dir(&mut self, dir: Ino, e: &Entry) -> Result<()> {
        let new = self.inode(e, mode::S_IFDIR, Body::Special)?;
        let d = self.tree.get_mut(dir);
        d.mode = new.mode;
        d.uid = new.uid;
        d.gid = new.gid;
        d.mtime = new.mtime;
        d.mtime_nsec = new.mtime_nsec;
        for x in new.xattrs {
            d.set_xattr(x);
        }
        Ok(())
    }

    fn member(&mut self, e: &Entry) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(err(
                ErrorKind::LimitExceeded,
                format!("more than {} tar entries", self.limits.max_entries),
            ));
        }
        let comps = components(&e.path)?;
        let Some((&name, parents)) = comps.split_last() else {
            if e.kind != Kind::Dir {
                return Err(err(
                    ErrorKind::NotADirectory,
                    "an entry for the root that is not a directory",
                ));
            }
            let root = self.tree.root();
            return self.update_dir(root, e);
        };
        if name == b".wh..wh..opq" {
            let dir = self.dir_at(parents)?;
            let (index, suffix) = tree::OPAQUE;
            self.tree.get_mut(dir).set_xattr(Xattr {
                index,
                suffix: suffix.into(),
                value: (*b"y").into(),
            });
            return self.skip_data(e);
        }
        let parent = self.dir_at(parents)?;
        if name.starts_with(b".wh..wh.") {
            return self.skip_data(e);
        }
        if let Some(real) = name.strip_prefix(b".wh.") {
            self.whiteout(e, parent, real)?;
            return self.skip_data(e);
        }
        match e.kind {
            Kind::Regular => self.regular(e, parent, name),
            Kind::Dir => {
                match self.tree.lookup(parent, name) {
                    Some(d) if self.tree.get(d).is_dir() => self.update_dir(d, e)?,
                    _ => {
                        let inode = self.inode(e, mode::S_IFDIR, Body::Dir(Default::default()))?;
                        self.add(parent, name, inode)?;
                    }
                }
                Ok(())
            }
            Kind::Hardlink => {
                let target = components(&e.link)?;
                let Some(ino) = self.resolve(&target) else {
                    return Err(err(
                        ErrorKind::InvalidHardlink,
                        format!(
                            "a hard link to {:?}, which the stream has not had before it",
                            String::from_utf8_lossy(&e.link)
                        ),
                    ));
                };
                if self.tree.get(ino).is_dir() {
                    return Err(err(
                        ErrorKind::InvalidHardlink,
                        format!(
                            "a hard link to the directory {:?}",
                            String::from_utf8_lossy(&e.link)
                        ),
                    ));
                }
                self.charge(16 + name.len() as u64)?;
                self.tree.link(parent, name, ino);
                self.skip_data(e)
            }
            Kind::Symlink => {
                if e.link.is_empty() {
                    return Err(err(
                        ErrorKind::InvalidHeader,
                        "a symlink with an empty target",
                    ));
                }
                if e.link.len() >= BLOCK_SIZE as usize || e.link.contains(&0) {
                    return Err(err(
                        ErrorKind::LimitExceeded,
                        format!(
                            "a symlink target of {} bytes (at most 4095, no NUL)",
                            e.link.len()
                        ),
                    ));
                }
                self.charge(e.link.len() as u64)?;
                let mut inode =
                    self.inode(e, mode::S_IFLNK, Body::Symlink(e.link.as_slice().into()))?;
                inode.mode = mode::S_IFLNK | 0o777;
                self.add(parent, name, inode)?;
                Ok(())
            }
            Kind::Char | Kind::Block => {
                let dev = u32::try_from(e.dev_major)
                    .ok()
                    .zip(u32::try_from(e.dev_minor).ok())
                    .and_then(|(ma, mi)| format::encode_dev(ma, mi))
                    .ok_or_else(|| {
                        err(
                            ErrorKind::Unsupported,
                            format!(
                                "the device number {}:{} does not fit 12:20 bits",
                                e.dev_major, e.dev_minor
                            ),
                        )
                    })?;
                let bits = if e.kind == Kind::Char {
                    mode::S_IFCHR
                } else {
                    mode::S_IFBLK
                };
                let inode = self.inode(e, bits, Body::Device(dev))?;
                self.add(parent, name, inode)?;
                Ok(())
            }
            Kind::Fifo => {
                let inode = self.inode(e, mode::S_IFIFO, Body::Special)?;
                self.add(parent, name, inode)?;
                Ok(())
            }
        }
    }

    /// For members whose data (if any) is not kept.
    fn skip_data(&mut self, e: &Entry) -> Result<()> {
        if e.kind == Kind::Regular {
            self.start_file(e, None)?;
        }
        Ok(())
    }
}

impl<W: Write> Sink for Layer<W> {
    fn entry(&mut self, e: &Entry) -> Result<()> {
        self.member(e)
    }

    fn data(&mut self, mut bytes: &[u8]) -> Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        if f.ino.is_none() {
            return Ok(());
        }
        while !bytes.is_empty() {
            while f.runs[f.run].1 == f.done {
                f.run += 1;
                f.done = 0;
            }
            let (o, len) = f.runs[f.run];
            let n = ((len - f.done).min(bytes.len() as u64)) as usize;
            let l = o + f.done;
            let chunk = if f.flat { 0 } else { (l >> f.shift) as usize };
            let within = if f.flat {
                l
            } else {
                l & ((1u64 << f.shift) - 1)
            };
            let phys = f.map[chunk] as u64 * BLOCK_SIZE + within;
            self.out.zeros_to(phys)?;
            self.out.write(&bytes[..n])?;
            f.done += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        let Some(f) = self.file.take() else {
            return Ok(());
        };
        let Some(ino) = f.ino else {
            return Ok(());
        };
        self.out.zeros_to(f.end)?;
        let data = if f.flat {
            FileData::Flat { blkaddr: f.map[0] }
        } else {
            FileData::BlockMap {
                chunk_bits: (f.shift - 12) as u8,
                blocks: f.map,
            }
        };
        self.tree.get_mut(ino).body = Body::File { size: f.size, data };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_and_refuse_escapes() {
        assert_eq!(
            components(b"./a//b/./c/").unwrap(),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert_eq!(components(b"/etc/../usr").unwrap(), vec![&b"usr"[..]]);
        assert!(components(b"./").unwrap().is_empty());
        assert_eq!(
            components(b"a/../../b").unwrap_err().kind(),
            ErrorKind::PathEscapesRoot
        );
        let long = vec![b'n'; 256];
        assert_eq!(
            components(&long).unwrap_err().kind(),
            ErrorKind::NameTooLong
        );
        assert!(components(&long[..255]).is_ok());
    }
}
