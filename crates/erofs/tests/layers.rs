//! Crafted layers, one per rule of a tar's extraction: each image is
//! checked by `fsck.erofs`, mounted by the kernel and compared with GNU
//! tar's extraction of the same tar (whiteout names turned into what
//! overlayfs reads). Bad input is refused with a typed error naming the
//! entry, and leaves no valid image.

mod common;

use std::io::Write;
use std::path::Path;

use common::tarw::{tar, Ent, Fmt, TarW};
use common::view::Opts;
use common::{fsck, need, Mount};
use erofs::{Builder, ErrorKind, Limits};

const TOOLS: &[&str] = &["mount", "losetup", "tar", "fsck.erofs"];

/// Builds, fscks, mounts and compares one tar; returns the image bytes.
fn check(name: &str, bytes: &[u8], opts: Opts) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let tarp = dir.path().join("layer.tar");
    std::fs::write(&tarp, bytes).unwrap();
    let img = dir.path().join("layer.erofs");
    let info = common::build(&tarp, &img);
    assert_eq!(
        std::fs::metadata(&img).unwrap().len(),
        info.size_bytes(),
        "{name}"
    );
    erofs::check_image(&std::fs::File::open(&img).unwrap()).unwrap();
    if let Err(d) = common::prove_layer(&tarp, &img, dir.path(), &opts) {
        panic!("{name}: the mounted image differs from tar's extraction:\n{d}");
    }
    std::fs::read(&img).unwrap()
}

fn root_made_up() -> Opts {
    let mut o = Opts::default();
    o.skip_mtime.insert(Vec::new());
    o
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

#[test]
fn regular_files_of_every_size() {
    if !need("regular_files_of_every_size", TOOLS) {
        return;
    }
    let mut es = vec![Ent::dir("./")];
    for (k, n) in [
        0usize, 1, 511, 512, 4095, 4096, 4097, 8191, 65536, 1_000_003,
    ]
    .into_iter()
    .enumerate()
    {
        es.push(Ent::file(format!("f{n}"), pattern(n, k as u8)));
    }
    es.push(Ent::file("zeros", vec![0u8; 3 * 4096 + 5]));
    check("sizes", &tar(&es), Opts::default());
}

#[test]
fn modes_owners_and_times() {
    if !need("modes_owners_and_times", TOOLS) {
        return;
    }
    let es = vec![
        Ent::dir("./")
            .mode(0o750)
            .owner(1, 2)
            .mtime(1_700_000_000)
            .nsec(5),
        Ent::file("setuid", b"x").mode(0o4755),
        Ent::file("setgid", b"x").mode(0o2711),
        Ent::dir("sticky").mode(0o1777),
        Ent::file("none", b"x").mode(0),
        Ent::file("big-ids", b"x").owner(70_000, 4_000_000_000),
        Ent::file("nsec", b"x")
            .mtime(1_234_567_890)
            .nsec(123_456_789),
        Ent::file("old", b"x").mtime(0),
        Ent::file("pre-1970", b"x")
            .mtime(-86_400 * 400)
            .nsec(250_000_000),
        Ent::file("gnu-base256", b"x")
            .fmt(Fmt::Gnu)
            .owner(3_000_000, 9_000_000),
        Ent::file("ustar", b"x")
            .fmt(Fmt::Ustar)
            .owner(65535, 65536)
            .mtime(1),
        Ent::fifo("fifo").mode(0o640).owner(7, 8),
    ];
    check("modes", &tar(&es), Opts::default());
}

#[test]
fn links_devices_and_fifos() {
    if !need("links_devices_and_fifos", TOOLS) {
        return;
    }
    let long_target = "t/".repeat(1900) + "end";
    let es = vec![
        Ent::dir("./"),
        Ent::dir("d"),
        Ent::file("d/a", pattern(10_000, 1)),
        Ent::hardlink("b", "d/a"),
        Ent::hardlink("d/c", "./d/a"),
        Ent::file("lonely", b"one link"),
        Ent::symlink("abs", "/etc/passwd"),
        Ent::symlink("up", "../../../../escape"),
        Ent::symlink("dangling", "nowhere/at/all"),
        Ent::symlink("long", &long_target),
        Ent::hardlink("abs-again", "abs"),
        Ent::chr("null", 1, 3),
        Ent::blk("sda1", 8, 1),
        Ent::chr("bigdev", 259, 65537),
        Ent::fifo("pipe"),
    ];
    // GNU tar restores d's mtime before it links d/c into it.
    let mut o = Opts::default();
    o.skip_mtime.insert(b"d".to_vec());
    check("links", &tar(&es), o);
}

#[test]
fn xattrs_on_files_directories_and_the_root() {
    if !need("xattrs_on_files_directories_and_the_root", TOOLS) {
        return;
    }
    // security.capability: cap_net_bind_service+ep (VFS_CAP_REVISION_2).
    let cap: Vec<u8> = vec![1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let es = vec![
        Ent::dir("./")
            .xattr("user.root", "top")
            .xattr("trusted.t", [0u8, 1, 2]),
        Ent::file("ping", b"\x7fELF")
            .mode(0o755)
            .xattr("security.capability", &cap),
        Ent::dir("etc")
            .xattr("user.dir", "yes")
            .xattr("trusted.overlay.redirect", "/x"),
        Ent::file("etc/many", b"m")
            .xattr("user.a", "1")
            .xattr("user.b", vec![b'v'; 3000])
            .xattr("trusted.c", "")
            .xattr("user.c", "3"),
        Ent::file("etc/other", b"l").xattr("security.selinux-ish", "ctx"),
    ];
    check("xattrs", &tar(&es), Opts::default());
}

#[test]
fn xattrs_larger_than_a_block_read_back() {
    // ext4 (where tar extracts) holds no 60 KB value: read the mount alone.
    if !need("xattrs_larger_than_a_block_read_back", TOOLS) {
        return;
    }
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let many: Vec<Ent> = (0..40)
        .map(|k| Ent::file(format!("f{k}"), b"").xattr("user.v", &big[..k * 1000]))
        .collect();
    // GNU tar reads no LIBARCHIVE.xattr records either.
    let mut es = vec![
        Ent::dir("./").xattr("user.big", &big[..2500]),
        Ent::file("huge", b"h").xattr("user.huge", &big),
        Ent::file("libarchive", b"l")
            .libarchive()
            .xattr("user.with=equals and space", [0xffu8, 0, 0x80])
            .xattr("trusted.b64", &big[..1000]),
    ];
    es.extend(many);
    let dir = tempfile::tempdir().unwrap();
    let tarp = dir.path().join("x.tar");
    std::fs::write(&tarp, tar(&es)).unwrap();
    let img = dir.path().join("x.erofs");
    common::build(&tarp, &img);
    fsck(&img, &[]);
    let m = Mount::image(&img, &dir.path().join("mnt"));
    let x = common::view::xattrs(&m.dir.join("huge"));
    assert_eq!(x.get(&b"user.huge"[..]), Some(&big));
    for k in 0..40 {
        let x = common::view::xattrs(&m.dir.join(format!("f{k}")));
        assert_eq!(
            x.get(&b"user.v"[..]).map(|v| v.as_slice()),
            Some(&big[..k * 1000]),
            "f{k}"
        );
    }
    assert_eq!(
        common::view::xattrs(&m.dir)
            .get(&b"user.big"[..])
            .map(|v| v.len()),
        Some(2500)
    );
    let x = common::view::xattrs(&m.dir.join("libarchive"));
    assert_eq!(
        x.get(&b"user.with=equals and space"[..]),
        Some(&vec![0xffu8, 0, 0x80])
    );
    assert_eq!(
        x.get(&b"trusted.b64"[..]).map(|v| v.as_slice()),
        Some(&big[..1000])
    );
    assert_eq!(x.len(), 2);
    assert_eq!(std::fs::read_dir(&m.dir).unwrap().count(), 42);
}

#[test]
fn root_entry_and_parents_never_listed() {
    if !need("root_entry_and_parents_never_listed", TOOLS) {
        return;
    }
    let es = vec![
        Ent::file("a/b/c/d/e/f/deep", b"deep"),
        Ent::dir("./")
            .mode(0o700)
            .owner(5, 6)
            .xattr("user.r", "1")
            .mtime(1_000_000),
        Ent::file("./x/y", b"y"),
        Ent::dir("x").mode(0o711),
    ];
    let mut o = Opts::default();
    for p in ["a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/d/e", "a/b/c/d/e/f"] {
        o.skip_mtime.insert(p.as_bytes().to_vec());
    }
    let img = check("parents", &tar(&es), o);
    assert!(img.len() >= 4096);
}

#[test]
fn long_names_in_every_format() {
    if !need("long_names_in_every_format", TOOLS) {
        return;
    }
    let n255 = "n".repeat(255);
    let deep = format!("{}/{}", "dir".repeat(40), "file-name-".repeat(9));
    let path4k: String = (0..15)
        .map(|_| "x".repeat(250))
        .collect::<Vec<_>>()
        .join("/");
    let es = vec![
        Ent::dir("./"),
        Ent::file(&n255, b"255"),
        Ent::file(format!("gnu/{}", "g".repeat(200)), b"gnu").fmt(Fmt::Gnu),
        Ent::hardlink(
            format!("gnu/{}", "k".repeat(150)),
            format!("gnu/{}", "g".repeat(200)),
        )
        .fmt(Fmt::Gnu),
        Ent::symlink(format!("gnu/{}", "s".repeat(120)), "t".repeat(300)).fmt(Fmt::Gnu),
        Ent::file(&deep, b"ustar prefix").fmt(Fmt::Ustar),
        Ent::file(&path4k, b"pax path"),
        Ent::file("unicode/héllo wörld ☃", b"u"),
        Ent::file("odd/-dash", b"-"),
        Ent::file("odd/new\nline", b"nl"),
        Ent::file(b"odd/bytes\xff\xfe", b"not utf-8"),
    ];
    // Directories the tar never lists.
    let o = Opts {
        no_dir_mtimes: true,
        ..Opts::default()
    };
    check("names", &tar(&es), o);
}

#[test]
fn a_later_entry_replaces_an_earlier_one() {
    if !need("a_later_entry_replaces_an_earlier_one", TOOLS) {
        return;
    }
    let es = vec![
        Ent::dir("./"),
        Ent::file("f", b"first"),
        Ent::hardlink("keep", "f"),
        Ent::file("f", b"second, longer").mode(0o600),
        Ent::file("g", b"file"),
        Ent::dir("g").mode(0o700),
        Ent::dir("d").mode(0o755),
        Ent::file("d/in", b"in"),
        Ent::dir("d").mode(0o701).xattr("user.later", "1"),
        Ent::symlink("s", "one"),
        Ent::symlink("s", "two"),
        Ent::file("h", b"h"),
        Ent::hardlink("h2", "h"),
        Ent::file("h2", b"h2 is its own file now"),
    ];
    check("replace", &tar(&es), Opts::default());
}

#[test]
fn whiteouts_as_overlayfs_reads_them() {
    if !need("whiteouts_as_overlayfs_reads_them", TOOLS) {
        return;
    }
    let es = vec![
        Ent::dir("./"),
        Ent::dir("etc"),
        Ent::file("etc/.wh.passwd", b"").mode(0o600).owner(3, 4),
        Ent::dir("var"),
        Ent::dir("var/cache").mode(0o750),
        Ent::file("var/cache/.wh..wh..opq", b""),
        Ent::file("var/cache/kept", b"k"),
        Ent::file(".wh.gone-dir", b""),
        Ent::file("lib/.wh..wh.plnk", b""),
    ];
    let mut o = Opts::default();
    o.skip_mtime.insert(b"lib".to_vec());
    let img = check("whiteouts", &tar(&es), o);
    // The layer keeps the markers; the image has no file named .wh.*.
    assert!(!img.windows(4).any(|w| w == b".wh."));
}

#[test]
fn big_directories_span_blocks() {
    if !need("big_directories_span_blocks", TOOLS) {
        return;
    }
    let mut es = vec![Ent::dir("./"), Ent::dir("big")];
    for k in 0..3000 {
        let name = format!("big/{}-{k}", "e".repeat(k % 40));
        es.push(Ent::file(name, format!("{k}")));
    }
    for k in 0..300 {
        es.push(Ent::dir(format!("many-{k:03}")));
    }
    check("bigdir", &tar(&es), Opts::default());
}

#[test]
fn sparse_files_in_every_gnu_format() {
    if !need("sparse_files_in_every_gnu_format", TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mk = |name: &str, size: u64, data: &[(u64, &[u8])]| {
        let f = std::fs::File::create(src.join(name)).unwrap();
        f.set_len(size).unwrap();
        for (at, b) in data {
            std::os::unix::fs::FileExt::write_all_at(&f, b, *at).unwrap();
        }
    };
    mk("holes-only", 50 << 20, &[]);
    mk("data-at-end", 20 << 20, &[((20 << 20) - 3, b"end")]);
    mk(
        "scattered",
        30 << 20,
        &[
            (0, &[1u8; 5000]),
            (7 << 20, &[2u8; 70_000]),
            (29 << 20, &[3u8; 4096]),
        ],
    );
    mk("small-tail", 10_000, &[(9_000, b"tail")]);
    for (n, (fmt, version)) in [
        ("gnu", None),
        ("posix", Some("0.0")),
        ("posix", Some("0.1")),
        ("posix", Some("1.0")),
    ]
    .into_iter()
    .enumerate()
    {
        let tarp = dir.path().join(format!("s{n}.tar"));
        let mut c = std::process::Command::new("tar");
        c.arg(format!("--format={fmt}")).arg("--sparse");
        if let Some(v) = version {
            c.arg(format!("--sparse-version={v}"));
        }
        c.arg("-cf").arg(&tarp).arg("-C").arg(&src).arg(".");
        common::run(&mut c);
        let bytes = std::fs::read(&tarp).unwrap();
        assert!(
            bytes.len() < 1 << 20,
            "tar stored the holes: {fmt} {version:?}"
        );
        let img = check(&format!("sparse {fmt} {version:?}"), &bytes, root_made_up());
        // Holes stay holes: the image is about as small as the tar.
        assert!(
            img.len() < 1 << 20,
            "{} bytes for {fmt} {version:?}",
            img.len()
        );
    }
}

#[test]
fn the_same_tar_gives_the_same_bytes_streamed_or_read() {
    let mut es = vec![Ent::dir("./").mtime(5)];
    for k in 0..200 {
        es.push(
            Ent::file(format!("d{}/f{k}", k % 7), pattern(k * 97, k as u8)).mtime(k as i64 % 3),
        );
        if k % 10 == 0 {
            es.push(Ent::hardlink(format!("l{k}"), format!("d{}/f{k}", k % 7)));
        }
    }
    let bytes = tar(&es);
    let build = |b: &[u8]| {
        let mut out = std::io::Cursor::new(Vec::new());
        Builder::new().build(b, &mut out).unwrap();
        out.into_inner()
    };
    let a = build(&bytes);
    assert_eq!(a, build(&bytes));
    for step in [1usize, 7, 511, 512, 513, 4096, 100_000] {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = Builder::new().writer(&mut out).unwrap();
        for piece in bytes.chunks(step) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        assert!(
            out.into_inner() == a,
            "pushing in pieces of {step} gave other bytes"
        );
    }
}

/// Builds bad input; returns the error after checking that no valid image
/// was left behind.
fn refused(bytes: &[u8], limits: Option<Limits>) -> erofs::Error {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut b = Builder::new();
    if let Some(l) = limits {
        b.limits(l);
    }
    let e = b
        .build(bytes, &mut out)
        .expect_err("bad input was accepted");
    let left = out.into_inner();
    assert!(
        erofs::check_image(&left).is_err(),
        "a valid image was left after: {e}"
    );
    e
}

#[test]
fn bad_input_is_a_typed_error_naming_the_entry() {
    let n256 = "n".repeat(256);
    let cases: Vec<(Vec<u8>, ErrorKind, &str)> = vec![
        (
            tar(&[Ent::file("a/../../etc/passwd", b"x")]),
            ErrorKind::PathEscapesRoot,
            "a/../../etc/passwd",
        ),
        (
            tar(&[Ent::hardlink("l", "later"), Ent::file("later", b"")]),
            ErrorKind::InvalidHardlink,
            "l",
        ),
        (
            tar(&[Ent::dir("d"), Ent::hardlink("l", "d")]),
            ErrorKind::InvalidHardlink,
            "l",
        ),
        (
            tar(&[Ent::file("n".repeat(256), b"")]),
            ErrorKind::NameTooLong,
            &n256,
        ),
        (
            tar(&[Ent::file("f", b""), Ent::file("f/g", b"")]),
            ErrorKind::NotADirectory,
            "f/g",
        ),
        (tar(&[Ent::file("./", b"")]), ErrorKind::NotADirectory, "./"),
        (
            tar(&[Ent::file("x", b"").xattr("system.nfs4_acl", "a")]),
            ErrorKind::UnsupportedXattr,
            "x",
        ),
        (tar(&[Ent::symlink("s", "")]), ErrorKind::InvalidHeader, "s"),
        (tar(&[Ent::chr("c", 4096, 0)]), ErrorKind::Unsupported, "c"),
        (
            tar(&[Ent::file("u", b"").owner(1 << 33, 0)]),
            ErrorKind::LimitExceeded,
            "u",
        ),
        (
            tar(&[Ent::file("m", b"").record("mtime", "soon")]),
            ErrorKind::InvalidPax,
            "m",
        ),
    ];
    for (bytes, kind, entry) in cases {
        let e = refused(&bytes, None);
        assert_eq!(e.kind(), kind, "{e}");
        assert_eq!(e.entry(), Some(entry), "{e}");
        assert!(
            e.to_string().contains(&format!("{entry:?}")) || entry.len() > 200,
            "{e}"
        );
        assert!(e.offset().is_some(), "{e}");
    }
}

#[test]
fn truncated_and_corrupt_tars_are_refused() {
    let good = tar(&[
        Ent::dir("./"),
        Ent::file("a", pattern(10_000, 3)),
        Ent::file("b", b"b"),
    ]);
    Builder::new()
        .build(&good[..], std::io::Cursor::new(Vec::new()))
        .unwrap();
    for cut in [
        0,
        100,
        512,
        1024,
        1536,
        5000,
        good.len() - 1024 - 512,
        good.len() - 1024,
    ] {
        let e = refused(&good[..cut], None);
        assert_eq!(e.kind(), ErrorKind::Truncated, "cut at {cut}: {e}");
    }
    let e = refused(&good[..5000], None);
    assert_eq!(e.entry(), Some("a"), "{e}");
    let mut bad = good.clone();
    bad[512 + 10] ^= 1; // a byte of the second header's name
    assert_eq!(refused(&bad, None).kind(), ErrorKind::InvalidHeader);
    // A PAX record whose length lies.
    let mut w = TarW::new();
    let e = Ent::file("p", b"");
    w.header(b"PaxHeaders/p", &e, b'x', 12, b"", b"");
    w.data(b"99 path=x\n\0\0");
    w.add(&e);
    assert_eq!(refused(&w.finish(), None).kind(), ErrorKind::InvalidPax);
}

#[test]
fn entry_counts_and_metadata_have_bounds() {
    let es: Vec<Ent> = (0..100).map(|k| Ent::file(format!("f{k}"), b"")).collect();
    let bytes = tar(&es);
    let small = Limits {
        max_entries: 50,
        ..Limits::default()
    };
    let e = refused(&bytes, Some(small));
    assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    assert_eq!(e.entry(), Some("f50"));
    let tight = Limits {
        max_metadata_bytes: 2000,
        ..Limits::default()
    };
    assert_eq!(
        refused(&bytes, Some(tight)).kind(),
        ErrorKind::LimitExceeded
    );
    let ext = Limits {
        max_extension_bytes: 100,
        ..Limits::default()
    };
    let long = tar(&[Ent::file("xx/".repeat(100), b"")]);
    assert_eq!(refused(&long, Some(ext)).kind(), ErrorKind::LimitExceeded);
    // Within the defaults, the same tars build.
    Builder::new()
        .build(&bytes[..], std::io::Cursor::new(Vec::new()))
        .unwrap();
    Builder::new()
        .build(&long[..], std::io::Cursor::new(Vec::new()))
        .unwrap();
}

#[test]
fn check_image_refuses_damage() {
    let bytes = tar(&[Ent::dir("./"), Ent::file("a", b"a")]);
    let mut out = std::io::Cursor::new(Vec::new());
    let info = Builder::new().build(&bytes[..], &mut out).unwrap();
    let img = out.into_inner();
    assert_eq!(erofs::check_image(&img).unwrap().blocks, info.blocks);
    let mut bad = img.clone();
    bad[1024 + 40] ^= 1; // meta_blkaddr: the checksum catches it
    assert_eq!(
        erofs::check_image(&bad).unwrap_err().kind(),
        ErrorKind::InvalidImage
    );
    let mut short = img.clone();
    short.truncate(img.len() - 4096);
    assert_eq!(
        erofs::check_image(&short).unwrap_err().kind(),
        ErrorKind::InvalidImage
    );
    let _ = Path::new("");
}
