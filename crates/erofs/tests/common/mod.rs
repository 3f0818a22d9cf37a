//! Shared helpers of the erofs tests: tool checks (fail under `CI=true`,
//! skip with a note otherwise), a tar writer for crafted layers, mounting
//! images with the kernel, extracting tars with GNU tar, and comparing two
//! trees as seen through the file system.
#![allow(dead_code)]

pub mod debian;
pub mod forge;
pub mod oci;
pub mod sparse;
pub mod tarw;
pub mod view;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Whether the tests run in CI, where a missing tool is a failure.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether `tools` (and root) are there; in CI a missing one panics, else
/// the test is skipped with a note.
pub fn need(test: &str, tools: &[&str]) -> bool {
    let mut missing: Vec<String> = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".into());
    }
    for t in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()));
        if !found {
            missing.push((*t).into());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: needs {}", missing.join(", "));
    if ci() {
        panic!("{msg} (CI=true: a missing tool fails the test)");
    }
    eprintln!("skipped: {msg}");
    false
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A directory under `target/` kept between runs (corpus caches).
pub fn cache_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let d = base.join("erofs-tests").join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `fsck.erofs` of an image (with its extra devices).
pub fn fsck(image: &Path, devices: &[&Path]) {
    let mut c = Command::new("fsck.erofs");
    for d in devices {
        c.arg(format!("--device={}", d.display()));
    }
    c.arg(image);
    let out = c.output().expect("fsck.erofs runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "fsck.erofs {}: {text}",
        image.display()
    );
    assert!(
        !text.contains("<E>"),
        "fsck.erofs {}: {text}",
        image.display()
    );
}

/// Mounts serialize: loop devices are shared by the tests of a binary.
static MOUNTS: Mutex<()> = Mutex::new(());

/// A read-only kernel mount, undone on drop.
pub struct Mount {
    pub dir: PathBuf,
    loops: Vec<String>,
}

fn losetup(file: &Path) -> String {
    run(Command::new("losetup")
        .args(["-f", "--show", "-r"])
        .arg(file))
    .trim()
    .to_string()
}

impl Mount {
    /// `mount -t erofs -o loop,ro IMAGE DIR`.
    pub fn image(image: &Path, dir: &Path) -> Mount {
        let _g = MOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "erofs", "-o", "loop,ro"])
            .arg(image)
            .arg(dir));
        Mount {
            dir: dir.to_path_buf(),
            loops: Vec::new(),
        }
    }

    /// The fsmeta on a loop device, each layer on one, `-o device=...`.
    pub fn with_devices(fsmeta: &Path, layers: &[PathBuf], dir: &Path) -> Mount {
        let _g = MOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::create_dir_all(dir).unwrap();
        let mut loops: Vec<String> = layers.iter().map(|l| losetup(l)).collect();
        let primary = losetup(fsmeta);
        let mut opts = String::from("ro");
        for l in &loops {
            opts.push_str(",device=");
            opts.push_str(l);
        }
        loops.push(primary.clone());
        let m = Mount {
            dir: dir.to_path_buf(),
            loops,
        };
        run(Command::new("mount")
            .args(["-t", "erofs", "-o", &opts, &primary])
            .arg(dir));
        m
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

/// `tar -x` as root with everything a layer carries.
pub fn extract(tar: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--same-owner",
            "--same-permissions",
            "-xf",
        ])
        .arg(tar)
        .arg("-C")
        .arg(dir));
}

/// Builds an image of a tar file with the crate.
pub fn build(tar: &Path, image: &Path) -> erofs::ImageInfo {
    let mut out = std::fs::File::create(image).unwrap();
    erofs::Builder::new()
        .build(std::fs::File::open(tar).unwrap(), &mut out)
        .unwrap_or_else(|e| panic!("building {}: {e}", tar.display()))
}

/// A small deterministic PRNG (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Layer images, their fsmeta and the VMDK of one disk, in one directory.
pub struct Disk {
    pub layers: Vec<PathBuf>,
    pub fsmeta: PathBuf,
    pub vmdk: PathBuf,
    pub info: erofs::ImageInfo,
}

/// Builds every layer tar, merges them and writes the descriptor.
pub fn disk(dir: &Path, tars: &[PathBuf]) -> Disk {
    let mut layers = Vec::new();
    for (k, t) in tars.iter().enumerate() {
        let img = dir.join(format!("layer{k}.erofs"));
        build(t, &img);
        layers.push(img);
    }
    let files: Vec<std::fs::File> = layers
        .iter()
        .map(|l| std::fs::File::open(l).unwrap())
        .collect();
    let mut m = erofs::Merger::new();
    for (k, f) in files.iter().enumerate() {
        m.add_layer(f, format!("layer{k}.erofs").as_bytes())
            .unwrap();
    }
    let fsmeta = dir.join("fsmeta.erofs");
    let info = m.finish(std::fs::File::create(&fsmeta).unwrap()).unwrap();
    let mut vf = vec![erofs::vmdk::File {
        path: "fsmeta.erofs".into(),
        size: info.size_bytes(),
    }];
    for (k, f) in files.iter().enumerate() {
        vf.push(erofs::vmdk::File {
            path: format!("layer{k}.erofs"),
            size: f.metadata().unwrap().len(),
        });
    }
    let vmdk = dir.join("disk.vmdk");
    std::fs::write(&vmdk, erofs::vmdk::descriptor(&vf).unwrap()).unwrap();
    Disk {
        layers,
        fsmeta,
        vmdk,
        info,
    }
}

/// The whole proof of a disk: fsck of every image (the fsmeta with its
/// devices), the fsmeta mounted with `device=` options and compared with
/// `expected`, the VMDK through `qemu-img convert` byte-identical to the
/// concatenation, and that raw disk mounted and compared.
pub fn prove_disk(d: &Disk, expected: &view::View, opts: &view::Opts) {
    for l in &d.layers {
        fsck(l, &[]);
    }
    let devs: Vec<&Path> = d.layers.iter().map(|p| p.as_path()).collect();
    fsck(&d.fsmeta, &devs);
    let files: Vec<std::fs::File> = d
        .layers
        .iter()
        .map(|l| std::fs::File::open(l).unwrap())
        .collect();
    let refs: Vec<&dyn erofs::ReadAt> = files.iter().map(|f| f as &dyn erofs::ReadAt).collect();
    erofs::check_fsmeta(&std::fs::File::open(&d.fsmeta).unwrap(), &refs).unwrap();
    let text = std::fs::read_to_string(&d.vmdk).unwrap();
    let desc = erofs::vmdk::parse(&text).unwrap();
    desc.check_files(d.vmdk.parent().unwrap()).unwrap();

    let dir = d.fsmeta.parent().unwrap();
    // A second reader of the chunk indexes: fsck.erofs extracts every file.
    let ex = dir.join("fsck-extract");
    let mut c = Command::new("fsck.erofs");
    for l in &d.layers {
        c.arg(format!("--device={}", l.display()));
    }
    run(c.arg(format!("--extract={}", ex.display())).arg(&d.fsmeta));
    if let Err(diff) = view::compare_contents(expected, &view::snapshot(&ex)) {
        panic!("fsck.erofs --extract of the fsmeta differs from the reference:\n{diff}");
    }
    let _ = std::fs::remove_dir_all(&ex);
    let m = Mount::with_devices(&d.fsmeta, &d.layers, &dir.join("mnt-devices"));
    let actual = view::snapshot(&m.dir);
    if let Err(diff) = view::compare(expected, &actual, opts) {
        panic!("fsmeta with device= differs from the reference:\n{diff}");
    }
    drop(m);

    let raw = dir.join("disk.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(&d.vmdk)
        .arg(&raw));
    let mut parts = vec![d.fsmeta.clone()];
    parts.extend(d.layers.iter().cloned());
    assert_concatenation(&raw, &parts);
    let m = Mount::image(&raw, &dir.join("mnt-raw"));
    let actual = view::snapshot(&m.dir);
    if let Err(diff) = view::compare(expected, &actual, opts) {
        panic!("the VMDK's raw disk differs from the reference:\n{diff}");
    }
    drop(m);
    let _ = std::fs::remove_file(&raw);
}

/// `disk` holds exactly `parts` one after the other.
pub fn assert_concatenation(disk: &Path, parts: &[PathBuf]) {
    use std::io::Read;
    let total: u64 = parts
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(
        std::fs::metadata(disk).unwrap().len(),
        total,
        "{}",
        disk.display()
    );
    let mut d = std::fs::File::open(disk).unwrap();
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for p in parts {
        let mut f = std::fs::File::open(p).unwrap();
        let mut at = 0u64;
        loop {
            let n = f.read(&mut a).unwrap();
            if n == 0 {
                break;
            }
            d.read_exact(&mut b[..n]).unwrap();
            assert!(
                a[..n] == b[..n],
                "{} differs from {} at {at}",
                disk.display(),
                p.display()
            );
            at += n as u64;
        }
    }
}

/// The proof of one layer image of `tar`: fsck.erofs, then the kernel's
/// mount of it compared with GNU tar's extraction into `work/x` (whiteout
/// names turned into what overlayfs reads). Returns the paths compared, or
/// the differences.
pub fn prove_layer(
    tar: &Path,
    img: &Path,
    work: &Path,
    opts: &view::Opts,
) -> Result<usize, String> {
    fsck(img, &[]);
    let x = work.join("x");
    extract(tar, &x);
    let m = Mount::image(img, &work.join("mnt"));
    let mut expected = view::snapshot(&x);
    view::with_whiteouts(&mut expected);
    let actual = view::snapshot(&m.dir);
    view::compare(&expected, &actual, opts).map(|()| actual.nodes.len())
}
