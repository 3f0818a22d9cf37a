//! Real trees: subtrees of this machine's `/usr/share` and `/usr/lib`, a
//! Debian root made by `debootstrap --variant=minbase` (cached between runs)
//! with a second layer over it, a file over 4 GiB streamed through the
//! writer and a sparse one, and a disk over 2 GiB whose VMDK needs split
//! extents. Each image is checked by fsck.erofs and mounted by the kernel,
//! and compared with `tar -x` of its layer or `umoci unpack` of its image.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::debian::{debian_tar, tar_of};
use common::view::{snapshot, Opts};
use common::{cache_dir, fsck, need, oci, run, Mount};

/// These tests move gigabytes: one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds, fscks, mounts and compares one layer tar with its extraction.
fn prove_layer(tarp: &Path, work: &Path, opts: &Opts) -> erofs::ImageInfo {
    let img = work.join("layer.erofs");
    let info = common::build(tarp, &img);
    match common::prove_layer(tarp, &img, work, opts) {
        Ok(n) => assert!(n > 100, "{n} paths"),
        Err(d) => panic!(
            "{}: the mounted image differs from tar's extraction:\n{d}",
            tarp.display()
        ),
    }
    info
}

#[test]
fn subtrees_of_this_machine_mount_as_tar_extracts_them() {
    if !need(
        "subtrees_of_this_machine_mount_as_tar_extracts_them",
        &["mount", "losetup", "tar", "fsck.erofs"],
    ) {
        return;
    }
    let _g = heavy();
    let candidates = [
        "usr/share/doc",
        "usr/share/zoneinfo",
        "usr/share/perl",
        "usr/share/man/man1",
        "usr/share/locale",
        "usr/share/i18n",
        "usr/lib/x86_64-linux-gnu/perl-base",
        "usr/lib/x86_64-linux-gnu/gconv",
        "usr/lib/python3.11",
        "usr/lib/aarch64-linux-gnu/perl-base",
        "usr/lib/systemd",
    ];
    let present: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|p| Path::new("/").join(p).is_dir())
        .collect();
    assert!(
        present.len() >= 3,
        "too few of {candidates:?} on this machine"
    );
    let dir = tempfile::tempdir().unwrap();
    let tarp = dir.path().join("usr.tar");
    tar_of(Path::new("/"), &present, &tarp);
    let opts = Opts {
        // The tar lists `usr`, `usr/share`, ... only through their files.
        skip_meta: [
            &b""[..],
            b"usr",
            b"usr/share",
            b"usr/lib",
            b"usr/share/man",
            b"usr/lib/x86_64-linux-gnu",
            b"usr/lib/aarch64-linux-gnu",
        ]
        .iter()
        .map(|p| p.to_vec())
        .collect(),
        ..Opts::default()
    };
    let info = prove_layer(&tarp, dir.path(), &opts);
    let tar_len = std::fs::metadata(&tarp).unwrap().len();
    eprintln!(
        "{present:?}: tar {tar_len} bytes, image {} bytes, {} inodes",
        info.size_bytes(),
        info.inodes
    );
    assert!(info.inodes > 2000);
}

#[test]
fn a_debian_root_mounts_as_tar_extracts_it_and_merges_as_umoci_unpacks_it() {
    if !need(
        "a_debian_root_mounts_as_tar_extracts_it_and_merges_as_umoci_unpacks_it",
        &[
            "mount",
            "losetup",
            "tar",
            "fsck.erofs",
            "debootstrap",
            "umoci",
            "qemu-img",
        ],
    ) {
        return;
    }
    let base = debian_tar();
    let _g = heavy();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("l0");
    std::fs::create_dir(&work).unwrap();
    let info = prove_layer(&base, &work, &Opts::default());
    let tar_len = std::fs::metadata(&base).unwrap().len();
    eprintln!(
        "debian minbase: tar {tar_len} bytes, image {} bytes, {} inodes",
        info.size_bytes(),
        info.inodes
    );

    // A second layer over it, made from the extracted root: whiteouts of
    // real files and directories, an opaque directory, changed files, new
    // hard links.
    let x = work.join("x");
    let up = dir.path().join("upper");
    std::fs::create_dir(&up).unwrap();
    let docs: Vec<PathBuf> = std::fs::read_dir(x.join("usr/share/doc"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .take(20)
        .collect();
    std::fs::create_dir_all(up.join("usr/share/doc")).unwrap();
    for d in &docs {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(up.join("usr/share/doc").join(format!(".wh.{name}")), b"").unwrap();
    }
    std::fs::create_dir_all(up.join("etc/apt")).unwrap();
    std::fs::write(up.join("etc/apt/.wh..wh..opq"), b"").unwrap();
    std::fs::write(
        up.join("etc/apt/sources.list"),
        b"deb http://example.invalid/debian stable main\n",
    )
    .unwrap();
    std::fs::write(up.join("etc/hostname"), b"sandbox\n").unwrap();
    std::fs::create_dir_all(up.join("usr/bin")).unwrap();
    std::fs::write(up.join("usr/bin/.wh.perl"), b"").unwrap();
    std::fs::write(up.join("usr/bin/newtool"), b"#!/bin/sh\necho new\n").unwrap();
    std::fs::hard_link(up.join("usr/bin/newtool"), up.join("usr/bin/newtool2")).unwrap();
    std::fs::create_dir_all(up.join("var/cache")).unwrap();
    std::fs::write(up.join("var/cache/.wh.apt"), b"").unwrap();
    let upper = dir.path().join("upper.tar");
    tar_of(&up, &["."], &upper);

    let tars = vec![base.clone(), upper];
    oci::layout(&dir.path().join("oci"), &tars);
    let rootfs = oci::unpack(&dir.path().join("oci"), &dir.path().join("bundle"));
    let expected = snapshot(&rootfs);
    assert!(!expected.nodes.contains_key(&b"usr/bin/perl"[..]));
    assert!(!expected.nodes.contains_key(&b"var/cache/apt"[..]));
    let d = common::disk(dir.path(), &tars);
    let layer_bytes: u64 = d.info.devices.iter().map(|x| x.blocks * 4096).sum();
    eprintln!(
        "fsmeta {} bytes for {layer_bytes} bytes of layers ({:.3}%)",
        d.info.size_bytes(),
        100.0 * d.info.size_bytes() as f64 / layer_bytes as f64
    );
    let opts = Opts {
        skip_mtime: [Vec::new()].into_iter().collect(),
        ..Opts::default()
    };
    common::prove_disk(&d, &expected, &opts);
}

/// A tar stream made on the fly: a root entry, a file of `size` bytes of
/// [`byte_at`] data, and a small file; never held in memory.
struct BigTar {
    head: Vec<u8>,
    size: u64,
    at: u64,
    tail: Vec<u8>,
    tail_at: usize,
}

fn byte_at(o: u64) -> u8 {
    let x = (o / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> ((o % 8) * 8) ^ (x >> 59)) as u8
}

fn fill(buf: &mut [u8], from: u64) {
    // Byte by byte up to a word boundary, then [`byte_at`] a word at a time.
    let head = ((8 - from % 8) % 8).min(buf.len() as u64) as usize;
    for (i, b) in buf[..head].iter_mut().enumerate() {
        *b = byte_at(from + i as u64);
    }
    let at = from + head as u64;
    let len = buf.len();
    let mut words = buf[head..].chunks_exact_mut(8);
    for (k, w) in (&mut words).enumerate() {
        let x = (at / 8 + k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        w.copy_from_slice(&(x ^ (x >> 59).wrapping_mul(0x0101_0101_0101_0101)).to_le_bytes());
    }
    let rest = words.into_remainder();
    let tail_at = from + (len - rest.len()) as u64;
    for (i, b) in rest.iter_mut().enumerate() {
        *b = byte_at(tail_at + i as u64);
    }
}

impl BigTar {
    fn new(size: u64) -> BigTar {
        use common::tarw::{Ent, TarW};
        let mut w = TarW::new();
        w.add(&Ent::dir("./"));
        let e = Ent::file("big", b"").record("size", size.to_string());
        // The header claims `size` data bytes through PAX; the data streams.
        let mut recs = common::tarw::record(b"size", size.to_string().as_bytes());
        recs.extend(common::tarw::record(b"mtime", b"1700000000.5"));
        let pax_head = Ent::file("PaxHeaders/big", b"");
        w.header(
            b"PaxHeaders/big",
            &pax_head,
            b'x',
            recs.len() as u64,
            b"",
            b"",
        );
        w.data(&recs);
        w.header(b"big", &e, b'0', 0, b"", b"");
        let head = w.buf;
        let mut t = TarW::new();
        let pad = (512 - size % 512) % 512;
        t.buf.resize(pad as usize, 0);
        t.add(&Ent::file("small", b"after the big one"));
        BigTar {
            head,
            size,
            at: 0,
            tail: t.finish(),
            tail_at: 0,
        }
    }
}

impl Read for BigTar {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.head.is_empty() {
            let n = buf.len().min(self.head.len());
            buf[..n].copy_from_slice(&self.head[..n]);
            self.head.drain(..n);
            return Ok(n);
        }
        if self.at < self.size {
            let n = (buf.len() as u64).min(self.size - self.at) as usize;
            fill(&mut buf[..n], self.at);
            self.at += n as u64;
            return Ok(n);
        }
        let n = buf.len().min(self.tail.len() - self.tail_at);
        buf[..n].copy_from_slice(&self.tail[self.tail_at..self.tail_at + n]);
        self.tail_at += n;
        Ok(n)
    }
}

/// A temporary directory in /dev/shm if it has `bytes` free.
fn memory_dir(bytes: u64) -> Option<tempfile::TempDir> {
    let c = std::ffi::CString::new("/dev/shm").unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    (free >= bytes)
        .then(|| tempfile::tempdir_in("/dev/shm").ok())
        .flatten()
}

/// Checks a few MiB of `path` around its start, its end and the 4 GiB mark.
fn assert_big_sampled(path: &Path, size: u64) {
    let f = std::fs::File::open(path).unwrap();
    assert_eq!(f.metadata().unwrap().len(), size);
    let (mut got, mut want) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for at in [
        0,
        (2 << 30) - 4096,
        (4 << 30) - (1 << 20) + 4096,
        size - (1 << 20),
    ] {
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut got, at).unwrap();
        fill(&mut want, at);
        assert!(got == want, "{} differs near byte {at}", path.display());
    }
}

/// Reads `path` and checks it holds `size` bytes of [`byte_at`] data.
fn assert_big(path: &Path, size: u64) {
    let mut f = std::fs::File::open(path).unwrap();
    assert_eq!(f.metadata().unwrap().len(), size);
    let (mut got, mut want) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let n = f.read(&mut got).unwrap();
        if n == 0 {
            break;
        }
        fill(&mut want[..n], at);
        assert!(
            got[..n] == want[..n],
            "{} differs near byte {at}",
            path.display()
        );
        at += n as u64;
    }
    assert_eq!(at, size);
}

#[test]
fn a_file_over_4_gib_and_a_disk_whose_vmdk_splits_extents() {
    if !need(
        "a_file_over_4_gib_and_a_disk_whose_vmdk_splits_extents",
        &["mount", "losetup", "fsck.erofs", "qemu-img", "tar"],
    ) {
        return;
    }
    let _g = heavy();
    let t0 = std::time::Instant::now();
    let stage = |what: &str| eprintln!("[{:6.1} s] {what}", t0.elapsed().as_secs_f64());
    let size: u64 = (4 << 30) + 12_345;
    let dir = tempfile::tempdir_in(cache_dir("big")).unwrap();
    let l0 = dir.path().join("layer0.erofs");
    let mut out = std::fs::File::create(&l0).unwrap();
    let mut w = erofs::Builder::new().writer(&mut out).unwrap();
    let copied = std::io::copy(&mut BigTar::new(size), &mut w).unwrap();
    assert!(copied > size);
    let info = w.finish().unwrap();
    drop(out);
    assert!(info.size_bytes() > size && info.size_bytes() < size + (1 << 20));
    stage("4 GiB layer built");
    fsck(&l0, &[]);
    stage("fsck.erofs of it");
    {
        let m = Mount::image(&l0, &dir.path().join("mnt0"));
        assert_big(&m.dir.join("big"), size);
        let meta = std::fs::metadata(m.dir.join("big")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (1_700_000_000, 500_000_000)
        );
        assert_eq!(
            std::fs::read(m.dir.join("small")).unwrap(),
            b"after the big one"
        );
    }

    // A sparse file over 4 GiB, as GNU tar stores it: holes stay holes.
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let f = std::fs::File::create(src.join("d/sparse")).unwrap();
    f.set_len(6 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"middle", 5 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"end", (6 << 30) - 3).unwrap();
    drop(f);
    std::fs::write(src.join("d/new"), b"layer 1").unwrap();
    std::fs::write(src.join(".wh.small"), b"").unwrap();
    let t1 = dir.path().join("l1.tar");
    run(Command::new("tar")
        .args(["--format=posix", "--sparse", "--sparse-version=1.0", "-cf"])
        .arg(&t1)
        .arg("-C")
        .arg(&src)
        .arg("."));
    let l1 = dir.path().join("layer1.erofs");
    common::build(&t1, &l1);
    assert!(std::fs::metadata(&l1).unwrap().len() < 1 << 20);
    fsck(&l1, &[]);

    let d = common::Disk {
        info: {
            let files = [
                std::fs::File::open(&l0).unwrap(),
                std::fs::File::open(&l1).unwrap(),
            ];
            let refs: Vec<&dyn erofs::ReadAt> =
                files.iter().map(|f| f as &dyn erofs::ReadAt).collect();
            erofs::merge(
                &refs,
                std::fs::File::create(dir.path().join("fsmeta.erofs")).unwrap(),
            )
            .unwrap()
        },
        layers: vec![l0.clone(), l1.clone()],
        fsmeta: dir.path().join("fsmeta.erofs"),
        vmdk: dir.path().join("disk.vmdk"),
    };
    let vf = vec![
        erofs::vmdk::File {
            path: "fsmeta.erofs".into(),
            size: d.info.size_bytes(),
        },
        erofs::vmdk::File {
            path: "layer0.erofs".into(),
            size: std::fs::metadata(&l0).unwrap().len(),
        },
        erofs::vmdk::File {
            path: "layer1.erofs".into(),
            size: std::fs::metadata(&l1).unwrap().len(),
        },
    ];
    let text = erofs::vmdk::descriptor(&vf).unwrap();
    assert_eq!(text.matches("\"layer0.erofs\"").count(), 3, "{text}");
    assert!(
        text.contains("RW 4194304 FLAT \"layer0.erofs\" 4194304\n"),
        "{text}"
    );
    std::fs::write(&d.vmdk, &text).unwrap();
    // The fsmeta of a 4 GiB file is a few blocks (one chunk per contiguous
    // file); with the sparse one, its chunk table of holes.
    let alone = erofs::merge(
        &[&std::fs::File::open(&l0).unwrap()],
        std::io::Cursor::new(Vec::new()),
    )
    .unwrap();
    assert!(alone.blocks <= 4, "fsmeta of {} blocks", alone.blocks);
    assert!(
        d.info.size_bytes() < 1 << 20,
        "fsmeta of {} blocks",
        d.info.blocks
    );
    fsck(&d.fsmeta, &[&l0, &l1]);
    stage("sparse layer, fsmeta, fsck.erofs --device");

    // The raw disk goes to memory when there is room: 4 GiB less to flush.
    let shm = memory_dir(6 << 30);
    let raw = shm
        .as_ref()
        .map_or(dir.path(), |t| t.path())
        .join("disk.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(&d.vmdk)
        .arg(&raw));
    stage("qemu-img convert");
    common::assert_concatenation(&raw, &[d.fsmeta.clone(), l0.clone(), l1.clone()]);
    stage("raw disk compared with the images");
    for how in ["devices", "raw"] {
        let at = dir.path().join(format!("mnt-{how}"));
        // All of it through the one disk, samples through the devices.
        let m = if how == "raw" {
            Mount::image(&raw, &at)
        } else {
            Mount::with_devices(&d.fsmeta, &d.layers, &at)
        };
        if how == "raw" {
            assert_big(&m.dir.join("big"), size);
        } else {
            assert_big_sampled(&m.dir.join("big"), size);
        }
        assert!(
            !m.dir.join("small").exists(),
            "the whiteout of layer 1 hides it"
        );
        assert_eq!(std::fs::read(m.dir.join("d/new")).unwrap(), b"layer 1");
        let mut s = std::fs::File::open(m.dir.join("d/sparse")).unwrap();
        assert_eq!(s.metadata().unwrap().len(), 6 << 30);
        let mut b = [0u8; 6];
        std::os::unix::fs::FileExt::read_exact_at(&s, &mut b, 5 << 30).unwrap();
        assert_eq!(&b, b"middle");
        std::os::unix::fs::FileExt::read_exact_at(&s, &mut b[..3], (6 << 30) - 3).unwrap();
        assert_eq!(&b[..3], b"end");
        // Every other byte of it is zero (read through the one disk only:
        // 6 GiB of holes take a while).
        if how != "raw" {
            stage(&format!("mounted ({how}) and sampled"));
            continue;
        }
        let (mut buf, mut at, mut nonzero) = (vec![0u8; 1 << 20], 0u64, 0usize);
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            nonzero += buf[..n].iter().filter(|&&c| c != 0).count();
            at += n as u64;
        }
        assert_eq!((at, nonzero), (6 << 30, 9));
        stage(&format!("mounted ({how}) and read back"));
    }
    let _ = std::fs::remove_file(&raw);
}
