//! A real registry for tests: Debian's `docker-registry` (distribution)
//! on a free loopback port, filled by skopeo.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
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

/// A registry that asks for `user:password` (htpasswd, basic auth).
pub fn registry_with(login: Option<(&str, &str)>) -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let auth = match login {
        None => String::new(),
        Some((user, password)) => {
            let file = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd is required (apt-get install apache2-utils)");
            assert!(out.status.success());
            std::fs::write(&file, &out.stdout).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                file.display()
            )
        }
    };
    start_registry(dir, &auth)
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

/// A token server for a registry with `auth: token`: it hands `user` (and
/// nobody else) RS256 tokens signed by a key whose self-signed
/// certificate the registry trusts. Returns its address and the
/// registry's auth config.
pub fn token_server(dir: &Path, user: &str, password: &str) -> (String, String) {
    token_server_for(dir, user, password, Duration::from_secs(600))
}

/// [`token_server`] whose tokens last `lifetime`.
pub fn token_server_for(
    dir: &Path,
    user: &str,
    password: &str,
    lifetime: Duration,
) -> (String, String) {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key = dir.join("token.key");
    let cert = dir.join("token.crt");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=test token issuer", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is required (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(&cert).unwrap();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let user = user.to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().take(1000) {
            let Ok(mut client) = client else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if client.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            let authorized = text.lines().any(|l| {
                l.to_ascii_lowercase().starts_with("authorization:")
                    && l["authorization:".len()..].trim() == expected_auth
            });
            let target = text.split_whitespace().nth(1).unwrap_or("").to_owned();
            let query = target.split_once('?').map_or("", |(_, q)| q);
            // Every scope asked for (several `scope=`, or several in one
            // separated by spaces), each granted as asked.
            let scopes: Vec<String> = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope="))
                .flat_map(|s| {
                    s.replace("%3A", ":")
                        .replace("%2F", "/")
                        .replace("%2C", ",")
                        .replace("%20", " ")
                        .replace('+', " ")
                        .split(' ')
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .filter(|s| !s.is_empty())
                .collect();
            if !authorized {
                let _ = client.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = format!(r#"{{"alg":"RS256","typ":"JWT","x5c":["{der_b64}"]}}"#);
            // repository:<name>:<actions>
            let access: Vec<String> = scopes
                .iter()
                .map(|scope| {
                    let rest = scope.split_once(':').map_or("", |(_, r)| r);
                    let (repo, actions) = rest.rsplit_once(':').unwrap_or((rest, "pull"));
                    let actions: Vec<String> =
                        actions.split(',').map(|a| format!("\"{a}\"")).collect();
                    format!(
                        r#"{{"type":"repository","name":"{repo}","actions":[{}]}}"#,
                        actions.join(",")
                    )
                })
                .collect();
            let claims = format!(
                r#"{{"iss":"test-issuer","sub":"{user}","aud":"test-registry","exp":{},"nbf":{},"iat":{now},"jti":"{now}-{}","access":[{}]}}"#,
                now + lifetime.as_secs(),
                now - 60,
                rand_id(),
                access.join(",")
            );
            let signing_input = format!("{}.{}", b64.encode(header), b64.encode(claims));
            let mut sign = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            sign.stdin
                .take()
                .unwrap()
                .write_all(signing_input.as_bytes())
                .unwrap();
            let signature = sign.wait_with_output().unwrap().stdout;
            let token = format!("{signing_input}.{}", b64.encode(signature));
            let body = format!(
                r#"{{"token":"{token}","expires_in":{}}}"#,
                lifetime.as_secs()
            );
            let _ = client.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    let auth = format!(
        "auth:\n  token:\n    realm: http://{addr}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
        cert.display()
    );
    (addr, auth)
}

pub fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

impl Registry {
    /// Kills the registry (as a crash would) and starts it again on the
    /// same port with the same storage and config.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Command::new("docker-registry")
            .arg("serve")
            .arg(self._dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is required (apt-get install docker-registry)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start again"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where its storage is.
    pub fn data(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }
}
