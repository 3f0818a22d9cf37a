//! Real guest kernels boot every disk the cache makes: qemu-system-x86_64
//! under TCG, a busybox-static initramfs with the kernel's own virtio, erofs
//! and overlay modules, the disk mounted read-only under a tmpfs overlay
//! and the image's config run as an agent runs it (env, workingDir,
//! entrypoint + cmd, uid:gid). Debian bookworm's 6.1 kernel mounts the
//! fsmeta with one raw disk per layer (`-o device=`); bookworm-backports'
//! 6.12 mounts the VMDK alone, with no options, as libkrun is given it.
//! What the guest sees is compared with `umoci unpack` of the same image,
//! through the same probe (tests/common/guest_probe.c) on the host.
//!
//! Kernels: scripts/guest-kernels.sh (run by scripts/setup.sh, and by these
//! tests when a kernel is missing), in `${CARGO_TARGET_DIR:-target}/guest-kernels/`.

mod common;
#[path = "../../erofs/tests/common/mod.rs"]
mod erofs_common;
#[path = "common/guest.rs"]
mod guest;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use erofs_common::tarw::{tar, Ent};
use erofs_common::{need, run};
use guest::{Attach, Boot, GuestImage, Kernel};
use microsandbox::{ImageDisk, LocalBackend, MaterializeOptions};
use sha2::{Digest, Sha256};

/// Tools beyond the guest's: the image makers and the reference unpacker.
const TOOLS: &[&str] = &[
    "qemu-system-x86_64",
    "busybox",
    "gcc",
    "xz",
    "umoci",
    "skopeo",
    "tar",
    "debootstrap",
];

/// A boot under TCG takes seconds; this bounds a hung one.
const TIMEOUT: Duration = Duration::from_secs(300);

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OCI layout at `dir` with one image tagged `tag` of these
/// uncompressed layer tars and this runtime `config`.
fn layout(dir: &Path, tars: &[PathBuf], tag: &str, config: serde_json::Value) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let h = hex(&Sha256::digest(bytes));
        fs::write(blobs.join(&h), bytes).unwrap();
        (format!("sha256:{h}"), bytes.len())
    };
    let mut layers = Vec::new();
    for t in tars {
        let mut h = Sha256::new();
        std::io::copy(&mut fs::File::open(t).unwrap(), &mut h).unwrap();
        let d = hex(&h.finalize());
        let dst = blobs.join(&d);
        if fs::hard_link(t, &dst).is_err() {
            fs::copy(t, &dst).unwrap();
        }
        layers.push((format!("sha256:{d}"), fs::metadata(t).unwrap().len()));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.0).collect::<Vec<_>>()},
    });
    let (cd, cs) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s,
        })).collect::<Vec<_>>(),
    });
    let (md, ms) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

/// The size of the sparse file: over 4 GiB, not a multiple of a block.
const SPARSE: u64 = (4 << 30) + (8 << 20) + 12_345;

/// The crafted image: three layers with whiteouts, an opaque directory,
/// hard links (within and across directories), symlinks (relative,
/// absolute, dangling, to a directory), user.* and trusted.* xattrs,
/// devices, a fifo, odd modes and owners, nanosecond times, and (layer 2,
/// GNU tar's sparse format) a sparse file over 4 GiB. The probe itself is
/// /usr/bin/probe, the entrypoint.
fn crafted(dir: &Path) -> PathBuf {
    let probe = fs::read(guest::probe()).unwrap();
    let mut rng = erofs_common::Rng(7);
    let l0 = tar(&[
        Ent::dir("bin"),
        Ent::dir("etc"),
        Ent::dir("usr"),
        Ent::dir("usr/bin"),
        Ent::file("usr/bin/probe", &probe).mode(0o755),
        Ent::file("etc/hostname", b"one\n"),
        Ent::file("a", b"whited out by layer 1"),
        Ent::dir("d"),
        Ent::file("d/x", b"hidden by the opaque d of layer 1"),
        Ent::dir("d/sub"),
        Ent::file("d/sub/y", b"y"),
        Ent::dir("keep"),
        Ent::file("keep/f1", b"replaced by a symlink in layer 1"),
        Ent::dir("data"),
        Ent::file("data/hard1", rng.bytes(10_000))
            .owner(7, 8)
            .mode(0o600)
            .xattr("user.linked", "three names"),
        Ent::hardlink("data/hard2", "data/hard1"),
        Ent::dir("data/other"),
        Ent::hardlink("data/other/hard3", "data/hard1"),
        Ent::dir("links"),
        Ent::symlink("links/rel", "../etc/hostname"),
        Ent::symlink("links/abs", "/etc/hostname"),
        Ent::symlink("links/dangling", "/nowhere"),
        Ent::symlink("links/dir", "../d"),
        Ent::dir("x"),
        Ent::file("x/attrs", b"with xattrs")
            .xattr("user.color", "blue")
            .xattr("user.binary", [0u8, 1, 2, 0xff])
            .xattr("trusted.note", "kept"),
        Ent::dir("devs"),
        Ent::chr("devs/null", 1, 3).mode(0o666),
        Ent::blk("devs/loop", 7, 0),
        Ent::fifo("devs/fifo"),
        Ent::file("owned", b"owned").owner(1234, 5678).mode(0o640),
        Ent::file("setuid", b"#!/bin/false\n").mode(0o4755),
        Ent::dir("sticky").mode(0o1777),
        Ent::dir("home"),
        Ent::dir("home/app").owner(1000, 1000).mode(0o750),
        Ent::file("nsec", b"t")
            .mtime(1_650_000_000)
            .nsec(123_456_789),
        Ent::dir("opt"),
        Ent::dir("opt/tree"),
        Ent::file("opt/tree/leaf", b"whited out with opt by layer 2"),
        Ent::file("empty", b""),
        Ent::file("tail", rng.bytes(4097)),
    ]);
    let l1 = tar(&[
        Ent::file(".wh.a", b""),
        Ent::dir("d"),
        Ent::file("d/.wh..wh..opq", b""),
        Ent::file("d/z", b"z"),
        Ent::dir("keep"),
        Ent::file("keep/f2", b"f2"),
        Ent::symlink("keep/f1", "f2"),
        Ent::dir("etc"),
        Ent::file("etc/hostname", b"two\n"),
        Ent::dir("x").mode(0o700).xattr("user.dir", "layer 1"),
        Ent::dir("data2"),
        Ent::file("data2/p", b"a pair").xattr("user.p", "q"),
        Ent::hardlink("data2/q", "data2/p"),
        Ent::dir("links"),
        Ent::file("links/.wh.dangling", b""),
    ]);
    let t0 = dir.join("l0.tar");
    let t1 = dir.join("l1.tar");
    fs::write(&t0, l0).unwrap();
    fs::write(&t1, l1).unwrap();
    // Layer 2 as GNU tar writes a sparse file (holes stay holes), with a
    // whiteout of a whole directory.
    let src = dir.join("l2");
    fs::create_dir_all(src.join("big")).unwrap();
    let f = fs::File::create(src.join("big/sparse")).unwrap();
    f.set_len(SPARSE).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"across 4 GiB", (4 << 30) - 6).unwrap();
    f.write_all_at(&rng.bytes(3 << 20), (4 << 30) + 4096)
        .unwrap();
    f.write_all_at(b"the end", SPARSE - 7).unwrap();
    drop(f);
    fs::write(src.join("big/small"), b"beside the sparse one").unwrap();
    fs::write(src.join(".wh.opt"), b"").unwrap();
    let t2 = dir.join("l2.tar");
    run(Command::new("tar")
        .args([
            "--format=posix",
            "--sparse",
            "--sparse-version=1.0",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--mtime=@1700000000",
            "-cf",
        ])
        .arg(&t2)
        .arg("-C")
        .arg(&src)
        .arg("."));
    fs::remove_dir_all(&src).unwrap();
    let out = dir.join("crafted");
    layout(
        &out,
        &[t0, t1, t2],
        "crafted",
        serde_json::json!({
            "Env": ["PATH=/usr/bin:/bin", "VAR=crafted value", "EMPTY="],
            "WorkingDir": "/home/app",
            "Entrypoint": ["probe", "whoami"],
            "Cmd": ["first", "second arg"],
            "User": "1000:1000",
        }),
    );
    out
}

/// The command the Debian image's config runs, through its own /bin/sh.
const DEBIAN_CMD: &str =
    "cat /etc/debian_version; id -u; id -g; id -un; pwd; echo \"$VAR\"; readlink /bin/sh";

/// A `debootstrap --variant=minbase` root as one gzip layer (skopeo's
/// copy, as a registry serves it), with a config whose `/bin/sh -c` runs
/// [`DEBIAN_CMD`] as nobody.
fn debian(dir: &Path) -> PathBuf {
    let plain = dir.join("debian-plain");
    layout(
        &plain,
        &[erofs_common::debian::debian_tar()],
        "t",
        serde_json::json!({
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "VAR=hello from the config",
            ],
            "WorkingDir": "/usr/share",
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": [DEBIAN_CMD],
            "User": "65534:65534",
        }),
    );
    let gz = dir.join("debian");
    run(Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--dest-compress-format",
            "gzip",
            "--dest-compress",
        ])
        .arg(format!("oci:{}:t", plain.display()))
        .arg(format!("oci:{}:debian", gz.display())));
    fs::remove_dir_all(&plain).unwrap();
    gz
}

/// One image in the cache, with what the guest must print for it.
struct Image {
    name: &'static str,
    disk: ImageDisk,
    /// The agent's spec of the config, from the library's inspect.
    spec: String,
    /// The probe's walk of `umoci unpack` on the host.
    walk: String,
    /// What running the config must print, from the image's own files and
    /// the config written above.
    run: String,
}

/// Both images, made once per test binary, loaded into one cache with the
/// Rust API and materialized. Kept under target/boot-tests/run-<pid>/
/// (removed with the next run's first test: statics are never dropped).
struct Prepared {
    crafted: Image,
    debian: Image,
}

fn work_root() -> PathBuf {
    guest::target_dir().join("boot-tests")
}

/// This process's work directory.
fn run_dir() -> PathBuf {
    work_root().join(format!("run-{}", std::process::id()))
}

fn prepared() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    P.get_or_init(|| {
        let root = work_root();
        fs::create_dir_all(&root).unwrap();
        // Earlier runs' work, of processes no longer there.
        for e in fs::read_dir(&root).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("run-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = run_dir();
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let t0 = std::time::Instant::now();
        let stage = |what: &str| eprintln!("[{:6.1} s] {what}", t0.elapsed().as_secs_f64());
        // The reference of each image: umoci's unpack, walked by the probe
        // and read for what its config's run must print (the unpack goes
        // after: the crafted one holds 5 GiB of written-out zeros).
        let reference = |name: &str, layout: &Path, run: &dyn Fn(&Path) -> String| {
            let bundle = dir.join(format!("{name}-bundle"));
            erofs_common::run(
                Command::new("umoci")
                    .args(["unpack", "--image"])
                    .arg(format!("{}:{name}", layout.display()))
                    .arg(&bundle),
            );
            let rootfs = bundle.join("rootfs");
            let out = (run_probe_walk(&rootfs), run(&rootfs));
            fs::remove_dir_all(&bundle).unwrap();
            stage(&format!("{name}: umoci unpack walked"));
            out
        };
        let ((crafted_layout, crafted_ref), (debian_layout, debian_ref)) =
            std::thread::scope(|s| {
                let c = s.spawn(|| {
                    let l = crafted(&dir);
                    stage("crafted: layout made");
                    let r = reference("crafted", &l, &|_| {
                        [
                            "uid=1000 euid=1000 gid=1000 egid=1000",
                            "groups=",
                            "cwd=/home/app",
                            "argv[0]=probe",
                            "argv[1]=whoami",
                            "argv[2]=first",
                            "argv[3]=second arg",
                            "env=EMPTY=",
                            "env=PATH=/usr/bin:/bin",
                            "env=VAR=crafted value",
                            "",
                        ]
                        .join("\n")
                    });
                    (l, r)
                });
                let d = s.spawn(|| {
                    let l = debian(&dir);
                    stage("debian: layout made");
                    let r = reference("debian", &l, &|rootfs| {
                        let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
                        let name = passwd
                            .lines()
                            .find(|l| l.split(':').nth(2) == Some("65534"))
                            .and_then(|l| l.split(':').next())
                            .expect("uid 65534 in the image's /etc/passwd")
                            .to_string();
                        format!(
                            "{}65534\n65534\n{name}\n/usr/share\nhello from the config\n{}\n",
                            fs::read_to_string(rootfs.join("etc/debian_version")).unwrap(),
                            fs::read_link(rootfs.join("bin/sh")).unwrap().display()
                        )
                    });
                    (l, r)
                });
                (c.join().unwrap(), d.join().unwrap())
            });
        let backend = LocalBackend::builder()
            .home(dir.join("home"))
            .build_blocking()
            .unwrap();
        let image = |name: &'static str, layout: &Path, (walk, run): (String, String)| {
            // The layer images are made in the load's own pass over each
            // blob; materialize then finds them and returns the disk.
            backend
                .load_images(
                    layout,
                    &microsandbox::LoadOptions {
                        materialize: true,
                        ..Default::default()
                    },
                )
                .unwrap();
            let disk = backend
                .materialize(name, &MaterializeOptions::default())
                .unwrap();
            let config = backend
                .inspect_image(name)
                .unwrap()
                .config
                .expect("a config");
            stage(&format!("{name}: loaded and materialized"));
            Image {
                name,
                disk,
                spec: guest::spec(&config),
                walk,
                run,
            }
        };
        let crafted = image("crafted", &crafted_layout, crafted_ref);
        let debian = image("debian", &debian_layout, debian_ref);
        Prepared { crafted, debian }
    })
}

/// The boot tests of this file: the last one to pass removes the work
/// directory (a failed one leaves it, logs and disks, to look at).
const BOOT_TESTS: usize = 2;

fn passed() {
    static DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if DONE.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == BOOT_TESTS {
        let _ = fs::remove_dir_all(run_dir());
    }
}

fn run_probe_walk(rootfs: &Path) -> String {
    run(Command::new(guest::probe()).arg("walk").arg(rootfs))
}

/// What the guest must have printed for `img`: mounted, the walk of its
/// overlay equal to the host's walk of umoci's unpack, its config run
/// with what the image and config say, exit status 0.
fn check(b: &Boot, img: &Image, name: &str) {
    let mount = b.section(name, "mount");
    if !mount.contains("mounted:") || !mount.contains("overlay:") {
        b.fail(&format!(
            "{name}: the guest did not mount the disk:\n{mount}"
        ));
    }
    let walk = b.section(name, "walk");
    if walk != img.walk {
        b.fail(&format!(
            "{name}: the guest's walk differs from umoci's unpack (- host, + guest):\n{}",
            guest::diff(&img.walk, walk)
        ));
    }
    let out = b.section(name, "run");
    if out != img.run {
        b.fail(&format!(
            "{name}: running the config printed\n{out}\nexpected\n{}",
            img.run
        ));
    }
    if b.section(name, "exit").trim() != "0" {
        b.fail(&format!("{name}: the config's process failed"));
    }
}

#[test]
fn linux_6_1_mounts_the_fsmeta_with_one_raw_disk_per_layer() {
    let test = "linux_6_1_mounts_the_fsmeta_with_one_raw_disk_per_layer";
    if !need(test, TOOLS) || guest::busybox(test).is_none() {
        return;
    }
    let Some(kernel) = Kernel::get(test, "bookworm") else {
        return;
    };
    assert!(kernel.release.starts_with("6.1."), "{}", kernel.release);
    let p = prepared();
    let devices = |img: &Image| GuestImage {
        name: img.name.into(),
        attach: Attach::Devices {
            fsmeta: img.disk.fsmeta_path.clone(),
            layers: img.disk.layers.iter().map(|l| l.path.clone()).collect(),
        },
        spec: Some(img.spec.clone()),
    };
    // A copy of the crafted fsmeta with its superblock's magic broken: the
    // guest cannot mount it, and its kernel log says why.
    let work = run_dir().join("boot-6.1");
    fs::create_dir_all(&work).unwrap();
    let broken = work.join("broken-fsmeta.erofs");
    let mut bytes = fs::read(&p.crafted.disk.fsmeta_path).unwrap();
    bytes[1024] ^= 0xff;
    fs::write(&broken, bytes).unwrap();
    let images = [
        devices(&p.crafted),
        devices(&p.debian),
        // The VMDK alone: one device holding the fsmeta and every layer,
        // which needs flat block addressing (Linux 6.4+).
        GuestImage {
            name: "vmdk".into(),
            attach: Attach::Vmdk(p.crafted.disk.vmdk_path.clone()),
            spec: None,
        },
        GuestImage {
            name: "broken".into(),
            attach: Attach::Devices {
                fsmeta: broken,
                layers: p
                    .crafted
                    .disk
                    .layers
                    .iter()
                    .map(|l| l.path.clone())
                    .collect(),
            },
            spec: None,
        },
    ];
    let b = guest::boot(&kernel, &images, &work, TIMEOUT);
    check(&b, &p.crafted, "crafted");
    check(&b, &p.debian, "debian");
    // 6.1 has no flat addressing: with no device= options it looks for
    // each layer by its device table tag (a diff_id, no path) and fails.
    let vmdk = b.section("vmdk", "mount");
    if vmdk.contains("mounted:") || !vmdk.contains("failed: mount -t erofs -o ro /dev/vdg") {
        b.fail(&format!(
            "the VMDK alone on 6.1: expected a failed mount, got\n{vmdk}"
        ));
    }
    let broken = b.section("broken", "mount");
    if broken.contains("mounted:") || !broken.contains("failed:") {
        b.fail(&format!("a broken superblock mounted:\n{broken}"));
    }
    // The reason is in the kernel log, on the console (loglevel=7).
    let dev = broken
        .lines()
        .find_map(|l| l.strip_prefix("failed: mount -t erofs -o "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|d| d.trim_end_matches(':').strip_prefix("/dev/"))
        .unwrap_or_else(|| b.fail("no device in the failed mount"))
        .to_string();
    if !b
        .console
        .lines()
        .any(|l| l.contains(&format!("erofs: (device {dev})")) && l.contains("superblock"))
    {
        b.fail(&format!(
            "the kernel log does not say why {dev} did not mount"
        ));
    }
    passed();
}

#[test]
fn linux_6_12_mounts_the_vmdk_alone_with_no_options() {
    let test = "linux_6_12_mounts_the_vmdk_alone_with_no_options";
    if !need(test, TOOLS) || guest::busybox(test).is_none() {
        return;
    }
    let Some(kernel) = Kernel::get(test, "bookworm-backports") else {
        return;
    };
    assert!(kernel.release.starts_with("6.12."), "{}", kernel.release);
    let p = prepared();
    // One guest per image, its VMDK the only disk.
    for img in [&p.crafted, &p.debian] {
        let images = [GuestImage {
            name: img.name.into(),
            attach: Attach::Vmdk(img.disk.vmdk_path.clone()),
            spec: Some(img.spec.clone()),
        }];
        let work = run_dir().join(format!("boot-6.12-{}", img.name));
        let b = guest::boot(&kernel, &images, &work, TIMEOUT);
        let mount = b.section(img.name, "mount");
        if !mount.contains("mounted: mount -t erofs -o ro /dev/vda\n") {
            b.fail(&format!(
                "{}: not mounted with no options:\n{mount}",
                img.name
            ));
        }
        check(&b, img, img.name);
    }
    passed();
}
