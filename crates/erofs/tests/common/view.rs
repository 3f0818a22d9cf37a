//! A tree as the file system shows it (lstat, readlink, xattrs, contents),
//! and the comparison of two: paths, types, modes, owners, sizes, contents,
//! symlink targets, device numbers, xattrs, mtimes, link counts and hard
//! link groups.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub target: Vec<u8>,
    pub rdev: (u32, u32),
    pub mtime: (i64, i64),
    pub nlink: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub ino: u64,
}

pub struct View {
    pub root: PathBuf,
    /// Relative paths (`""` is the root).
    pub nodes: BTreeMap<Vec<u8>, Node>,
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = cpath(p);
    let mut out = BTreeMap::new();
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n <= 0 {
        return out;
    }
    let mut names = vec![0u8; n as usize];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    names.truncate(n as usize);
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
        assert!(
            len >= 0,
            "lgetxattr {} {}",
            p.display(),
            String::from_utf8_lossy(name)
        );
        let mut v = vec![0u8; len as usize];
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(len >= 0);
        v.truncate(len as usize);
        out.insert(name.to_vec(), v);
    }
    out
}

fn node(p: &Path) -> Node {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else {
        's'
    };
    let rdev = m.rdev();
    Node {
        kind,
        perm: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: if kind == 'f' { m.len() } else { 0 },
        target: if kind == 'l' {
            std::fs::read_link(p)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            Vec::new()
        },
        rdev: if kind == 'c' || kind == 'b' {
            (libc::major(rdev), libc::minor(rdev))
        } else {
            (0, 0)
        },
        mtime: (m.mtime(), m.mtime_nsec()),
        nlink: m.nlink(),
        xattrs: xattrs(p),
        ino: m.ino(),
    }
}

pub fn snapshot(root: &Path) -> View {
    let mut nodes = BTreeMap::new();
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(&rel))
        };
        let n = node(&p);
        if n.kind == 'd' {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(e.file_name().as_bytes());
                stack.push(child);
            }
        }
        nodes.insert(rel, n);
    }
    View {
        root: root.to_path_buf(),
        nodes,
    }
}

/// What may differ.
#[derive(Default)]
pub struct Opts {
    /// Paths whose mtime is not compared (directories tar made up).
    pub skip_mtime: BTreeSet<Vec<u8>>,
    /// Paths whose mode, owner and mtime are not compared (directories the
    /// tar never lists: GNU tar makes them as its delayed metadata allows).
    pub skip_meta: BTreeSet<Vec<u8>>,
    /// Compare no directory mtimes.
    pub no_dir_mtimes: bool,
    /// Compare no link counts of directories.
    pub no_dir_nlink: bool,
    /// Ignore the setgid bit of directories: GNU tar leaves the bit that
    /// mkdir inherited from a parent that had it then, whatever the entry's
    /// mode.
    pub inherited_setgid: bool,
}

fn show(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

fn groups(v: &View) -> BTreeSet<Vec<Vec<u8>>> {
    let mut by: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for (p, n) in &v.nodes {
        if n.kind != 'd' {
            by.entry(n.ino).or_default().push(p.clone());
        }
    }
    by.into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect()
}

/// Compares; the error lists up to 20 differences.
pub fn compare(expected: &View, actual: &View, opts: &Opts) -> Result<(), String> {
    let mut diffs = Vec::new();
    let keys: BTreeSet<&Vec<u8>> = expected.nodes.keys().chain(actual.nodes.keys()).collect();
    for k in keys {
        if diffs.len() >= 20 {
            break;
        }
        let (Some(e), Some(a)) = (expected.nodes.get(k), actual.nodes.get(k)) else {
            let side = if expected.nodes.contains_key(k) {
                "missing from the image"
            } else {
                "only in the image"
            };
            diffs.push(format!("{}: {side}", show(k)));
            continue;
        };
        let mut what = Vec::new();
        if e.kind != a.kind {
            what.push(format!("type {} vs {}", e.kind, a.kind));
        }
        let inherited = opts.inherited_setgid && e.kind == 'd';
        let mask = if inherited { !0o2000 } else { !0 };
        let meta = !opts.skip_meta.contains(k);
        if meta && e.perm & mask != a.perm & mask {
            what.push(format!("mode {:o} vs {:o}", e.perm, a.perm));
        }
        if meta && (e.uid, e.gid) != (a.uid, a.gid) {
            what.push(format!("owner {}:{} vs {}:{}", e.uid, e.gid, a.uid, a.gid));
        }
        if e.size != a.size {
            what.push(format!("size {} vs {}", e.size, a.size));
        }
        if e.target != a.target {
            what.push(format!(
                "target {:?} vs {:?}",
                String::from_utf8_lossy(&e.target),
                String::from_utf8_lossy(&a.target)
            ));
        }
        if e.rdev != a.rdev {
            what.push(format!("rdev {:?} vs {:?}", e.rdev, a.rdev));
        }
        if e.xattrs != a.xattrs {
            what.push(format!("xattrs {:?} vs {:?}", e.xattrs, a.xattrs));
        }
        let dir = e.kind == 'd';
        if meta
            && e.mtime != a.mtime
            && !opts.skip_mtime.contains(k)
            && !(dir && opts.no_dir_mtimes)
        {
            what.push(format!("mtime {:?} vs {:?}", e.mtime, a.mtime));
        }
        if e.nlink != a.nlink && !(dir && opts.no_dir_nlink) {
            what.push(format!("nlink {} vs {}", e.nlink, a.nlink));
        }
        if e.kind == 'f' && a.kind == 'f' && e.size == a.size {
            let pe = expected.root.join(std::ffi::OsStr::from_bytes(k));
            let pa = actual.root.join(std::ffi::OsStr::from_bytes(k));
            if !same_content(&pe, &pa) {
                what.push("content differs".into());
            }
        }
        if !what.is_empty() {
            diffs.push(format!("{}: {}", show(k), what.join(", ")));
        }
    }
    let (ge, ga) = (groups(expected), groups(actual));
    if ge != ga {
        let only_e: Vec<_> = ge.difference(&ga).take(5).collect();
        let only_a: Vec<_> = ga.difference(&ge).take(5).collect();
        diffs.push(format!(
            "hard link groups differ: expected {only_e:?}, image {only_a:?}"
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}

/// Turns a `tar -x` tree into what an image of the tar shows: `.wh.NAME`
/// becomes a character device 0:0 named NAME (without xattrs), `.wh..wh..opq` the xattr
/// `trusted.overlay.opaque=y` on its directory, other `.wh..wh.*` go.
pub fn with_whiteouts(v: &mut View) {
    let keys: Vec<Vec<u8>> = v.nodes.keys().cloned().collect();
    for k in keys {
        let (dir, name) = match k.iter().rposition(|&c| c == b'/') {
            Some(i) => (k[..i].to_vec(), k[i + 1..].to_vec()),
            None => (Vec::new(), k.clone()),
        };
        if name == b".wh..wh..opq" {
            v.nodes.remove(&k);
            let d = v.nodes.get_mut(&dir).unwrap();
            d.xattrs
                .insert(b"trusted.overlay.opaque".to_vec(), b"y".to_vec());
        } else if name.starts_with(b".wh..wh.") {
            v.nodes.remove(&k);
        } else if let Some(real) = name.strip_prefix(b".wh.") {
            let mut n = v.nodes.remove(&k).unwrap();
            n.kind = 'c';
            n.xattrs.clear();
            n.size = 0;
            n.rdev = (0, 0);
            n.nlink = 1;
            n.ino = u64::MAX - n.ino;
            let mut p = dir.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(real);
            v.nodes.insert(p, n);
        }
    }
}

/// Compares only the paths, types and regular files' contents and symlink
/// targets (what `fsck.erofs --extract` of erofs-utils 1.5 restores).
pub fn compare_contents(expected: &View, actual: &View) -> Result<(), String> {
    let mut diffs = Vec::new();
    for (k, e) in &expected.nodes {
        let Some(a) = actual.nodes.get(k) else {
            diffs.push(format!("{}: missing", show(k)));
            continue;
        };
        let same = match (e.kind, a.kind) {
            ('f', 'f') => {
                e.size == a.size
                    && same_content(
                        &expected.root.join(std::ffi::OsStr::from_bytes(k)),
                        &actual.root.join(std::ffi::OsStr::from_bytes(k)),
                    )
            }
            ('l', 'l') => e.target == a.target,
            (x, y) => x == y,
        };
        if !same {
            diffs.push(format!("{}: differs", show(k)));
        }
        if diffs.len() >= 20 {
            break;
        }
    }
    if actual.nodes.len() != expected.nodes.len() && diffs.is_empty() {
        diffs.push(format!(
            "{} paths, expected {}",
            actual.nodes.len(),
            expected.nodes.len()
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}
