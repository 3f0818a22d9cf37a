//! Real guests for crates/microsandbox/tests/boot.rs: Debian kernels fetched
//! by scripts/guest-kernels.sh, a busybox-static initramfs (cpio newc,
//! written here) with the kernel's own virtio, erofs and overlay modules,
//! an /init that mounts each image's disk read-only under a tmpfs overlay
//! and runs the probe (common/guest_probe.c) and the image's config, and
//! qemu-system-x86_64 under TCG with the kernel log on ttyS0 and the
//! probe's output on ttyS1.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::erofs_common::{ci, run};

#[path = "cpio.rs"]
mod cpio;
pub use cpio::Cpio;

/// The repository's root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `${CARGO_TARGET_DIR:-target}`, as scripts/guest-kernels.sh computes it.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                repo_root().join(p)
            }
        })
        .unwrap_or_else(|| repo_root().join("target"))
}

/// In CI, a missing prerequisite fails the test; elsewhere it is skipped
/// with a note. Returns whether to go on.
fn missing(test: &str, what: &str) -> bool {
    let msg = format!("{test}: needs {what}");
    if ci() {
        panic!("{msg} (CI=true: a missing tool or kernel fails the test)");
    }
    eprintln!("skipped: {msg}");
    false
}

/// A guest kernel as scripts/guest-kernels.sh unpacked it.
pub struct Kernel {
    /// The Debian suite it came from.
    pub suite: String,
    /// `uname -r` of it.
    pub release: String,
    /// The package file's name (`linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb`).
    pub deb: String,
    /// `dpkg -x` of the package.
    pub root: PathBuf,
}

impl Kernel {
    /// The suite's kernel; fetched (by the script, idempotent and cached)
    /// when it is not there yet. None (skip) or a panic (CI) when it cannot be.
    pub fn get(test: &str, suite: &str) -> Option<Kernel> {
        let dir = target_dir().join("guest-kernels").join(suite);
        if !dir.join("ready").is_file() {
            eprintln!("{test}: fetching the {suite} kernel with scripts/guest-kernels.sh");
            let status = Command::new("bash")
                .arg(repo_root().join("scripts/guest-kernels.sh"))
                .arg(suite)
                .env("CARGO_TARGET_DIR", target_dir())
                .status();
            if !status.is_ok_and(|s| s.success()) || !dir.join("ready").is_file() {
                missing(
                    test,
                    &format!(
                        "the {suite} guest kernel in {} (scripts/guest-kernels.sh failed)",
                        dir.display()
                    ),
                );
                return None;
            }
        }
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap().trim().to_string();
        Some(Kernel {
            suite: suite.into(),
            release: read("release"),
            deb: read("deb"),
            root: dir.join("root"),
        })
    }

    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    /// The modules `names` need, in an order insmod takes them (each after
    /// its dependencies, modules.dep, and its soft `pre:` dependencies,
    /// modules.softdep with modules.alias), decompressed (Debian's 6.12
    /// modules are `.ko.xz`): `(name, bytes)`. Built-in ones are left out.
    pub fn modules(&self, names: &[&str]) -> Vec<(String, Vec<u8>)> {
        let dir = self.modules_dir();
        let text = |f: &str| {
            fs::read_to_string(dir.join(f))
                .unwrap_or_else(|e| panic!("{}: {e} (was depmod run?)", dir.join(f).display()))
        };
        let name_of = |path: &str| -> String {
            let base = path.rsplit('/').next().unwrap();
            base.split(".ko").next().unwrap().replace('-', "_")
        };
        let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for line in text("modules.dep").lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let d = rest.split_whitespace().map(name_of).collect();
            deps.insert(name_of(path), (path.to_string(), d));
        }
        let builtin: BTreeSet<String> = text("modules.builtin").lines().map(name_of).collect();
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text("modules.alias").lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() == 3 && w[0] == "alias" {
                aliases
                    .entry(w[1].to_string())
                    .or_default()
                    .push(w[2].to_string());
            }
        }
        let mut soft: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text("modules.softdep").lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() > 2 && w[0] == "softdep" {
                let pre = w[2..]
                    .iter()
                    .skip_while(|x| **x != "pre:")
                    .skip(1)
                    .take_while(|x| !x.ends_with(':'))
                    .map(|x| x.to_string())
                    .collect();
                soft.insert(w[1].replace('-', "_"), pre);
            }
        }
        struct R<'a> {
            deps: &'a BTreeMap<String, (String, Vec<String>)>,
            builtin: &'a BTreeSet<String>,
            aliases: &'a BTreeMap<String, Vec<String>>,
            soft: &'a BTreeMap<String, Vec<String>>,
            order: Vec<String>,
        }
        impl R<'_> {
            /// A name, or what an alias of one names (crc32c ->
            /// crc32c_generic, crc32c_intel).
            fn resolve(&self, n: &str) -> Vec<String> {
                let n = n.replace('-', "_");
                if self.deps.contains_key(&n) || self.builtin.contains(&n) {
                    return vec![n];
                }
                self.aliases.get(&n).cloned().unwrap_or_default()
            }
            fn add(&mut self, n: &str) {
                if self.builtin.contains(n) || self.order.iter().any(|o| o == n) {
                    return;
                }
                let (_, hard) = self
                    .deps
                    .get(n)
                    .unwrap_or_else(|| panic!("module {n}: not in modules.dep"))
                    .clone();
                for s in self.soft.get(n).cloned().unwrap_or_default() {
                    for m in self.resolve(&s) {
                        self.add(&m);
                    }
                }
                for d in hard {
                    self.add(&d);
                }
                self.order.push(n.to_string());
            }
        }
        let mut r = R {
            deps: &deps,
            builtin: &builtin,
            aliases: &aliases,
            soft: &soft,
            order: Vec::new(),
        };
        for n in names {
            let resolved = r.resolve(n);
            assert!(!resolved.is_empty(), "module {n}: not in {}", dir.display());
            for m in resolved {
                r.add(&m);
            }
        }
        r.order
            .iter()
            .map(|n| {
                let path = dir.join(&deps[n].0);
                let bytes = if path.extension().is_some_and(|e| e == "ko") {
                    fs::read(&path).unwrap()
                } else {
                    let tool = match path.extension().and_then(|e| e.to_str()) {
                        Some("xz") => "xz",
                        Some("zst") => "zstd",
                        Some("gz") => "gzip",
                        other => panic!("{}: a module compressed as {other:?}", path.display()),
                    };
                    let out = Command::new(tool).arg("-dc").arg(&path).output().unwrap();
                    assert!(out.status.success(), "{tool} -dc {}", path.display());
                    out.stdout
                };
                assert!(bytes.starts_with(b"\x7fELF"), "{}", path.display());
                (n.clone(), bytes)
            })
            .collect()
    }
}

/// The tools a boot needs (beyond the image makers).
pub const TOOLS: &[&str] = &["qemu-system-x86_64", "busybox", "gcc", "xz"];

/// A static busybox (Debian's busybox-static), or a note why not.
pub fn busybox(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("busybox"))
            .find(|b| b.is_file())
    })?;
    let bytes = fs::read(&p).unwrap();
    // A dynamic executable names its loader near its start (.interp).
    let head = &bytes[..bytes.len().min(8192)];
    if head.windows(8).any(|w| w == b"/lib64/l") {
        missing(
            test,
            &format!(
                "a static busybox ({} is dynamic: install busybox-static)",
                p.display()
            ),
        );
        return None;
    }
    Some(p)
}

/// The probe, compiled once per source text (gcc -static), kept under target/.
pub fn probe() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let src = include_str!("guest_probe.c");
        use sha2::Digest;
        let h = sha2::Sha256::digest(src.as_bytes());
        let tag: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
        let dir = target_dir().join("boot-tests");
        fs::create_dir_all(&dir).unwrap();
        let bin = dir.join(format!("probe-{tag}"));
        // Probes of earlier sources go.
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("probe-") && !name.starts_with(&format!("probe-{tag}")) {
                let _ = fs::remove_file(e.path());
            }
        }
        if !bin.is_file() {
            let c = dir.join(format!("probe-{tag}.c"));
            fs::write(&c, src).unwrap();
            let tmp = dir.join(format!("probe-{tag}.{}", std::process::id()));
            run(Command::new("gcc")
                .args(["-static", "-O2", "-o"])
                .arg(&tmp)
                .arg(&c));
            fs::rename(&tmp, &bin).unwrap();
        }
        bin
    })
    .clone()
}

/// How one image's disk reaches the guest.
pub enum Attach {
    /// The fsmeta and each layer image as raw virtio disks, mounted with
    /// `-o device=` per layer.
    Devices {
        fsmeta: PathBuf,
        layers: Vec<PathBuf>,
    },
    /// The VMDK as one virtio disk, mounted with no options.
    Vmdk(PathBuf),
}

/// An image the guest mounts, probes and runs.
pub struct GuestImage {
    pub name: String,
    pub attach: Attach,
    /// The agent's spec of its config (`uid=`, `gid=`, `cwd=`, `arg=`,
    /// `env=` lines); None: mount and probe only.
    pub spec: Option<String>,
}

/// A drive on qemu's command line.
struct Drive {
    file: PathBuf,
    format: &'static str,
    size: u64,
}

/// What a guest printed.
pub struct Boot {
    /// ttyS0: the kernel log and the init's own messages.
    pub console: String,
    /// ttyS1: the probe's sections.
    pub out: String,
    /// The command line qemu ran.
    pub command: String,
    pub elapsed: Duration,
    pub exit: Option<i32>,
    /// Each image's sections: name -> section -> text.
    pub sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl Boot {
    /// Panics with `msg` and everything the guest printed.
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n--- qemu: {}\n--- exit {:?} after {:.1} s\n--- ttyS0 (console, kernel log):\n{}\n--- ttyS1 (probe):\n{}\n--- end of the guest's log",
            self.command,
            self.exit,
            self.elapsed.as_secs_f64(),
            self.console,
            self.out
        )
    }

    /// A section of an image (`mount`, `walk`, `run`, `exit`), or a
    /// failure showing the whole log.
    pub fn section(&self, image: &str, name: &str) -> &str {
        match self.sections.get(image).and_then(|s| s.get(name)) {
            Some(t) => t,
            None => self.fail(&format!("the guest printed no `{name}` for {image}")),
        }
    }
}

/// The kernel's command line: the console on ttyS0, every message up to
/// KERN_INFO (erofs's errors and notices among them), no reboot on panic.
pub const CMDLINE: &str = "console=ttyS0 loglevel=7 panic=-1 rdinit=/init";

/// Boots `kernel` with `images` attached (in order: each image's drives,
/// one after the other) and waits at most `timeout` for it to power off.
pub fn boot(kernel: &Kernel, images: &[GuestImage], work: &Path, timeout: Duration) -> Boot {
    let bb = busybox("boot").expect("a static busybox");
    let mut drives: Vec<Drive> = Vec::new();
    let mut init = String::from(
        r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /lower /ovl /mnt
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do
  insmod /lib/modules/$m.ko || echo "init: insmod $m failed" >/dev/kmsg
done
stty -F /dev/ttyS1 115200 raw -echo 2>/dev/null
exec >/dev/ttyS1 2>&1
echo "=== guest"
uname -r
"#,
    );
    let letter = |k: usize| -> String {
        let mut s = String::new();
        let mut k = k;
        loop {
            s.insert(0, (b'a' + (k % 26) as u8) as char);
            if k < 26 {
                break;
            }
            k = k / 26 - 1;
        }
        format!("/dev/vd{s}")
    };
    let mut body = String::new();
    let mut specs: Vec<(String, String)> = Vec::new();
    for img in images {
        let (primary, opts) = match &img.attach {
            Attach::Devices { fsmeta, layers } => {
                let primary = letter(drives.len());
                drives.push(Drive {
                    file: fsmeta.clone(),
                    format: "raw",
                    size: fs::metadata(fsmeta).unwrap().len(),
                });
                let mut opts = String::from("ro");
                for l in layers {
                    write!(opts, ",device={}", letter(drives.len())).unwrap();
                    drives.push(Drive {
                        file: l.clone(),
                        format: "raw",
                        size: fs::metadata(l).unwrap().len(),
                    });
                }
                (primary, opts)
            }
            Attach::Vmdk(vmdk) => {
                let primary = letter(drives.len());
                let text = fs::read_to_string(vmdk).unwrap();
                let size = erofs::vmdk::parse(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", vmdk.display()))
                    .size();
                drives.push(Drive {
                    file: vmdk.clone(),
                    format: "vmdk",
                    size,
                });
                (primary, String::from("ro"))
            }
        };
        let n = &img.name;
        write!(
            body,
            r#"
echo "=== {n} mount"
mkdir -p /lower/{n} /ovl/{n} /mnt/{n}
if mount -t erofs -o {opts} {primary} /lower/{n}; then
  echo "mounted: mount -t erofs -o {opts} {primary}"
  mount -t tmpfs tmpfs /ovl/{n} && mkdir /ovl/{n}/upper /ovl/{n}/work &&
  mount -t overlay overlay -o lowerdir=/lower/{n},upperdir=/ovl/{n}/upper,workdir=/ovl/{n}/work /mnt/{n} &&
  echo "overlay: tmpfs upper over it"
  echo "=== {n} walk"
  /bin/probe walk /mnt/{n}
"#
        )
        .unwrap();
        if let Some(spec) = &img.spec {
            specs.push((n.clone(), spec.clone()));
            write!(
                body,
                r#"  echo "=== {n} run"
  /bin/probe agent /spec/{n} /mnt/{n}
  echo "=== {n} exit"
  echo $?
"#
            )
            .unwrap();
        }
        write!(
            body,
            r#"else
  echo "failed: mount -t erofs -o {opts} {primary}: status $?"
  dmesg | tail -n 15
fi
"#
        )
        .unwrap();
    }
    init.push_str("echo \"=== disks\"\nfor b in /sys/block/vd*; do echo \"/dev/${b##*/} $(($(cat $b/size) * 512))\"; done\n");
    init.push_str(&body);
    init.push_str("echo \"=== end\"\nsync\npoweroff -f\n");

    let mut c = Cpio::default();
    for d in ["bin", "lib", "lib/modules", "spec", "dev", "proc", "sys"] {
        c.dir(d);
    }
    c.file("bin/busybox", 0o755, &fs::read(&bb).unwrap());
    c.file("bin/probe", 0o755, &fs::read(probe()).unwrap());
    c.file("init", 0o755, init.as_bytes());
    let mods = kernel.modules(&["virtio_pci", "virtio_blk", "erofs", "overlay"]);
    let mut order = String::new();
    for (name, bytes) in &mods {
        c.file(&format!("lib/modules/{name}.ko"), 0o644, bytes);
        order.push_str(name);
        order.push('\n');
    }
    c.file("modules.order", 0o644, order.as_bytes());
    for (n, s) in &specs {
        c.file(&format!("spec/{n}"), 0o644, s.as_bytes());
    }
    fs::create_dir_all(work).unwrap();
    let initrd = work.join("initrd.cpio");
    fs::write(&initrd, c.finish()).unwrap();
    let console = work.join("console.log");
    let out = work.join("out.log");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "768",
        "-smp",
        "1",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
    ])
    .arg("-kernel")
    .arg(kernel.vmlinuz())
    .arg("-initrd")
    .arg(&initrd)
    .args(["-append", CMDLINE])
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .arg("-serial")
    .arg(format!("file:{}", out.display()));
    for d in &drives {
        let f = d.file.display().to_string();
        assert!(!f.contains(','), "{f}: a comma in a -drive path");
        cmd.arg("-drive").arg(format!(
            "file={f},format={},if=virtio,readonly=on",
            d.format
        ));
    }
    let command = format!("{cmd:?}");
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = t0.elapsed();
    let mut qemu_err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut qemu_err);
    }
    let text =
        |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).replace('\r', "");
    let mut b = Boot {
        console: text(&console),
        out: text(&out),
        command,
        elapsed,
        exit,
        sections: BTreeMap::new(),
    };
    if !qemu_err.is_empty() {
        b.console.push_str("\n--- qemu's stderr:\n");
        b.console.push_str(&qemu_err);
    }
    let mut cur: Option<(String, String)> = None;
    for line in b.out.lines() {
        if let Some(head) = line.strip_prefix("=== ") {
            let mut w = head.splitn(2, ' ');
            let (a, s) = (w.next().unwrap(), w.next());
            cur = Some(match s {
                Some(s) => (a.to_string(), s.to_string()),
                None => (String::new(), a.to_string()),
            });
            let (i, s) = cur.clone().unwrap();
            b.sections.entry(i).or_default().entry(s).or_default();
            continue;
        }
        if let Some((i, s)) = &cur {
            let t = b.sections.get_mut(i).unwrap().get_mut(s).unwrap();
            t.push_str(line);
            t.push('\n');
        }
    }
    if exit.is_none() {
        b.fail(&format!("the guest did not power off within {timeout:?}"));
    }
    if let Some(l) = b.console.lines().find(|l| l.contains("init: insmod")) {
        b.fail(&format!("a module did not load: {l}"));
    }
    if !b.sections.get("").is_some_and(|s| s.contains_key("end")) {
        b.fail("the guest's init did not finish");
    }
    // The disks the guest sees are the drives, in order, with their sizes.
    let disks: String = drives
        .iter()
        .enumerate()
        .map(|(k, d)| format!("{} {}\n", letter(k), d.size))
        .collect();
    if b.section("", "disks") != disks {
        b.fail(&format!("the guest's disks are not the drives:\n{disks}"));
    }
    eprintln!(
        "booted {} ({}) with {} disks in {:.1} s",
        kernel.release,
        kernel.deb,
        drives.len(),
        elapsed.as_secs_f64()
    );
    b
}

/// The agent's spec of an image's config, as the library reports it.
pub fn spec(config: &microsandbox::ImageConfigDetail) -> String {
    let mut s = String::new();
    let user = config.user.clone().unwrap_or_default();
    if !user.is_empty() {
        let (u, g) = user.split_once(':').unwrap_or((&user, &user));
        let u: u32 = u
            .parse()
            .expect("a numeric uid in the test images' configs");
        let g: u32 = g
            .parse()
            .expect("a numeric gid in the test images' configs");
        writeln!(s, "uid={u}\ngid={g}").unwrap();
    }
    writeln!(
        s,
        "cwd={}",
        config.working_dir.clone().unwrap_or_else(|| "/".into())
    )
    .unwrap();
    for a in config
        .entrypoint
        .iter()
        .flatten()
        .chain(config.cmd.iter().flatten())
    {
        assert!(!a.contains('\n') && a.len() < 3990, "{a}");
        writeln!(s, "arg={a}").unwrap();
    }
    for e in &config.env {
        assert!(!e.contains('\n') && e.len() < 3990, "{e}");
        writeln!(s, "env={e}").unwrap();
    }
    s
}

/// Lines only in `a` and only in `b` (for a failure message).
pub fn diff(a: &str, b: &str) -> String {
    let sa: BTreeSet<&str> = a.lines().collect();
    let sb: BTreeSet<&str> = b.lines().collect();
    let mut out = String::new();
    for l in sa.difference(&sb) {
        writeln!(out, "- {l}").unwrap();
    }
    for l in sb.difference(&sa) {
        writeln!(out, "+ {l}").unwrap();
    }
    out
}
