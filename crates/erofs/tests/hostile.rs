//! Hostile input: sparse files whose declared size is past what an inode
//! holds or whose chunk map would not fit the limits, refused before
//! anything of their size is allocated (peak memory measured in a child
//! process); and hand-forged images (a negative size, blocks or chunks past
//! the end, a dirent to nowhere, a compressed layout) that `check_image`
//! refuses as `fsck.erofs` or the kernel does.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::tarw::{record, Ent, TarW};
use common::{need, Mount};
use erofs::ErrorKind;

// ---------------------------------------------------------------------
// Crafted sparse members.

/// The PAX extended header `x` holding `records`, then nothing else.
fn pax_header(w: &mut TarW, records: &[(&str, String)]) {
    let mut content = Vec::new();
    for (k, v) in records {
        content.extend(record(k.as_bytes(), v.as_bytes()));
    }
    let meta = Ent::file("PaxHeaders/x", b"");
    w.header(b"PaxHeaders/x", &meta, b'x', content.len() as u64, b"", b"");
    w.data(&content);
}

/// The stored bytes of `runs` one after the other.
fn stored(runs: &[(u64, &[u8])]) -> Vec<u8> {
    runs.iter().flat_map(|r| r.1.iter().copied()).collect()
}

/// A GNU sparse 1.0 member as GNU tar writes it in a PAX archive: records
/// `GNU.sparse.major=1`, `minor=0`, `name`, `realsize` (given as text, so
/// that any number can be written), then a member whose data is the map
/// (`count\noffset\nsize\n...`, padded to 512 bytes) and the runs' bytes.
fn sparse_1_0(w: &mut TarW, name: &str, realsize: &str, runs: &[(u64, &[u8])]) {
    pax_header(
        w,
        &[
            ("GNU.sparse.major", "1".into()),
            ("GNU.sparse.minor", "0".into()),
            ("GNU.sparse.name", name.into()),
            ("GNU.sparse.realsize", realsize.into()),
        ],
    );
    let mut map = format!("{}\n", runs.len());
    for (o, d) in runs {
        map.push_str(&format!("{o}\n{}\n", d.len()));
    }
    let mut data = map.into_bytes();
    data.resize(data.len().div_ceil(512) * 512, 0);
    data.extend(stored(runs));
    let header_name = format!("GNUSparseFile.0/{name}");
    let meta = Ent::file(&header_name, b"");
    w.header(
        header_name.as_bytes(),
        &meta,
        b'0',
        data.len() as u64,
        b"",
        b"",
    );
    w.data(&data);
}

/// GNU sparse 0.1: `GNU.sparse.size` and `GNU.sparse.map=o,n,o,n`, the
/// runs' bytes as the member's data.
fn sparse_0_1(w: &mut TarW, name: &str, size: &str, runs: &[(u64, &[u8])]) {
    let map: Vec<String> = runs
        .iter()
        .map(|(o, d)| format!("{o},{}", d.len()))
        .collect();
    pax_header(
        w,
        &[
            ("GNU.sparse.size", size.into()),
            ("GNU.sparse.map", map.join(",")),
            ("GNU.sparse.name", name.into()),
        ],
    );
    let data = stored(runs);
    let meta = Ent::file(name, b"");
    w.header(name.as_bytes(), &meta, b'0', data.len() as u64, b"", b"");
    w.data(&data);
}

/// GNU sparse 0.0: `GNU.sparse.size`, then `GNU.sparse.offset` and
/// `GNU.sparse.numbytes` per run.
fn sparse_0_0(w: &mut TarW, name: &str, size: &str, runs: &[(u64, &[u8])]) {
    let mut recs = vec![("GNU.sparse.size", size.to_string())];
    for (o, d) in runs {
        recs.push(("GNU.sparse.offset", o.to_string()));
        recs.push(("GNU.sparse.numbytes", d.len().to_string()));
    }
    pax_header(w, &recs);
    let data = stored(runs);
    let meta = Ent::file(name, b"");
    w.header(name.as_bytes(), &meta, b'0', data.len() as u64, b"", b"");
    w.data(&data);
}

/// An old GNU sparse member (type `S`): runs in the header at 386, the real
/// size at 483 in base-256 (so that any 64-bit value fits).
fn sparse_old(w: &mut TarW, name: &str, realsize: u64, runs: &[(u64, &[u8])]) {
    assert!(runs.len() <= 4);
    let data = stored(runs);
    let meta = Ent::file(name, b"").fmt(common::tarw::Fmt::Gnu);
    let at = w.buf.len();
    w.header(name.as_bytes(), &meta, b'S', data.len() as u64, b"", b"");
    let h = &mut w.buf[at..at + 512];
    for (i, (o, d)) in runs.iter().enumerate() {
        let f = 386 + i * 24;
        h[f..f + 11].copy_from_slice(format!("{o:011o}").as_bytes());
        h[f + 12..f + 23].copy_from_slice(format!("{:011o}", d.len()).as_bytes());
    }
    h[482] = 0; // no extension blocks
    h[483] = 0x80;
    h[484..487].fill(0);
    h[487..495].copy_from_slice(&realsize.to_be_bytes());
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    w.data(&data);
}

/// A tar of a plain file, then what `member` writes (its first header is
/// at the returned offset), then the end.
fn layer(member: impl FnOnce(&mut TarW)) -> (Vec<u8>, u64) {
    let mut w = TarW::new();
    w.add(&Ent::file("before", b"0123456789"));
    let at = w.buf.len() as u64;
    member(&mut w);
    (w.finish(), at)
}

// ---------------------------------------------------------------------
// Building in a child process, to measure its peak memory.

const CHILD_ENV: &str = "EROFS_HOSTILE_LAYER";

/// The child's side: builds the layer named by `EROFS_HOSTILE_LAYER` with
/// the default limits and reports the outcome and its peak RSS. Does
/// nothing in a normal run.
#[test]
fn hostile_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let tar = std::fs::read(&path).unwrap();
    let out = tempfile::tempfile().unwrap();
    let r = erofs::Builder::new().build(&tar[..], &out);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    match r {
        Ok(info) => println!("RESULT ok blocks={} hwm_kib={hwm}", info.blocks),
        Err(e) => println!(
            "RESULT err kind={} offset={} entry={} hwm_kib={hwm} msg={e}",
            e.kind(),
            e.offset().map_or(-1, |o| o as i64),
            e.entry().unwrap_or("-").replace(' ', "_"),
        ),
    }
}

struct Outcome {
    kind: Option<String>,
    offset: i64,
    entry: String,
    hwm_kib: u64,
    line: String,
}

/// Builds `tar` in a child process (this test binary, running only
/// [`hostile_child`]) and reads back its report.
fn build_in_child(tar: &[u8]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.tar");
    std::fs::write(&path, tar).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hostile_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the child failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find_map(|l| l.find("RESULT ").map(|i| l[i..].to_string()))
        .unwrap_or_else(|| panic!("no report from the child: {text}"));
    let field = |k: &str| {
        line.split(' ')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    Outcome {
        kind: field("kind"),
        offset: field("offset").map_or(-1, |o| o.parse().unwrap()),
        entry: field("entry").unwrap_or_default(),
        hwm_kib: field("hwm_kib").unwrap().parse().unwrap(),
        line,
    }
}

const MAX_PEAK_KIB: u64 = 50 << 10;

#[test]
fn sparse_sizes_past_an_inode_are_refused_in_constant_memory() {
    let run: &[(u64, &[u8])] = &[(0, b"0123456789")];
    let two63 = (1u64 << 63).to_string();
    let two64m1 = u64::MAX.to_string();
    let two62 = (1u64 << 62).to_string();
    let max = i64::MAX.to_string();
    // What, the layer and where its member starts, the kind, the entry.
    type Case = (&'static str, (Vec<u8>, u64), &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (
            "1.0, realsize 2^63",
            layer(|w| sparse_1_0(w, "big", &two63, run)),
            "invalid-sparse",
            "GNUSparseFile.0/big",
        ),
        (
            "1.0, realsize 2^64-1",
            layer(|w| sparse_1_0(w, "big", &two64m1, run)),
            "invalid-sparse",
            "GNUSparseFile.0/big",
        ),
        (
            "1.0, realsize 2^62: a chunk map past the metadata limit",
            layer(|w| sparse_1_0(w, "big", &two62, run)),
            "limit-exceeded",
            "big",
        ),
        (
            "1.0, realsize 2^63-1, one byte at its end",
            layer(|w| sparse_1_0(w, "big", &max, &[((1 << 63) - 2, b"x")])),
            "limit-exceeded",
            "big",
        ),
        (
            "0.1, size 2^63",
            layer(|w| sparse_0_1(w, "big", &two63, run)),
            "invalid-sparse",
            "big",
        ),
        (
            "0.0, size 2^64-1",
            layer(|w| sparse_0_0(w, "big", &two64m1, run)),
            "invalid-sparse",
            "big",
        ),
        (
            "old GNU, realsize 2^63",
            layer(|w| sparse_old(w, "big", 1 << 63, run)),
            "invalid-header",
            "big",
        ),
    ];
    for (what, (tar, at), kind, entry) in cases {
        // Refused in this process too, with the same facts.
        let e = erofs::Builder::new()
            .build(&tar[..], tempfile::tempfile().unwrap())
            .unwrap_err();
        assert_eq!(e.kind().as_str(), kind, "{what}: {e}");
        assert_eq!(e.offset(), Some(at), "{what}: {e}");
        assert_eq!(e.entry(), Some(entry), "{what}: {e}");
        let o = build_in_child(&tar);
        eprintln!("{what}: peak {} KiB: {}", o.hwm_kib, o.line);
        assert_eq!(o.kind.as_deref(), Some(kind), "{what}: {}", o.line);
        assert_eq!(o.offset, at as i64, "{what}: {}", o.line);
        assert_eq!(o.entry, entry, "{what}: {}", o.line);
        assert!(
            o.hwm_kib < MAX_PEAK_KIB,
            "{what}: a peak of {} KiB (at most {MAX_PEAK_KIB})",
            o.hwm_kib
        );
    }
}

#[test]
fn a_large_sparse_file_within_the_limits_builds_in_little_memory() {
    // 2^40 bytes with data at both ends: a block map of a few chunks.
    let size = 1u64 << 40;
    let (tar, _) = layer(|w| {
        sparse_1_0(
            w,
            "tib",
            &size.to_string(),
            &[(0, b"head"), (size - 4, b"tail")],
        )
    });
    let o = build_in_child(&tar);
    assert!(o.line.starts_with("RESULT ok"), "{}", o.line);
    assert!(o.hwm_kib < MAX_PEAK_KIB, "{}", o.line);
    let mut img = tempfile::tempfile().unwrap();
    let info = erofs::Builder::new().build(&tar[..], &mut img).unwrap();
    assert!(info.size_bytes() < 64 << 20, "{info:?}");
    assert_eq!(erofs::check_image(&img).unwrap(), info);
}

#[test]
fn extension_headers_of_one_member_are_bounded_together() {
    // Many PAX headers before one member, each under the limit.
    let limits = erofs::Limits {
        max_extension_bytes: 64 << 10,
        ..Default::default()
    };
    let value = "v".repeat(30 << 10);
    let (tar, at) = layer(|w| {
        for k in 0..4 {
            pax_header(w, &[(&format!("comment.{k}"), value.clone())]);
        }
        w.add(&Ent::file("f", b"x"));
    });
    let e = erofs::Builder::new()
        .limits(limits.clone())
        .build(&tar[..], tempfile::tempfile().unwrap())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    assert_eq!(e.offset(), Some(at), "{e}");
    // Two of them fit.
    let (tar, _) = layer(|w| {
        for k in 0..2 {
            pax_header(w, &[(&format!("comment.{k}"), value.clone())]);
        }
        w.add(&Ent::file("f", b"x"));
    });
    erofs::Builder::new()
        .limits(limits.clone())
        .build(&tar[..], tempfile::tempfile().unwrap())
        .unwrap();
    // A GNU.sparse.map of more runs than allowed is refused as counted.
    let limits = erofs::Limits {
        max_sparse_runs: 8,
        ..Default::default()
    };
    let runs: Vec<(u64, &[u8])> = (0..9).map(|k| (k * 8192, &b"x"[..])).collect();
    let (tar, at) = layer(|w| sparse_0_1(w, "many", "1000000", &runs));
    let e = erofs::Builder::new()
        .limits(limits)
        .build(&tar[..], tempfile::tempfile().unwrap())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    assert_eq!(e.offset(), Some(at), "{e}");
}

// ---------------------------------------------------------------------
// Forged images.

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// CRC-32C, reflected, no final inversion (the superblock's checksum).
fn crc32c(seed: u32, data: &[u8]) -> u32 {
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
fn fix_checksum(img: &mut [u8]) {
    let mut tail = img[1024..4096].to_vec();
    tail[4..8].fill(0);
    let c = crc32c(!0, &tail);
    img[1028..1032].copy_from_slice(&c.to_le_bytes());
}

/// An inode as the forger sees it.
struct Ino {
    pos: usize,
    extended: bool,
    size: u64,
    i_u: u32,
    /// Just past the inode and its inline xattrs.
    after: usize,
}

fn inode(img: &[u8], nid: u64) -> Ino {
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
fn dir_block(img: &[u8], d: &Ino) -> usize {
    assert!(d.size < 4096, "a test directory of one block");
    let layout = (le16(img, d.pos) >> 1) & 7;
    if layout == 2 {
        d.after
    } else {
        d.i_u as usize * 4096
    }
}

/// The nid of `name` in directory `d`, and where its dirent is.
fn lookup(img: &[u8], d: &Ino, name: &str) -> (u64, usize) {
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

fn resolve(img: &[u8], path: &str) -> Ino {
    let root = le16(img, 1024 + 14) as u64;
    let mut at = inode(img, root);
    for c in path.split('/') {
        at = inode(img, lookup(img, &at, c).0);
    }
    at
}

/// The good image the forgeries start from: a file on an extended inode
/// (a uid past 16 bits), a sparse file (a block map), a directory.
fn good_image() -> Vec<u8> {
    let mut w = TarW::new();
    w.add(&Ent::dir("d"));
    w.add(&Ent::file("d/f", vec![7u8; 3 * 4096 + 100]).owner(70000, 0));
    let size = 64u64 << 20;
    sparse_1_0(
        &mut w,
        "s",
        &size.to_string(),
        &[(0, &[1u8; 5000]), (size - 10, b"0123456789")],
    );
    w.add(&Ent::symlink("l", "d/f"));
    let tar = w.finish();
    let mut out = std::io::Cursor::new(Vec::new());
    erofs::Builder::new().build(&tar[..], &mut out).unwrap();
    out.into_inner()
}

/// fsck.erofs refuses the image, or (when fsck.erofs 1.5 lets it pass)
/// the kernel refuses what `probe` does on the mounted image. Returns who
/// refused it.
fn tools_refuse(img: &Path, work: &Path, probe: &dyn Fn(&Path) -> std::io::Result<()>) -> String {
    let out = Command::new("fsck.erofs").arg(img).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || text.contains("<E>") {
        return format!("fsck.erofs: {}", text.trim());
    }
    let m = Mount::image(img, &work.join("mnt"));
    let r = probe(&m.dir);
    drop(m);
    match r {
        Err(e) => format!("the kernel: {e} (fsck.erofs passed it: {})", text.trim()),
        Ok(()) => panic!(
            "{}: fsck.erofs and the kernel both accept the forged image: {text}",
            img.display()
        ),
    }
}

fn read_all(p: PathBuf) -> std::io::Result<()> {
    std::fs::metadata(&p)?;
    std::fs::read(&p).map(|_| ())
}

fn list(p: PathBuf) -> std::io::Result<()> {
    for e in std::fs::read_dir(&p)? {
        e?.metadata()?;
    }
    Ok(())
}

#[test]
fn forged_images_are_refused_by_check_image_as_by_the_kernel() {
    if !need(
        "forged_images_are_refused_by_check_image_as_by_the_kernel",
        &["mount", "fsck.erofs"],
    ) {
        return;
    }
    let good = good_image();
    let info = erofs::check_image(&good).unwrap();
    let blocks = info.blocks;
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("good.erofs");
    std::fs::write(&path, &good).unwrap();
    // The harness's control: the tools accept the good image, and the
    // forger finds its inodes.
    common::fsck(&path, &[]);
    {
        let m = Mount::image(&path, &work.path().join("mnt"));
        read_all(m.dir.join("d/f")).unwrap();
        read_all(m.dir.join("s")).unwrap();
    }
    let f = resolve(&good, "d/f");
    assert!(f.extended && f.size == 3 * 4096 + 100);
    let s = resolve(&good, "s");
    assert_eq!(s.size, 64 << 20);

    type Forge = Box<dyn Fn(&mut Vec<u8>)>;
    type Probe = Box<dyn Fn(&Path) -> std::io::Result<()>>;
    let file_probe = || -> Probe { Box::new(|m: &Path| read_all(m.join("d/f"))) };
    let cases: Vec<(&str, Forge, Probe)> = vec![
        (
            "a file size of 2^63 + 4096 (negative as i_size)",
            Box::new(move |img: &mut Vec<u8>| {
                let f = resolve(img, "d/f");
                img[f.pos + 8..f.pos + 16].copy_from_slice(&((1u64 << 63) + 4096).to_le_bytes());
            }),
            file_probe(),
        ),
        (
            "a file size of 2^64-1",
            Box::new(move |img: &mut Vec<u8>| {
                let f = resolve(img, "d/f");
                img[f.pos + 8..f.pos + 16].copy_from_slice(&u64::MAX.to_le_bytes());
            }),
            file_probe(),
        ),
        (
            "a file's blocks past the image's end",
            Box::new(move |img: &mut Vec<u8>| {
                let f = resolve(img, "d/f");
                let past = (blocks - 2) as u32;
                img[f.pos + 16..f.pos + 20].copy_from_slice(&past.to_le_bytes());
            }),
            file_probe(),
        ),
        (
            "a sparse file's chunk past the image's end",
            Box::new(move |img: &mut Vec<u8>| {
                let s = resolve(img, "s");
                // The block map after the inode (4-byte aligned): its last
                // entry holds the last run.
                let at = s.after.div_ceil(4) * 4;
                let chunk = 4096u64 << (s.i_u & 0x1f);
                let last = at + 4 * ((s.size.div_ceil(chunk) - 1) as usize);
                assert_ne!(le32(img, last), u32::MAX, "the last chunk is stored");
                img[last..last + 4].copy_from_slice(&(blocks as u32 + 5).to_le_bytes());
            }),
            Box::new(|m: &Path| read_all(m.join("s"))),
        ),
        (
            "a directory entry naming an inode past the image's end",
            Box::new(move |img: &mut Vec<u8>| {
                let d = resolve(img, "d");
                let (_, dirent) = lookup(img, &d, "f");
                let nid = (blocks * 4096 / 32) + 1000;
                img[dirent..dirent + 8].copy_from_slice(&nid.to_le_bytes());
            }),
            Box::new(|m: &Path| list(m.join("d"))),
        ),
        (
            "a directory entry's name running past its block",
            Box::new(move |img: &mut Vec<u8>| {
                let d = resolve(img, "d");
                let (_, dirent) = lookup(img, &d, "f");
                img[dirent + 8..dirent + 10].copy_from_slice(&5000u16.to_le_bytes());
            }),
            Box::new(|m: &Path| list(m.join("d"))),
        ),
    ];
    for (what, forge, probe) in cases {
        let mut img = good.clone();
        forge(&mut img);
        fix_checksum(&mut img);
        assert_ne!(img, good, "{what}: nothing was forged");
        let e = erofs::check_image(&img).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidImage, "{what}: {e}");
        let p = work.path().join("forged.erofs");
        std::fs::write(&p, &img).unwrap();
        let who = tools_refuse(&p, work.path(), &*probe);
        eprintln!("{what}: check_image: {e}; refused by {who}");
    }
}

#[test]
fn forged_images_without_tools() {
    // The same forgeries as above that need no kernel to judge: sizes and
    // addresses check_image must refuse, on the image in memory.
    let good = good_image();
    assert!(erofs::check_image(&good).is_ok());
    let f = resolve(&good, "d/f");
    for size in [1u64 << 63, u64::MAX, (1 << 63) + 4096] {
        let mut img = good.clone();
        img[f.pos + 8..f.pos + 16].copy_from_slice(&size.to_le_bytes());
        fix_checksum(&mut img);
        let e = erofs::check_image(&img).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidImage, "{size}: {e}");
        assert_eq!(e.entry(), Some("/d/f"), "{e}");
        // A merge refuses it too.
        let e = erofs::Merger::new().add_layer(&img, b"l").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidImage, "{size}: {e}");
    }
    // A compressed layout in an image without compression: fsck.erofs 1.5
    // and the kernel let it pass, check_image does not (this crate writes
    // and reads no compressed data, and an fsmeta cannot point into it).
    let mut img = good.clone();
    let format = le16(&img, f.pos) & !0x0e | (1 << 1);
    img[f.pos..f.pos + 2].copy_from_slice(&format.to_le_bytes());
    fix_checksum(&mut img);
    let e = erofs::check_image(&img).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidImage, "{e}");
    assert!(e.to_string().contains("layout 1"), "{e}");
    // The superblock's inode count must match what the root reaches.
    let mut img = good.clone();
    let inos = le64(&img, 1024 + 16);
    img[1024 + 16..1024 + 24].copy_from_slice(&(inos + 1).to_le_bytes());
    fix_checksum(&mut img);
    assert_eq!(
        erofs::check_image(&img).unwrap_err().kind(),
        ErrorKind::InvalidImage
    );
}
