//! Hostile input: sparse files whose declared size is past what an inode
//! holds or whose chunk map would not fit the limits, refused before
//! anything of their size is allocated (peak memory measured in a child
//! process); and hand-forged images (a negative size, blocks or chunks past
//! the end, a dirent to nowhere, a compressed layout) that `check_image`
//! refuses as `fsck.erofs` or the kernel does.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::forge::{fix_checksum, le16, le32, le64, lookup, resolve};
use common::sparse::{pax_header, sparse_0_0, sparse_0_1, sparse_1_0, sparse_old};
use common::tarw::{Ent, TarW};
use common::{need, Mount};
use erofs::ErrorKind;

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
