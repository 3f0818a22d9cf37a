//! A real registry for tests: Debian's `docker-registry` (distribution)
//! on a free loopback port, filled by skopeo.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{fixtures, skopeo};

pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a registry on a free loopback port; fails (never skips) without
/// the `docker-registry` package.
pub fn registry() -> Registry {
    start_registry(tempfile::tempdir().unwrap(), "")
}

/// Starts `docker-registry serve` on a free loopback port with `extra`
/// appended to its config; its data lives in `dir`.
pub fn start_registry(dir: tempfile::TempDir, extra: &str) -> Registry {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{extra}",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry is required (apt-get install docker-registry)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry {
        child,
        addr,
        _dir: dir,
    }
}

pub fn push(reg: &Registry, from: &str, to: &str, all: bool) {
    let src = format!("oci:{}", fixtures().join(from).display());
    let dst = format!("docker://{}/{to}", reg.addr);
    let mut args = vec!["copy", "--insecure-policy", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    args.push(&src);
    args.push(&dst);
    skopeo(&args);
}
