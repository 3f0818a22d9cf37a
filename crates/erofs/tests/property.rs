//! Arbitrary small tars from a seeded PRNG (weird and long names, deep
//! directories, hard links, duplicates, whiteouts, opaque markers, xattrs,
//! devices, every header format): the writer never panics; each tar that
//! builds is checked by fsck.erofs, mounted by the kernel and compared with
//! GNU tar's extraction; each one that must fail fails with its kind. Every
//! tar and damaged copies of it also go through the in-memory properties of
//! `erofs::fuzzing::layer` (the fuzz target's).
//!
//! `EROFS_PROPERTY_CASES` (default 240) and `EROFS_PROPERTY_SEED` change the
//! run.

mod common;

use std::collections::BTreeSet;

use common::tarw::{tar, Ent, Fmt};
use common::view::Opts;
use common::{need, Rng};
use erofs::ErrorKind;

struct Gen {
    rng: Rng,
    dirs: Vec<String>,
    /// Directories no entry lists.
    implicit: BTreeSet<String>,
    /// Regular files (what a later entry may replace: GNU tar keeps a
    /// symlink it has not placed yet over a later file).
    files: Vec<String>,
    nondirs: Vec<String>,
    taken: BTreeSet<String>,
    entries: Vec<Ent>,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl Gen {
    fn name(&mut self) -> String {
        let r = &mut self.rng;
        let base = match r.below(10) {
            0 => "x".repeat(100 + r.below(156) as usize),
            1 => "héllo wörld ☃".to_string(),
            2 => format!("-dash{}", r.below(100)),
            3 => format!("new\nline{}", r.below(10)),
            4 => format!("a=b c\\d{}", r.below(10)),
            5 => format!("{}", r.below(1_000_000)),
            _ => {
                let n = 1 + r.below(12) as usize;
                (0..n).map(|_| (b'a' + r.below(26) as u8) as char).collect()
            }
        };
        if base.starts_with(".wh.") {
            format!("_{base}")
        } else {
            base
        }
    }

    fn pick<'a>(&mut self, v: &'a [String]) -> &'a str {
        &v[self.rng.below(v.len() as u64) as usize]
    }

    /// A fresh path in some directory; maybe below new, unlisted ones.
    fn fresh(&mut self) -> String {
        let dirs = self.dirs.clone();
        let mut dir = self.pick(&dirs).to_string();
        if self.rng.chance(20) {
            let max = if self.rng.chance(10) { 20 } else { 3 };
            for _ in 0..1 + self.rng.below(max) {
                let n = self.name();
                let d = join(&dir, &n);
                if self.taken.contains(&d) && !self.dirs.contains(&d) {
                    break;
                }
                if !self.dirs.contains(&d) {
                    self.dirs.push(d.clone());
                    self.taken.insert(d.clone());
                    self.implicit.insert(d.clone());
                }
                dir = d;
            }
        }
        loop {
            let n = self.name();
            let p = join(&dir, &n);
            if !self.taken.contains(&p) && !self.taken.contains(&join(&dir, &format!(".wh.{n}"))) {
                return p;
            }
        }
    }

    fn meta(&mut self, mut e: Ent, xattrs: bool) -> Ent {
        let r = &mut self.rng;
        let fmt = match r.below(6) {
            0 => Fmt::Gnu,
            1 if e.path.len() <= 100 && e.link.len() <= 100 => Fmt::Ustar,
            _ => Fmt::Pax,
        };
        e.fmt = fmt;
        e.mode = [0o644, 0o755, 0o600, 0o4755, 0o2750, 0o1777, 0o000, 0o7777][r.below(8) as usize];
        let ids = [0u64, 1, 1000, 65535, 65536, 1 << 31, 4_000_000_000];
        e.uid = ids[r.below(7) as usize];
        e.gid = ids[r.below(7) as usize];
        e.mtime = [0i64, 1, 1_600_000_000, 1_700_000_000, 2_000_000_000][r.below(5) as usize]
            + r.below(1000) as i64;
        if fmt == Fmt::Pax && r.chance(50) {
            e.nsec = Some(r.below(1_000_000_000) as u32);
        }
        if fmt == Fmt::Pax && xattrs && r.chance(30) {
            for _ in 0..1 + r.below(3) {
                let ns = ["user.", "trusted."][r.below(2) as usize];
                let len = r.below(200) as usize;
                let v = r.bytes(len);
                e = e.xattr(format!("{ns}k{}", r.below(5)), v);
            }
        }
        if fmt == Fmt::Gnu {
            e.xattrs.clear();
        }
        e
    }

    fn path_form(&mut self, p: &str) -> String {
        match self.rng.below(8) {
            0 => format!("./{p}"),
            1 => p.replacen('/', "//", 1),
            2 => format!("{p}/").replace("//", "/"),
            _ => p.to_string(),
        }
    }

    fn step(&mut self) {
        let op = self.rng.below(100);
        match op {
            0..=39 => {
                let replace = self.rng.chance(10) && !self.files.is_empty();
                let p = if replace {
                    let f = self.files.clone();
                    self.pick(&f).to_string()
                } else {
                    self.fresh()
                };
                let size = match self.rng.below(6) {
                    0 => 0,
                    1 => 4096 * (1 + self.rng.below(3)) - 1 + self.rng.below(3),
                    2 => self.rng.below(100_000),
                    _ => self.rng.below(3000),
                } as usize;
                let data = self.rng.bytes(size);
                let form = self.path_form(&p).trim_end_matches('/').to_string();
                let e = self.meta(Ent::file(form, data), true);
                if !self.files.contains(&p) {
                    self.files.push(p.clone());
                }
                self.add_nondir(p, e);
            }
            40..=54 => {
                let p = self.fresh();
                let form = self.path_form(&p);
                let e = self.meta(Ent::dir(form), true);
                self.entries.push(e);
                self.dirs.push(p.clone());
                self.taken.insert(p);
            }
            55..=64 => {
                let p = self.fresh();
                let target = match self.rng.below(4) {
                    0 => "/etc/passwd".to_string(),
                    1 => "../".repeat(1 + self.rng.below(5) as usize) + "up",
                    2 => "t".repeat(1 + self.rng.below(300) as usize),
                    _ => self.name(),
                };
                let form = self.path_form(&p).trim_end_matches('/').to_string();
                let mut e = self.meta(Ent::symlink(form, target), false);
                e.mode = 0o777;
                self.add_nondir(p, e);
            }
            65..=74 if !self.nondirs.is_empty() => {
                let nd = self.nondirs.clone();
                let target = self.pick(&nd).to_string();
                let p = self.fresh();
                let form = self.path_form(&p).trim_end_matches('/').to_string();
                let e = self.meta(Ent::hardlink(form, target), false);
                self.add_nondir(p, e);
            }
            75..=82 => {
                let p = self.fresh();
                let form = self.path_form(&p).trim_end_matches('/').to_string();
                let e = match self.rng.below(3) {
                    0 => Ent::chr(
                        form,
                        self.rng.below(4096) as u32,
                        self.rng.below(1 << 20) as u32,
                    ),
                    1 => Ent::blk(form, self.rng.below(300) as u32, self.rng.below(300) as u32),
                    _ => Ent::fifo(form),
                };
                let e = self.meta(e, false);
                self.add_nondir(p, e);
            }
            83..=89 => {
                // A whiteout for a name that is not in its directory.
                let dirs = self.dirs.clone();
                let dir = self.pick(&dirs).to_string();
                let n = self.name();
                let real = join(&dir, &n);
                if self.taken.contains(&real) || n.len() > 251 {
                    return;
                }
                self.taken.insert(real);
                let p = join(&dir, &format!(".wh.{n}"));
                self.taken.insert(p.clone());
                let e = self.meta(Ent::file(p, b""), true);
                self.entries.push(e);
            }
            90..=93 => {
                let dirs = self.dirs.clone();
                let dir = self.pick(&dirs).to_string();
                let p = join(&dir, ".wh..wh..opq");
                self.entries.push(Ent::file(p, b""));
            }
            _ => {
                // A duplicate entry for a file: the later one wins.
                if let Some(p) = self.files.first().cloned() {
                    let size = self.rng.below(5000) as usize;
                    let data = self.rng.bytes(size);
                    let e = self.meta(Ent::file(&p, data), true);
                    self.add_nondir(p, e);
                }
            }
        }
    }

    fn add_nondir(&mut self, p: String, e: Ent) {
        self.entries.push(e);
        if !self.nondirs.contains(&p) {
            self.nondirs.push(p.clone());
        }
        self.taken.insert(p);
    }
}

/// One arbitrary tar; `Some(kind)` when it must be refused; the
/// directories it never lists.
fn arbitrary(seed: u64) -> (Vec<u8>, Option<ErrorKind>, BTreeSet<String>) {
    let mut g = Gen {
        rng: Rng(seed),
        dirs: vec![String::new()],
        implicit: BTreeSet::new(),
        files: Vec::new(),
        nondirs: Vec::new(),
        taken: BTreeSet::new(),
        entries: Vec::new(),
    };
    if g.rng.chance(30) {
        let root = g.meta(Ent::dir("./"), true);
        g.entries.push(root);
    } else {
        g.implicit.insert(String::new());
    }
    for _ in 0..1 + g.rng.below(40) {
        g.step();
    }
    let bad = match g.rng.below(40) {
        0 => Some((Ent::file("a/../../x", b""), ErrorKind::PathEscapesRoot)),
        1 => Some((Ent::hardlink("h", "never/seen"), ErrorKind::InvalidHardlink)),
        2 => Some((Ent::file("n".repeat(256), b""), ErrorKind::NameTooLong)),
        _ => None,
    };
    let kind = bad.as_ref().map(|b| b.1);
    if let Some((e, _)) = bad {
        let at = g.rng.below(g.entries.len() as u64 + 1) as usize;
        g.entries.insert(at, e);
    }
    (tar(&g.entries), kind, g.implicit)
}

fn cases() -> (u64, u64) {
    let n = std::env::var("EROFS_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240);
    let seed = std::env::var("EROFS_PROPERTY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    (n, seed)
}

#[test]
fn arbitrary_tars_never_panic_and_keep_their_properties_in_memory() {
    let (n, seed) = cases();
    let mut rng = Rng(seed ^ 0xdead);
    for k in 0..n {
        let (bytes, _, _) = arbitrary(seed.wrapping_add(k));
        erofs::fuzzing::layer(&bytes);
        // Damaged copies: cut, a flipped bit, a run of garbage.
        let cut = rng.below(bytes.len() as u64) as usize;
        erofs::fuzzing::layer(&bytes[..cut]);
        let mut flip = bytes.clone();
        let at = rng.below(flip.len() as u64) as usize;
        flip[at] ^= 1 << rng.below(8);
        erofs::fuzzing::layer(&flip);
        let mut junk = bytes.clone();
        let at = rng.below(junk.len() as u64) as usize;
        let len = (rng.below(64) as usize).min(junk.len() - at);
        let noise = rng.bytes(len);
        junk[at..at + len].copy_from_slice(&noise);
        erofs::fuzzing::layer(&junk);
    }
}

#[test]
fn arbitrary_tars_mount_as_tar_extracts_them() {
    if !need(
        "arbitrary_tars_mount_as_tar_extracts_them",
        &["mount", "losetup", "tar", "fsck.erofs"],
    ) {
        return;
    }
    let (n, seed) = cases();
    let dir = tempfile::tempdir().unwrap();
    let (mut built, mut refused) = (0, 0);
    for k in 0..n {
        let (bytes, must_fail, implicit) = arbitrary(seed.wrapping_add(k));
        let case = dir.path().join(format!("{k}"));
        std::fs::create_dir(&case).unwrap();
        let tarp = case.join("t.tar");
        std::fs::write(&tarp, &bytes).unwrap();
        let img = case.join("t.erofs");
        let r = erofs::Builder::new().build(&bytes[..], std::fs::File::create(&img).unwrap());
        match (r, must_fail) {
            (Err(e), Some(kind)) => {
                assert_eq!(e.kind(), kind, "case {k}: {e}");
                refused += 1;
                std::fs::remove_dir_all(&case).unwrap();
                continue;
            }
            (Err(e), None) => panic!("case {k} (seed {}): {e}", seed.wrapping_add(k)),
            (Ok(_), Some(kind)) => panic!("case {k}: built although it has a {kind:?} entry"),
            (Ok(_), None) => built += 1,
        }
        let opts = Opts {
            // GNU tar restores directory times as it leaves them, not last.
            no_dir_mtimes: true,
            inherited_setgid: true,
            skip_meta: implicit.iter().map(|p| p.as_bytes().to_vec()).collect(),
            ..Opts::default()
        };
        if let Err(d) = common::prove_layer(&tarp, &img, &case, &opts) {
            panic!("case {k} (EROFS_PROPERTY_SEED={seed}, +{k}) differs from tar -x:\n{d}");
        }
        std::fs::remove_dir_all(&case).unwrap();
    }
    assert!(built > n / 2, "only {built} of {n} built");
    eprintln!("{built} built and compared, {refused} refused as they must be");
}
