//! fsmeta: layer images merged as overlayfs would show them, mounted with
//! `device=` options and as one disk through the VMDK and `qemu-img`,
//! compared with `umoci unpack` of the same OCI image; fsck.erofs with
//! `--device`; the checks of an fsmeta against its layers.

mod common;

use std::path::PathBuf;

use common::tarw::{tar, Ent};
use common::view::{snapshot, Opts};
use common::{need, oci};

const TOOLS: &[&str] = &["mount", "losetup", "fsck.erofs", "qemu-img", "umoci"];

fn cap() -> Vec<u8> {
    vec![1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

fn layers() -> Vec<Vec<u8>> {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let l0 = vec![
        Ent::dir("./"),
        Ent::dir("etc"),
        Ent::file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        Ent::file("etc/group", b"root:x:0:\n"),
        Ent::file("etc/hosts", b"127.0.0.1 localhost\n"),
        Ent::hardlink("etc/hosts2", "etc/hosts"),
        Ent::dir("usr"),
        Ent::dir("usr/bin"),
        Ent::file("usr/bin/tool", b"\x7fELF tool")
            .mode(0o4755)
            .xattr("security.capability", cap()),
        Ent::dir("usr/lib"),
        Ent::file("usr/lib/libx.so.1", &big[..200_000]),
        Ent::symlink("usr/lib/libx.so", "libx.so.1"),
        Ent::dir("usr/share"),
        Ent::dir("usr/share/doc"),
        Ent::dir("usr/share/doc/a"),
        Ent::file("usr/share/doc/a/readme", b"a"),
        Ent::dir("usr/share/doc/b"),
        Ent::file("usr/share/doc/b/readme", b"b"),
        Ent::dir("var"),
        Ent::dir("var/cache"),
        Ent::dir("var/cache/apt"),
        Ent::file("var/cache/apt/pkgcache", b"cache"),
        Ent::dir("var/cache/apt/sub"),
        Ent::file("var/cache/apt/sub/f", b"f"),
        Ent::dir("dev"),
        Ent::chr("dev/null", 1, 3).mode(0o666),
        Ent::fifo("dev/initctl"),
        Ent::dir("opt"),
        Ent::dir("opt/old"),
        Ent::file("opt/old/x", b"x"),
        Ent::dir("data"),
        Ent::file("data/big", &big),
        Ent::file("data/empty", b""),
        Ent::dir("home").owner(1000, 1000).mode(0o700),
        Ent::file("top", b"a file at the top"),
    ];
    let l1 = vec![
        Ent::dir("etc").mode(0o750).xattr("user.l1", "yes"),
        Ent::file("etc/.wh.group", b""),
        Ent::file(
            "etc/passwd",
            b"root:x:0:0::/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n",
        ),
        Ent::dir("usr"),
        Ent::dir("usr/share"),
        Ent::dir("usr/share/doc"),
        Ent::file("usr/share/doc/.wh.a", b""),
        Ent::dir("var"),
        Ent::dir("var/cache"),
        Ent::dir("var/cache/apt"),
        Ent::file("var/cache/apt/.wh..wh..opq", b""),
        Ent::file("var/cache/apt/fresh", b"fresh"),
        Ent::dir("opt"),
        Ent::file("opt/old", b"now a file"),
        Ent::dir("newdir"),
        Ent::file("newdir/.wh.nothing", b""),
        Ent::file("newdir/f", b"new"),
        Ent::dir("home"),
        Ent::file("home/.wh.not-there", b""),
        Ent::dir("x"),
        Ent::file("x/one", b"linked in layer 1"),
        Ent::hardlink("x/two", "x/one"),
        Ent::dir("usr/lib"),
        Ent::file("usr/lib/libx.so.1", &big[1000..250_000]),
    ];
    let l2 = vec![
        Ent::dir("etc"),
        Ent::file("etc/.wh.hosts", b""),
        Ent::dir("opt"),
        Ent::dir("opt/old").mode(0o711),
        Ent::file("opt/old/again", b"a dir again"),
        Ent::dir("usr"),
        Ent::dir("usr/share").xattr("trusted.t", "2"),
        Ent::file("usr/share/.wh..wh..opq", b""),
        Ent::file("usr/share/only", b"only this in /usr/share"),
        Ent::symlink("top", "/usr/share/only"),
        Ent::dir("x"),
        Ent::file("x/.wh.one", b""),
        Ent::file("data/more", &big[..5000]),
    ];
    vec![tar(&l0), tar(&l1), tar(&l2)]
}

#[test]
fn a_merge_mounts_like_umoci_unpacks_it() {
    if !need("a_merge_mounts_like_umoci_unpacks_it", TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut tars = Vec::new();
    for (k, t) in layers().into_iter().enumerate() {
        let p = dir.path().join(format!("l{k}.tar"));
        std::fs::write(&p, t).unwrap();
        tars.push(p);
    }
    oci::layout(&dir.path().join("oci"), &tars);
    let rootfs = oci::unpack(&dir.path().join("oci"), &dir.path().join("bundle"));
    let expected = snapshot(&rootfs);
    let d = common::disk(dir.path(), &tars);
    assert_eq!(d.info.devices.len(), 3);
    // Metadata only: far smaller than the 3 MB of data.
    assert!(d.info.blocks < 8, "fsmeta of {} blocks", d.info.blocks);
    let mut opts = Opts::default();
    opts.skip_mtime.insert(Vec::new()); // umoci's rootfs directory is its own
    common::prove_disk(&d, &expected, &opts);
    // What the merge must show, spelled out, beyond agreeing with umoci.
    let v = &expected.nodes;
    assert!(!v.contains_key(&b"etc/group"[..]) && !v.contains_key(&b"etc/hosts"[..]));
    assert_eq!(v[&b"etc/hosts2"[..]].nlink, 1);
    assert!(!v.contains_key(&b"usr/share/doc"[..]));
    assert!(
        v.contains_key(&b"var/cache/apt/fresh"[..])
            && !v.contains_key(&b"var/cache/apt/pkgcache"[..])
    );
    assert!(!v.contains_key(&b"newdir/nothing"[..]) && !v.contains_key(&b"newdir/.wh.nothing"[..]));
    assert_eq!(v[&b"x/two"[..]].nlink, 1);
    assert_eq!(v[&b"opt/old"[..]].kind, 'd');
}

#[test]
fn an_fsmeta_is_checked_against_its_layers() {
    let images: Vec<Vec<u8>> = layers()
        .iter()
        .map(|t| {
            let mut out = std::io::Cursor::new(Vec::new());
            erofs::Builder::new().build(&t[..], &mut out).unwrap();
            out.into_inner()
        })
        .collect();
    let refs: Vec<&dyn erofs::ReadAt> = images.iter().map(|i| i as &dyn erofs::ReadAt).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    let info = erofs::merge(&refs, &mut out).unwrap();
    let fsmeta = out.into_inner();
    assert_eq!(erofs::check_fsmeta(&fsmeta, &refs).unwrap(), info);
    let mut next = info.blocks;
    for (d, i) in info.devices.iter().zip(&images) {
        assert_eq!(d.blocks * 4096, i.len() as u64);
        assert_eq!(d.mapped_blkaddr, next);
        next += d.blocks;
    }
    assert_eq!(info.devices[1].tag, b"layer1");
    let swapped: Vec<&dyn erofs::ReadAt> = vec![refs[1], refs[0], refs[2]];
    let e = erofs::check_fsmeta(&fsmeta, &swapped).unwrap_err();
    assert_eq!(e.kind(), erofs::ErrorKind::LayerMismatch, "{e}");
    assert_eq!(e.entry(), Some("layer 0"));
    let e = erofs::check_fsmeta(&fsmeta, &refs[..2]).unwrap_err();
    assert_eq!(e.kind(), erofs::ErrorKind::LayerMismatch);
    // The same layers give the same fsmeta.
    let mut again = std::io::Cursor::new(Vec::new());
    erofs::merge(&refs, &mut again).unwrap();
    assert!(again.into_inner() == fsmeta);
    // A layer image is refused where an fsmeta is expected and vice versa.
    let mut m = erofs::Merger::new();
    let e = m.add_layer(&fsmeta, b"x").unwrap_err();
    assert_eq!(e.kind(), erofs::ErrorKind::InvalidImage);
    let cut: &[u8] = &images[0][..8192];
    let bad: &dyn erofs::ReadAt = &cut;
    assert!(erofs::Merger::new().add_layer(bad, b"x").is_err());
}

fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent()?.parent()?.join("examples").join(name);
    p.is_file().then_some(p)
}

#[test]
fn the_examples_mirror_the_reference_tools() {
    if !need(
        "the_examples_mirror_the_reference_tools",
        &["mount", "losetup", "qemu-img"],
    ) {
        return;
    }
    let (Some(t2e), Some(merge)) = (example("tar2erofs"), example("merge")) else {
        let msg = "the examples are not built (run the whole `cargo test -p erofs`)";
        assert!(!common::ci(), "{msg}");
        eprintln!("skipped: {msg}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("layers")).unwrap();
    let mut images = Vec::new();
    for (k, t) in layers().into_iter().enumerate() {
        let tarp = d.join(format!("l{k}.tar"));
        std::fs::write(&tarp, &t).unwrap();
        let img = d.join(format!("layers/{k}.erofs"));
        common::run(std::process::Command::new(&t2e).arg(&tarp).arg(&img));
        let mut mine = std::io::Cursor::new(Vec::new());
        erofs::Builder::new().build(&t[..], &mut mine).unwrap();
        assert!(
            std::fs::read(&img).unwrap() == mine.into_inner(),
            "tar2erofs differs from the library"
        );
        images.push(img);
    }
    std::fs::create_dir(d.join("vm")).unwrap();
    let mut c = std::process::Command::new(&merge);
    c.arg("--vmdk")
        .arg(d.join("vm/disk.vmdk"))
        .arg(d.join("fsmeta.erofs"))
        .args(&images);
    common::run(&mut c);
    let text = std::fs::read_to_string(d.join("vm/disk.vmdk")).unwrap();
    assert!(
        text.contains("\"../fsmeta.erofs\" 0") && text.contains("\"../layers/2.erofs\" 0"),
        "{text}"
    );
    erofs::vmdk::parse(&text)
        .unwrap()
        .check_files(&d.join("vm"))
        .unwrap();
    // A bad tar leaves no output behind.
    std::fs::write(d.join("bad.tar"), b"not a tar at all").unwrap();
    let st = std::process::Command::new(&t2e)
        .arg(d.join("bad.tar"))
        .arg(d.join("bad.erofs"))
        .status()
        .unwrap();
    assert!(
        !st.success() && !d.join("bad.erofs").exists() && !d.join("bad.erofs.partial").exists()
    );
    // qemu reads the descriptor from its own directory.
    let raw = d.join("disk.raw");
    common::run(
        std::process::Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(d.join("vm/disk.vmdk"))
            .arg(&raw),
    );
    let mut parts = vec![d.join("fsmeta.erofs")];
    parts.extend(images.iter().cloned());
    common::assert_concatenation(&raw, &parts);
    let m = common::Mount::image(&raw, &d.join("mnt"));
    assert_eq!(
        std::fs::read(m.dir.join("usr/share/only")).unwrap(),
        b"only this in /usr/share"
    );
    let v = snapshot(&m.dir);
    assert!(v.nodes.contains_key(&b"data/big"[..]) && !v.nodes.contains_key(&b"etc/group"[..]));
    assert_eq!(v.nodes[&b"usr/bin/tool"[..]].xattrs.len(), 1);
}
