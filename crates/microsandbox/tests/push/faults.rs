//! The faults a push lives through, made by a proxy in front of the
//! registry that forwards every request with its body and, on the third
//! `PATCH` of an upload (once), does one thing wrong: the registry is
//! killed and started again before the chunk reaches it, the chunk goes
//! with a stale token (the registry answers 401), or the proxy answers 416
//! itself.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::common::registry::{start_registry, token_server, Registry};
use super::common::*;
use super::{login, read_back, rich_config, to};
use microsandbox::PushOptions;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// The registry is killed and restarted; the connection drops.
    Restart,
    /// The chunk is sent with `Authorization: Bearer stale`.
    StaleToken,
    /// The proxy answers 416 and forwards nothing.
    Refuse,
}

type Log = Arc<Mutex<Vec<String>>>;

/// A proxy to `reg` on a loopback port that does `fault` once; every
/// request line (with its `Content-Range`) goes into the log.
fn proxy(reg: Arc<Mutex<Registry>>, fault: Fault) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let upstream = reg.lock().unwrap().addr.clone();
    let log = Log::default();
    let logger = log.clone();
    let fired = Arc::new(AtomicBool::new(false));
    let patches: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    std::thread::spawn(move || {
        for client in listener.incoming().take(2000) {
            let Ok(client) = client else { continue };
            let (reg, upstream, logger) = (reg.clone(), upstream.clone(), logger.clone());
            let (fired, patches) = (fired.clone(), patches.clone());
            std::thread::spawn(move || {
                serve(client, &upstream, &reg, fault, &logger, &fired, &patches)
            });
        }
    });
    (addr, log)
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    reg: &Mutex<Registry>,
    fault: Fault,
    log: &Log,
    fired: &AtomicBool,
    patches: &Mutex<std::collections::HashMap<String, usize>>,
) {
    let Some(head) = read_request_head(&mut client) else {
        return;
    };
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let value = |name: &str| {
        lines
            .iter()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .map(|l| l[name.len() + 1..].trim().to_owned())
    };
    let length: usize = value("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let range = value("content-range").unwrap_or_default();
    let mut body = vec![0u8; length];
    if client.read_exact(&mut body).is_err() {
        return;
    }
    let request = lines[0].clone();
    log.lock().unwrap().push(format!("{request} {range}"));
    let path = request.split(' ').nth(1).unwrap_or("");
    let upload_path = path.split('?').next().unwrap_or("").to_owned();
    let third = request.starts_with("PATCH") && {
        let mut p = patches.lock().unwrap();
        let n = p.entry(upload_path.clone()).or_insert(0);
        *n += 1;
        *n == 3
    };
    if third && !fired.swap(true, Ordering::SeqCst) {
        log.lock().unwrap().push(format!("FAULT {upload_path}"));
        match fault {
            Fault::Restart => {
                reg.lock().unwrap().restart();
                return; // the connection drops with no answer
            }
            Fault::Refuse => {
                let _ = client.write_all(
                    b"HTTP/1.1 416 Requested Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
            Fault::StaleToken => {
                lines.retain(|l| !l.to_ascii_lowercase().starts_with("authorization:"));
                lines.push("Authorization: Bearer stale".to_owned());
            }
        }
    }
    lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let head = format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"));
    if up.write_all(head.as_bytes()).is_err() || up.write_all(&body).is_err() {
        return;
    }
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer);
    let _ = client.write_all(&answer);
}

/// The upload whose chunk the fault hit, and the requests of it after
/// the fault: the `Content-Range` sent again must be the one hit.
fn resent_after_fault(log: &Log) -> Vec<String> {
    let log = log.lock().unwrap();
    let hit = log
        .iter()
        .find_map(|l| l.strip_prefix("FAULT "))
        .expect("the fault fired")
        .to_owned();
    log.iter()
        .filter(|l| l.contains(&hit) && !l.starts_with("FAULT"))
        .cloned()
        .collect()
}

/// Where the third chunk of the upload is in its requests, and its
/// ` start-end`.
fn third_chunk(upload: &[String]) -> (usize, String) {
    let at = upload
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("PATCH "))
        .nth(2)
        .map(|(i, _)| i)
        .expect("a third chunk");
    let range = upload[at].rsplit(' ').next().unwrap();
    (at, format!(" {range}"))
}

fn push_through(fault: Fault, extra: &str, creds: Option<(&str, &str)>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!("  secret: push-faults-secret\n{extra}");
    let _token;
    if let Some((user, password)) = creds {
        let (addr, auth) = token_server(dir.path(), user, password);
        _token = addr;
        config.push_str(&auth);
    }
    let reg = Arc::new(Mutex::new(start_registry(dir, &config)));
    let (addr, log) = proxy(reg.clone(), fault);
    let h = home();
    h.load("rich");
    let before = h.snapshot();
    let docker = creds.map(|(u, p)| login(&addr, u, p));
    let dest = format!("{addr}/faults/rich:1");
    let started = std::time::Instant::now();
    let report = h
        .backend
        .push_image(
            "rich",
            &PushOptions {
                chunk_bytes: Some(100),
                docker_config: docker.as_ref().map(|d| d.path().to_owned()),
                ..to(&dest)
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {:#?}", log.lock().unwrap()));
    assert_eq!(report.manifest_digest, digest_of("rich"));
    eprintln!("push took {:?}", started.elapsed());
    // Read back from the registry itself (skopeo tries TLS first, which
    // this proxy does not answer).
    let creds = creds.map(|(u, p)| format!("{u}:{p}"));
    let direct = format!("{}/faults/rich:1", reg.lock().unwrap().addr);
    assert_eq!(
        read_back(&direct, creds.as_deref()),
        (digest_of("rich"), rich_config())
    );
    h.assert_untouched(&before, "push");
    assert!(h.backend.list_leases().unwrap().is_empty());
    resent_after_fault(&log)
}

#[test]
fn a_registry_killed_mid_upload_is_resumed_from_the_range_it_reports() {
    let upload = push_through(Fault::Restart, "", None);
    // The chunk the registry never got, then the question, then the
    // chunk again: the upload resumed where the restarted registry was.
    let (at, range) = third_chunk(&upload);
    assert!(upload[at + 1].starts_with("GET "), "{upload:#?}");
    assert!(
        upload[at + 2].starts_with("PATCH ") && upload[at + 2].ends_with(&range),
        "{upload:#?}"
    );
    assert!(
        !upload
            .iter()
            .any(|l| l.ends_with(" 0-99") && l != &upload[0]),
        "{upload:#?}"
    );
}

#[test]
fn a_416_on_a_chunk_asks_the_range_and_goes_on() {
    let upload = push_through(Fault::Refuse, "", None);
    let (at, range) = third_chunk(&upload);
    assert!(upload[at + 1].starts_with("GET "), "{upload:#?}");
    assert!(upload[at + 2].ends_with(&range), "{upload:#?}");
}

#[test]
fn a_401_mid_push_refreshes_the_token_once() {
    let upload = push_through(Fault::StaleToken, "", Some(("robot", "t0ken-pass")));
    let (at, range) = third_chunk(&upload);
    assert!(upload[at + 1].ends_with(&range), "{upload:#?}");
    let sent = upload.iter().filter(|l| l.ends_with(&range)).count();
    assert_eq!(sent, 2, "{upload:#?}");
}
