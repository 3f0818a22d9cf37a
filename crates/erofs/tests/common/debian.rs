//! Real trees as tars: paths of this machine, and a Debian minbase root
//! made by `debootstrap` once and kept between runs (shared by the erofs
//! crate's corpus tests and the cache's VM disk tests).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{cache_dir, run};

/// `tar` of paths under `base`, the way layers are made.
pub fn tar_of(base: &Path, paths: &[&str], out: &Path) {
    run(Command::new("tar")
        .args([
            "--format=posix",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-cf",
        ])
        .arg(out)
        .arg("-C")
        .arg(base)
        .args(paths));
}

/// The host's Debian mirror and suite, from apt's sources.
fn mirror() -> (String, String) {
    if let Ok(m) = std::env::var("EROFS_TEST_DEBIAN_MIRROR") {
        return (
            m,
            std::env::var("EROFS_TEST_DEBIAN_SUITE").unwrap_or_else(|_| "bookworm".into()),
        );
    }
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let suite = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .unwrap_or("bookworm")
        .trim_matches('"')
        .to_string();
    let mut texts = Vec::new();
    for d in ["/etc/apt/sources.list.d", "/etc/apt"] {
        if let Ok(rd) = std::fs::read_dir(d) {
            let mut ps: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
            ps.sort();
            for p in ps {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if name.ends_with(".sources") || name.ends_with(".list") {
                    texts.push(std::fs::read_to_string(&p).unwrap_or_default());
                }
            }
        }
    }
    for t in &texts {
        for line in t.lines() {
            let line = line.trim();
            if let Some(u) = line.strip_prefix("URIs:") {
                let u = u.split_whitespace().next().unwrap_or("");
                if !u.contains("security") && u.starts_with("http") {
                    return (u.to_string(), suite);
                }
            }
            if let Some(rest) = line.strip_prefix("deb ") {
                let mut it = rest.split_whitespace().filter(|w| !w.starts_with('['));
                if let Some(u) = it.next() {
                    if !u.contains("security") && u.starts_with("http") {
                        return (u.to_string(), suite);
                    }
                }
            }
        }
    }
    ("http://deb.debian.org/debian".into(), suite)
}

/// A Debian minbase root as a tar, made once and kept between runs.
pub fn debian_tar() -> PathBuf {
    let cache = cache_dir("debian");
    let tarp = cache.join("minbase.tar");
    let lock = std::fs::File::create(cache.join("lock")).unwrap();
    use std::os::fd::AsRawFd;
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if tarp.is_file() {
        return tarp;
    }
    let root = cache.join("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    let (url, suite) = mirror();
    eprintln!(
        "debootstrap --variant=minbase {suite} from {url} (once; kept in {})",
        cache.display()
    );
    run(Command::new("debootstrap")
        .args(["--variant=minbase", &suite])
        .arg(&root)
        .arg(&url));
    let tmp = cache.join("minbase.tar.partial");
    tar_of(&root, &["."], &tmp);
    std::fs::rename(&tmp, &tarp).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    tarp
}
