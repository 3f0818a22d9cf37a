//! Whole-image walks from the root: the [`Tree`] a merge reads, within a
//! [`Budget`], and the check of every reachable inode.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, ErrorKind, Result};
use crate::format::{self, ftype_of, mode};
use crate::tree::{Body, Ino, Inode, Tree};

use super::image::{bad, Budget, Image, Node};

impl Image<'_> {
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
