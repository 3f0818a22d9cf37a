//! A real registry for tests: Debian's `docker-registry` (distribution)
//! on a free loopback port, filled by skopeo.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{fixtures, read_request_head, skopeo};

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

/// What a faulty proxy does to the first answer for one blob.
#[derive(Clone, Copy)]
pub enum Fault {
    /// Sends half the body, then closes the connection.
    Cut,
    /// Flips one byte of the body, every time.
    Corrupt,
    /// Sends half the body, then closes the connection, every time.
    CutAlways,
    /// Passes everything through.
    None,
    /// Holds the answer back for a while, every time.
    Slow(Duration),
}

/// What a proxy saw: the request line and `Range` header of every request.
pub type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A one-request-per-connection HTTP proxy on loopback in front of `upstream`
/// that damages the answers for `target` (a path fragment), counts them,
/// and logs every request.
pub fn faulty_proxy(
    upstream: String,
    target: String,
    fault: Fault,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let (addr, hits, _) = logging_proxy(upstream, target, fault);
    (addr, hits)
}

pub fn logging_proxy(
    upstream: String,
    target: String,
    fault: Fault,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>, Log) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let log = Log::default();
    let logger = log.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().take(1000) {
            let Ok(mut client) = client else { continue };
            let upstream = upstream.clone();
            let target = target.clone();
            let counter = counter.clone();
            let logger = logger.clone();
            std::thread::spawn(move || {
                let Some(text) = read_request_head(&mut client) else {
                    return;
                };
                let mut lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
                lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
                let range = lines
                    .iter()
                    .find(|l| l.to_ascii_lowercase().starts_with("range:"))
                    .map_or("", |l| l.trim());
                logger.lock().unwrap().push(format!("{} {range}", lines[0]));
                let request = format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"));
                let Ok(mut up) = TcpStream::connect(&upstream) else {
                    return;
                };
                up.write_all(request.as_bytes()).unwrap();
                let mut answer = Vec::new();
                up.read_to_end(&mut answer).unwrap();
                let split = answer
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(answer.len(), |p| p + 4);
                let hit = lines[0].contains(&target) && lines[0].starts_with("GET");
                let answer_head = String::from_utf8_lossy(&answer[..split])
                    .replace("Connection: keep-alive", "Connection: close");
                let mut body = answer[split..].to_vec();
                if hit {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    match fault {
                        Fault::CutAlways => {
                            let half = body.len() / 2;
                            let _ = client.write_all(answer_head.as_bytes());
                            let _ = client.write_all(&body[..half]);
                            return;
                        }
                        Fault::Cut if n == 0 => {
                            let half = body.len() / 2;
                            let _ = client.write_all(answer_head.as_bytes());
                            let _ = client.write_all(&body[..half]);
                            return; // the connection drops midway
                        }
                        Fault::Corrupt if !body.is_empty() => {
                            let mid = body.len() / 2;
                            body[mid] ^= 0xff;
                        }
                        Fault::Slow(pause) => std::thread::sleep(pause),
                        _ => {}
                    }
                }
                let _ = client.write_all(answer_head.as_bytes());
                let _ = client.write_all(&body);
            });
        }
    });
    (addr, hits, log)
}
