//! The server against an attacker holding the token (or none, on a
//! public registry): clients that ask for blobs and never read them, loads
//! of host files that are no archives, and saves over files the server's
//! user can write. Each attack is made as it was found, and each must do
//! no harm.

#[path = "../../microsandbox/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{home, Home};
use microsandbox_serve::{Config, Listen, Server, Token};
use sha2::Digest as _;

const TOKEN: &str = "hostile-token-0123456789abcdef";

fn config(h: &Home, allow: &[&Path]) -> Config {
    let mut c = Config::new(h.backend.clone());
    c.listen = Some(Listen::parse("127.0.0.1:0").unwrap());
    c.token = Some(Token::new(TOKEN).unwrap());
    c.allow_paths = allow.iter().map(|p| p.to_path_buf()).collect();
    c
}

/// A tar of one file.
fn tar_of(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mut oct = |v: u64, off: usize, len: usize| {
        let s = format!("{v:0width$o}\0", width = len - 1);
        h[off..off + len].copy_from_slice(s.as_bytes());
    };
    oct(0o644, 100, 8);
    oct(0, 108, 8);
    oct(0, 116, 8);
    oct(bytes.len() as u64, 124, 12);
    oct(0, 136, 12);
    h[148..156].fill(b' ');
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(bytes);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// Loads an image `big` whose one layer is `mib` MiB of noise; the
/// layer's digest and bytes.
fn load_big(h: &Home, mib: usize) -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        (d, bytes.len())
    };
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let layer = tar_of("big.bin", &noise);
    let (ld, ls) = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": { "type": "layers", "diff_ids": [ld] },
    });
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls }],
    });
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": { "org.opencontainers.image.ref.name": "big" },
        }],
    });
    std::fs::write(dir.path().join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let options = microsandbox::LoadOptions {
        reference: Some(microsandbox::Reference::parse("big").unwrap()),
        ..Default::default()
    };
    h.backend.load_images(dir.path(), &options).unwrap();
    (ld, layer)
}

/// One request on a new connection; (status, body), the body read to its
/// `Content-Length`.
fn request(addr: &str, method: &str, target: &str, body: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer head");
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let body = all[end + 4..].to_vec();
    assert_eq!(body.len(), length, "{head}");
    (status, body)
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

fn q(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('%', "%25")
        .replace('&', "%26")
}

#[test]
fn stalled_blob_readers_hold_a_connection_slot_until_the_write_timeout_cuts_them() {
    let h = home();
    // Larger than what the kernel buffers for a client that reads nothing.
    let (digest, layer) = load_big(&h, 24);
    let mut c = config(&h, &[]);
    c.public_registry = true;
    c.max_connections = 4;
    c.write_timeout = Duration::from_secs(2);
    let server = Server::start(c).unwrap();
    let addr = server.address().to_owned();
    let get = format!("GET /v2/library/big/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n");

    // Every slot taken by a client that asks and never reads.
    let started = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(get.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // The next client waits, unaccepted, until the write timeout frees a
    // slot; then it gets the whole blob.
    let (status, body) = request(&addr, "GET", &format!("/v2/library/big/blobs/{digest}"), "");
    let waited = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(body.len(), layer.len());
    assert_eq!(sha256(&body), digest);
    assert!(
        waited >= Duration::from_millis(1500),
        "served after {waited:?}: the slots were not held"
    );
    assert!(waited < Duration::from_secs(30), "{waited:?}");

    // The stalled ones were closed by the server: what they can still read
    // ends well before the blob does.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        assert!(
            got < layer.len(),
            "a stalled client was sent the whole blob ({got} bytes)"
        );
    }
    server.stop();
}

/// Whether `body` holds any run of 10 bytes of `content`.
fn echoes(body: &[u8], content: &[u8]) -> Option<String> {
    content
        .windows(10)
        .find(|w| body.windows(10).any(|b| b == *w))
        .map(|w| String::from_utf8_lossy(w).into_owned())
}

#[test]
fn a_load_of_a_file_that_is_no_archive_never_echoes_its_bytes() {
    let h = home();
    let allowed = tempfile::tempdir().unwrap();
    let shadow = allowed.path().join("shadow");
    // Longer than a tar header, as a real one is.
    let secret: String = (0..24)
        .map(|i| {
            format!(
                "user{i}:$6$salt{i}${}:19000:0:99999:7:::\n",
                &sha256(format!("hash {i}").as_bytes())[7..]
            )
        })
        .collect();
    std::fs::write(&shadow, &secret).unwrap();
    let server = Server::start(config(&h, &[allowed.path(), Path::new("/proc/self")])).unwrap();
    let addr = server.address();
    let environ = std::fs::read("/proc/self/environ").unwrap();
    assert!(
        environ.len() > 20,
        "the test needs an environment to look for"
    );
    for (file, content) in [
        (shadow.clone(), secret.into_bytes()),
        ("/proc/self/environ".into(), environ),
    ] {
        let minibox = request(addr, "POST", &format!("/images/load?path={}", q(&file)), "");
        let v1 = request(
            addr,
            "POST",
            "/v1/images/load",
            &serde_json::json!({ "path": file }).to_string(),
        );
        for (status, body) in [minibox, v1] {
            assert_eq!(status, 400, "{}", text(&body));
            // What the client named is told back; nothing of what is in it.
            let shown = text(&body).replace(&file.display().to_string(), "<path>");
            assert!(shown.contains("<path>"), "{shown}");
            assert!(
                shown.contains("not a tar archive") || shown.contains("ends midway"),
                "{shown}"
            );
            assert!(!shown.contains("/proc/self/fd"), "{shown}");
            if let Some(run) = echoes(shown.as_bytes(), &content) {
                panic!("the answer quotes the file ({run:?}): {shown}");
            }
        }
    }
    server.stop();
}

#[test]
fn host_paths_are_refused_unless_inside_an_allowed_directory() {
    let h = home();
    h.load("rich");
    let top = tempfile::tempdir().unwrap();
    let allowed = top.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let outside = top.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"top secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), allowed.join("file-link")).unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("dir-link")).unwrap();

    // None allowed (the default): every path is refused, with the code a
    // client can test.
    let closed = Server::start(config(&h, &[])).unwrap();
    let a = closed.address();
    let (status, body) = request(a, "POST", "/images/load?path=/etc/shadow", "");
    assert_eq!(status, 400);
    assert!(text(&body).contains("--allow-path"), "{}", text(&body));
    let (status, body) = request(
        a,
        "POST",
        "/v1/images/save",
        &serde_json::json!({ "references": "rich", "path": outside.join("x.tar") }).to_string(),
    );
    assert_eq!(status, 400);
    let e: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(e["code"], "InvalidArgument", "{e}");
    closed.stop();

    let server = Server::start(config(&h, &[&allowed])).unwrap();
    let a = server.address();
    let escapes = [
        outside.join("secret"),
        allowed.join("../outside/secret"),
        allowed.join("file-link"),
        allowed.join("dir-link/secret"),
        Path::new("/etc/shadow").to_owned(),
    ];
    for p in &escapes {
        let (status, body) = request(a, "POST", &format!("/images/load?path={}", q(p)), "");
        assert_eq!(status, 400, "{}: {}", p.display(), text(&body));
        assert!(!text(&body).contains("top secret"));
        let (status, body) = request(
            a,
            "POST",
            "/v1/images/load",
            &serde_json::json!({ "path": p }).to_string(),
        );
        assert_eq!(status, 400, "{}: {}", p.display(), text(&body));
        let e: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(e["code"], "InvalidArgument", "{e}");
    }
    for p in [
        outside.join("new.tar"),
        allowed.join("../outside/new.tar"),
        allowed.join("dir-link/new.tar"),
    ] {
        let (status, body) = request(
            a,
            "POST",
            &format!("/images/save?image=rich&path={}", q(&p)),
            "",
        );
        assert_eq!(status, 400, "{}: {}", p.display(), text(&body));
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing was written outside"
    );

    // Inside, a save and a load work, named by the client's path.
    let archive = allowed.join("sub-rich.tar");
    let (status, body) = request(
        a,
        "POST",
        &format!("/images/save?image=rich&path={}", q(&archive)),
        "",
    );
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(
        text(&body),
        format!("Saved image rich to {}\n", archive.display())
    );
    let (status, body) = request(a, "POST", &format!("/images/load?path={}", q(&archive)), "");
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(
        text(&body),
        format!("Loaded image rich:latest from {}\n", archive.display())
    );
    server.stop();
}

#[test]
fn a_save_replaces_no_file_unless_asked_and_never_through_a_link() {
    let h = home();
    h.load("rich");
    let top = tempfile::tempdir().unwrap();
    let allowed = top.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let keys = allowed.join("authorized_keys");
    std::fs::write(&keys, b"ssh-ed25519 AAAA the owner\n").unwrap();
    let victim = top.path().join("victim");
    std::fs::write(&victim, b"keep me\n").unwrap();
    let link = allowed.join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let server = Server::start(config(&h, &[&allowed])).unwrap();
    let a = server.address();

    let save = |p: &Path, extra: &str| {
        request(
            a,
            "POST",
            &format!("/images/save?image=rich&path={}{extra}", q(p)),
            "",
        )
    };
    let (status, body) = save(&keys, "");
    assert_eq!(status, 400, "{}", text(&body));
    assert!(text(&body).contains("exists"), "{}", text(&body));
    let (status, body) = request(
        a,
        "POST",
        "/v1/images/save",
        &serde_json::json!({ "references": "rich", "path": keys }).to_string(),
    );
    assert_eq!(status, 400);
    let e: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(e["code"], "InvalidArgument", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains(&keys.display().to_string()),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&keys).unwrap(),
        b"ssh-ed25519 AAAA the owner\n"
    );

    // A link is never replaced nor written through, asked or not.
    for extra in ["", "&overwrite=true"] {
        let (status, body) = save(&link, extra);
        assert_eq!(status, 400, "{}", text(&body));
    }
    let (status, _) = request(
        a,
        "POST",
        "/v1/images/save",
        &serde_json::json!({ "references": "rich", "path": link, "overwrite": true }).to_string(),
    );
    assert_eq!(status, 400);
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me\n");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let (status, _) = save(&keys, "&overwrite=maybe");
    assert_eq!(status, 400);

    // Asked, a regular file is replaced by the archive.
    let (status, body) = save(&keys, "&overwrite=true");
    assert_eq!(status, 200, "{}", text(&body));
    assert_ne!(
        std::fs::read(&keys).unwrap(),
        b"ssh-ed25519 AAAA the owner\n"
    );
    let (status, body) = request(
        a,
        "POST",
        "/v1/images/save",
        &serde_json::json!({ "references": "rich", "path": keys, "overwrite": true, "format": "oci" })
            .to_string(),
    );
    assert_eq!(status, 200, "{}", text(&body));
    let (status, body) = request(a, "POST", &format!("/images/load?path={}", q(&keys)), "");
    assert_eq!(status, 200, "{}", text(&body));
    server.stop();
}
