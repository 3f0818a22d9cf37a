//! The server from outside, with real clients: curl (MiniBox's calls as
//! its page writes them, over TCP with a token and over the unix socket
//! without one), skopeo reading `/v2/` as a registry, and another cache
//! pulling through this one as its mirror while the origin registry is
//! down. Every refused request leaves the cache as it was.

#[path = "../../microsandbox/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::registry::{push, registry};
use common::{blobs_of, digest_of, fixtures, home, Home};
use microsandbox::{PullOptions, PullPolicy};
use microsandbox_serve::{Config, Listen, Server, Token};

const TOKEN: &str = "test-token-0123456789abcdef";

fn tcp(h: &Home) -> Server {
    tcp_allowing(h, &[])
}

/// Over TCP with the token, clients naming paths in `allow`.
fn tcp_allowing(h: &Home, allow: &[&Path]) -> Server {
    let mut c = Config::new(h.backend.clone());
    c.listen = Some(Listen::parse("127.0.0.1:0").unwrap());
    c.token = Some(Token::new(TOKEN).unwrap());
    c.allow_paths = allow.iter().map(|p| p.to_path_buf()).collect();
    Server::start(c).unwrap()
}

fn unix(h: &Home) -> Server {
    unix_allowing(h, &[])
}

fn unix_allowing(h: &Home, allow: &[&Path]) -> Server {
    let mut c = Config::new(h.backend.clone());
    c.allow_paths = allow.iter().map(|p| p.to_path_buf()).collect();
    Server::start(c).unwrap()
}

/// Runs curl; returns (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is required");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// Everything a client could change: index.json, the blob names, the
/// lease files.
fn state(h: &Home) -> (Vec<u8>, BTreeSet<String>, BTreeSet<String>) {
    let leases = std::fs::read_dir(h.dir.path().join("leases"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let (index, blobs) = h.snapshot();
    (index, blobs, leases)
}

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.address())
}

#[test]
fn minibox_calls_work_with_curl_as_its_page_shows() {
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    let h = home();
    let out = tempfile::tempdir().unwrap();
    let server = tcp_allowing(&h, &[out.path()]);
    let auth = format!("Authorization: Bearer {TOKEN}");
    let image = format!("{}/team/rich:1", reg.addr);

    let (code, body) = curl(&[&url(&server, "/images"), "-H", &auth]);
    assert_eq!((code, body.as_str()), (200, "[]"));

    let pull = url(&server, &format!("/images/pull?image={image}"));
    let (code, body) = curl(&["-X", "POST", &pull, "-H", &auth]);
    assert_eq!(code, 200);
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with("[pull] ")), "{body}");
    assert_eq!(lines.last(), Some(&"[pull] Done"), "{body}");
    assert!(
        body.contains(&format!("[pull] fetching {image} manifest...")),
        "{body}"
    );

    let (code, body) = curl(&[&url(&server, "/images"), "-H", &auth]);
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        list,
        serde_json::json!([{ "name": image, "size_bytes": common::total_size("rich") }])
    );

    let archive = out.path().join("rich.tar");
    let save = url(
        &server,
        &format!("/images/save?image={image}&path={}", archive.display()),
    );
    let (code, body) = curl(&["-X", "POST", &save, "-H", &auth]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        format!("Saved image {image} to {}\n", archive.display())
    );

    let remove = url(&server, &format!("/images/remove?image={image}"));
    let (code, body) = curl(&["-X", "POST", &remove, "-H", &auth]);
    assert_eq!(
        (code, body.clone()),
        (200, format!("Image {image} removed\n"))
    );
    let (code, _) = curl(&["-X", "POST", &remove, "-H", &auth]);
    assert_eq!(code, 404, "a second remove finds nothing");

    let (code, body) = curl(&["-X", "POST", &url(&server, "/system/prune"), "-H", &auth]);
    assert_eq!(code, 200);
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["blobs_removed"], 5, "{report}");
    assert!(report["bytes_freed"].as_u64().unwrap() > 0);
    assert_eq!(report["fuse_mounts_killed"], 0);

    let load = url(&server, &format!("/images/load?path={}", archive.display()));
    let (code, body) = curl(&["-X", "POST", &load, "-H", &auth]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        format!("Loaded image {image} from {}\n", archive.display())
    );
    assert_eq!(h.refs(), vec![image.clone()]);
    h.assert_invariants();

    // A pull that fails says so on its last line.
    let missing = url(
        &server,
        &format!("/images/pull?image={}/team/nope:1", reg.addr),
    );
    let (code, body) = curl(&["-X", "POST", &missing, "-H", &auth]);
    assert_eq!(code, 200);
    assert!(
        body.lines()
            .last()
            .unwrap()
            .starts_with("[error] pull failed: "),
        "{body}"
    );
    server.stop();
}

#[test]
fn the_unix_socket_takes_minibox_calls_without_a_token() {
    let h = home();
    h.load("rich");
    let server = unix(&h);
    let sock = h.dir.path().join("serve.sock");
    assert_eq!(server.address(), format!("unix:{}", sock.display()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::symlink_metadata(&sock)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let s = sock.display().to_string();
    let (code, body) = curl(&["--unix-socket", &s, "http://localhost/images"]);
    assert_eq!(code, 200);
    assert!(body.contains("\"name\":\"rich:latest\""), "{body}");
    let (code, body) = curl(&["--unix-socket", &s, "http://localhost/ping"]);
    assert_eq!((code, body.as_str()), (200, "Daemon is running\n"));
    let (code, body) = curl(&[
        "--unix-socket",
        &s,
        "-X",
        "POST",
        "http://localhost/images/remove?image=nope",
    ]);
    assert_eq!(code, 404, "{body}");
    server.stop();
    assert!(!sock.exists(), "the socket goes with the server");
}

/// Every endpoint, as (method, path, JSON body).
fn every_endpoint(archive: &Path) -> Vec<(&'static str, String, &'static str)> {
    let a = archive.display();
    vec![
        ("GET", "/ping".into(), ""),
        ("GET", "/images".into(), ""),
        ("POST", "/images/pull?image=127.0.0.1:1/x:1".into(), ""),
        ("POST", format!("/images/save?image=rich&path={a}"), ""),
        ("POST", format!("/images/load?path={a}"), ""),
        ("POST", "/images/remove?image=rich".into(), ""),
        ("POST", "/system/prune".into(), ""),
        ("GET", "/openapi.yaml".into(), ""),
        ("GET", "/v1/images".into(), ""),
        ("GET", "/v1/images/get?reference=rich".into(), ""),
        ("GET", "/v1/images/inspect?reference=rich".into(), ""),
        (
            "POST",
            "/v1/images/remove".into(),
            r#"{"reference":"rich","force":true}"#,
        ),
        ("POST", "/v1/images/prune".into(), "{}"),
        ("GET", "/v1/images/disk-usage".into(), ""),
        ("GET", "/v1/images/orphans".into(), ""),
        ("POST", "/v1/images/purge".into(), r#"{"force":true}"#),
        ("POST", "/v1/images/verify".into(), r#"{"repair":true}"#),
        (
            "POST",
            "/v1/images/pull".into(),
            r#"{"reference":"127.0.0.1:1/x:1"}"#,
        ),
        (
            "POST",
            "/v1/images/load".into(),
            "{\"path\":\"/nonexistent\"}",
        ),
        (
            "POST",
            "/v1/images/save".into(),
            "{\"references\":\"rich\",\"path\":\"/tmp/x.tar\"}",
        ),
        ("GET", "/v1/leases".into(), ""),
        (
            "POST",
            "/v1/leases".into(),
            r#"{"reference":"rich","id":"l1"}"#,
        ),
        ("DELETE", "/v1/leases/l1".into(), ""),
        ("GET", "/v2/".into(), ""),
        ("GET", "/v2/library/rich/manifests/latest".into(), ""),
        ("HEAD", "/v2/library/rich/manifests/latest".into(), ""),
        (
            "GET",
            format!("/v2/library/rich/blobs/{}", digest_of("rich")),
            "",
        ),
        ("GET", "/v2/library/rich/tags/list".into(), ""),
    ]
}

#[test]
fn requests_without_the_right_token_get_401_and_change_nothing() {
    let h = home();
    h.load("rich");
    h.backend
        .acquire_lease("rich", &Default::default())
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("a.tar");
    let server = tcp(&h);
    let before = state(&h);
    let basic_wrong = format!(
        "Authorization: Basic {}",
        base64_of(&format!("x:{TOKEN}-not"))
    );
    for (method, path, body) in every_endpoint(&archive) {
        for header in [
            "X-Nothing: 1".to_owned(),
            "Authorization: Bearer wrong-token-wrong-token".to_owned(),
            format!("Authorization: Bearer {TOKEN}x"),
            basic_wrong.clone(),
            "X-API-Token: wrong-token-wrong-token".to_owned(),
        ] {
            let mut args = vec!["-X", method, "-H", &header];
            if method == "HEAD" {
                args = vec!["-I", "-H", &header];
            }
            if !body.is_empty() {
                args.extend(["-H", "Content-Type: application/json", "-d", body]);
            }
            let target = url(&server, &path);
            args.push(&target);
            let (code, text) = curl(&args);
            assert_eq!(code, 401, "{method} {path} with {header}: {text}");
            if path.starts_with("/v2") && method != "HEAD" {
                assert!(text.contains("UNAUTHORIZED"), "{text}");
            }
        }
    }
    assert_eq!(state(&h), before, "refused requests changed the cache");
    assert!(!archive.exists());
    // The challenges name the scheme each side takes.
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", &url(&server, "/v2/")])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        head.contains("www-authenticate: basic realm=\"microsandbox\""),
        "{head}"
    );
    server.stop();
}

fn base64_of(text: &str) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// (status, body) of one call, over TCP with the token or over the socket.
fn call(server: &Server, method: &str, path: &str, body: &str) -> (u16, String) {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let mut args: Vec<String> = vec!["-X".into(), method.into()];
    if !body.is_empty() {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "-d".into(),
            body.into(),
        ]);
    }
    let address = server.address();
    match address.strip_prefix("unix:") {
        Some(sock) => {
            args.extend(["--unix-socket".into(), sock.into()]);
            args.push(format!("http://localhost{path}"));
        }
        None => {
            args.extend(["-H".into(), auth]);
            args.push(format!("http://{address}{path}"));
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn every_v1_endpoint_over_the_socket_and_over_tcp() {
    for transport in ["unix", "tcp"] {
        let h = home();
        h.load("rich");
        h.load("pair");
        let out = tempfile::tempdir().unwrap();
        let server = if transport == "unix" {
            unix_allowing(&h, &[out.path()])
        } else {
            tcp_allowing(&h, &[out.path()])
        };
        let c = |m: &str, p: &str, b: &str| call(&server, m, p, b);
        let (code, body) = c("GET", "/v1/images", "");
        assert_eq!(code, 200, "{transport}");
        assert_eq!(json_of(&body).as_array().unwrap().len(), 3);
        let (code, body) = c("GET", "/v1/images/get?reference=docker.io/library/rich", "");
        assert_eq!(code, 200);
        assert_eq!(json_of(&body)["manifestDigest"], digest_of("rich"));
        let (code, body) = c("GET", "/v1/images/inspect?reference=rich", "");
        assert_eq!(code, 200);
        assert_eq!(json_of(&body)["layers"].as_array().unwrap().len(), 3);
        let (code, body) = c("GET", "/v1/images/get?reference=nope", "");
        assert_eq!(
            (code, json_of(&body)["code"].clone()),
            (404, "ImageNotFound".into())
        );
        let (code, body) = c("GET", "/v1/images/get?reference=Bad%20Name", "");
        assert_eq!(
            (code, json_of(&body)["code"].clone()),
            (400, "InvalidReference".into())
        );
        let (code, _) = c("GET", "/v1/images/get", "");
        assert_eq!(code, 400);

        let (code, body) = c("POST", "/v1/leases", r#"{"reference":"rich","id":"sbx-1"}"#);
        assert_eq!(code, 201, "{body}");
        assert_eq!(json_of(&body)["kind"], "sandbox");
        let (code, body) = c("GET", "/v1/leases", "");
        assert_eq!(
            (code, json_of(&body)[0]["id"].clone()),
            (200, "sbx-1".into())
        );
        let (code, body) = c("POST", "/v1/images/remove", r#"{"reference":"rich"}"#);
        assert_eq!(
            (code, json_of(&body)["code"].clone()),
            (409, "ImageInUse".into())
        );
        let (code, body) = c(
            "POST",
            "/v1/images/prune",
            r#"{"dryRun":true,"maxBytes":"1kB"}"#,
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(json_of(&body)["dryRun"], true);
        assert!(json_of(&body)["overBudgetBytes"].as_u64().unwrap() > 0);
        for bad in [
            r#"{"dangling":true,"unusedFor":"7d"}"#,
            r#"{"dryRun":"yes"}"#,
            r#"{"unusedFor":-1}"#,
            r#"{"maxBytes":"lots"}"#,
            r#"{"typo":1}"#,
            "[",
        ] {
            let (code, body) = c("POST", "/v1/images/prune", bad);
            assert_eq!(code, 400, "{bad}: {body}");
            assert_eq!(json_of(&body)["code"], "InvalidArgument", "{bad}");
        }
        let (code, body) = c("POST", "/v1/images/prune", r#"{"unusedFor":"7d"}"#);
        assert_eq!(
            (code, json_of(&body)["imageRefsRemoved"].clone()),
            (200, 0.into())
        );
        let (code, body) = c("GET", "/v1/images/disk-usage", "");
        assert_eq!(code, 200);
        assert_eq!(json_of(&body)["images"].as_array().unwrap().len(), 3);
        let (code, body) = c("POST", "/v1/images/verify", "");
        assert_eq!((code, json_of(&body)["clean"].clone()), (200, true.into()));
        let (code, body) = c("DELETE", "/v1/leases/sbx-1", "");
        assert_eq!(
            (code, json_of(&body)["released"].clone()),
            (200, true.into())
        );
        let (code, body) = c("DELETE", "/v1/leases/sbx-1", "");
        assert_eq!(
            (code, json_of(&body)["released"].clone()),
            (200, false.into())
        );
        let (code, _) = c("DELETE", "/v1/leases/..%2Fx", "");
        assert_eq!(code, 400);

        let archive = out.path().join("two.tar");
        let save = format!(
            r#"{{"references":["rich","app"],"path":"{}","format":"oci"}}"#,
            archive.display()
        );
        let (code, body) = c("POST", "/v1/images/save", &save);
        assert_eq!(code, 200, "{body}");
        let (code, body) = c(
            "POST",
            "/v1/images/save",
            r#"{"references":"rich","path":"rel.tar"}"#,
        );
        assert_eq!(code, 400, "{body}");
        let (code, body) = c("POST", "/v1/images/remove", r#"{"reference":"rich"}"#);
        assert_eq!(
            (code, json_of(&body)["removed"].clone()),
            (200, "rich".into())
        );
        let (code, body) = c("GET", "/v1/images/orphans", "");
        assert_eq!(code, 200);
        assert!(!json_of(&body).as_array().unwrap().is_empty());
        let (code, body) = c("POST", "/v1/images/prune", "");
        assert_eq!(code, 200);
        assert!(json_of(&body)["bytesReclaimed"].as_u64().unwrap() > 0);
        let load = format!(r#"{{"path":"{}"}}"#, archive.display());
        let (code, body) = c("POST", "/v1/images/load", &load);
        assert_eq!(code, 200, "{body}");
        assert_eq!(json_of(&body).as_array().unwrap().len(), 2);
        let (code, body) = c(
            "POST",
            "/v1/images/pull",
            r#"{"reference":"rich","policy":"never"}"#,
        );
        assert_eq!(code, 200, "{body}");
        let (code, body) = c(
            "POST",
            "/v1/images/pull",
            r#"{"reference":"x","policy":"sometimes"}"#,
        );
        assert_eq!(code, 400, "{body}");
        let (code, body) = c("POST", "/v1/images/purge", r#"{"force":true}"#);
        assert_eq!(code, 200, "{body}");
        assert!(h.refs().is_empty());
        let (code, body) = c("GET", "/v1/nothing", "");
        assert_eq!(code, 404, "{body}");
        let (code, _) = c("PUT", "/v1/images", "");
        assert_eq!(code, 405);
        let (code, body) = c("GET", "/openapi.yaml", "");
        assert_eq!(code, 200);
        assert!(body.starts_with("openapi: 3"));
        h.assert_invariants();
        server.stop();
    }
}

#[test]
fn tcp_without_a_token_refuses_to_start_and_a_stop_lets_a_pull_finish() {
    let h = home();
    let mut c = Config::new(h.backend.clone());
    c.listen = Some(Listen::parse("127.0.0.1:0").unwrap());
    let err = Server::start(c).err().unwrap();
    assert_eq!(err.kind(), microsandbox::ErrorKind::InvalidArgument);
    assert!(err.message().contains("token"), "{err}");

    // A stop while a pull streams: the pull runs to its commit and the
    // client reads its last line.
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    let (proxy, _) = common::registry::faulty_proxy(
        reg.addr.clone(),
        "/blobs/".into(),
        common::registry::Fault::Slow(std::time::Duration::from_millis(300)),
    );
    let server = tcp(&h);
    let addr = server.address().to_owned();
    let image = format!("{}/team/rich:1", reg.addr);
    let mirror_home = h.dir.path().join("registries.json");
    std::fs::write(
        &mirror_home,
        format!(r#"{{"mirrors":{{"{}":["http://{proxy}"]}}}}"#, reg.addr),
    )
    .unwrap();
    let client = std::thread::spawn(move || {
        curl(&[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("http://{addr}/images/pull?image={image}"),
        ])
    });
    std::thread::sleep(std::time::Duration::from_millis(400));
    server.stop();
    let (code, body) = client.join().unwrap();
    assert_eq!(code, 200);
    assert_eq!(body.lines().last(), Some("[pull] Done"), "{body}");
    assert_eq!(h.refs().len(), 1);
    h.assert_invariants();
    let _ = fixtures();
}

#[test]
fn a_blob_changed_on_disk_is_cut_short_and_public_registry_opens_v2_alone() {
    let h = home();
    h.load("rich");
    let mut c = Config::new(h.backend.clone());
    c.listen = Some(Listen::parse("127.0.0.1:0").unwrap());
    c.token = Some(Token::new(TOKEN).unwrap());
    c.public_registry = true;
    let server = Server::start(c).unwrap();
    let (code, _) = curl(&[&url(&server, "/v2/library/rich/tags/list")]);
    assert_eq!(code, 200, "/v2 needs no token");
    let (code, _) = curl(&[&url(&server, "/v1/images")]);
    assert_eq!(code, 401, "the management endpoints still do");
    let (code, _) = curl(&[&url(&server, "/images")]);
    assert_eq!(code, 401);

    let layer = blobs_of("rich")[2].clone();
    let file = h.oci().join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{size_download}"])
        .arg(url(&server, &format!("/v2/library/rich/blobs/{layer}")))
        .output()
        .unwrap();
    assert!(!out.status.success(), "curl must see a cut answer");
    let got: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(got < bytes.len(), "{got} of {} bytes", bytes.len());
    server.stop();
}

#[path = "serve/registry.rs"]
mod registry;
