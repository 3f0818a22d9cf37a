//! `POST /v1/images/push` (a token always, even on the unix socket) to
//! Debian's `docker-registry`, read back with skopeo; and the server's
//! `/v2/` as the upstream of a `docker-registry` in proxy mode
//! (`proxy.remoteurl`), pulled through by skopeo and by another cache.

#[path = "../../microsandbox/tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::registry::{registry, start_registry};
use common::{blobs_of, digest_of, home, skopeo, Home};
use microsandbox_serve::{Config, Listen, Server, Token};

const TOKEN: &str = "push-test-token-0123456789";

fn tcp(h: &Home) -> Server {
    let mut c = Config::new(h.backend.clone());
    c.listen = Some(Listen::parse("127.0.0.1:0").unwrap());
    c.token = Some(Token::new(TOKEN).unwrap());
    Server::start(c).unwrap()
}

/// POSTs `body` to `path` with curl (over the socket for `unix:`);
/// returns (status, body).
fn post(server: &Server, path: &str, body: &str, token: bool) -> (u16, serde_json::Value) {
    let mut args: Vec<String> = ["-sS", "-w", "\n%{http_code}", "-X", "POST"]
        .map(String::from)
        .to_vec();
    args.extend(["-H".into(), "Content-Type: application/json".into()]);
    args.extend(["-d".into(), body.into()]);
    if token {
        args.extend(["-H".into(), format!("Authorization: Bearer {TOKEN}")]);
    }
    match server.address().strip_prefix("unix:") {
        Some(sock) => {
            args.extend(["--unix-socket".into(), sock.into()]);
            args.push(format!("http://localhost{path}"));
        }
        None => args.push(format!("http://{}{path}", server.address())),
    }
    let out = Command::new("curl")
        .args(&args)
        .output()
        .expect("curl is required");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (code.parse().unwrap(), value)
}

fn raw_digest(image: &str) -> String {
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{image}"),
    ]);
    microsandbox::Digest::of(raw.as_bytes()).to_string()
}

#[test]
fn post_v1_images_push_needs_a_token_and_pushes() {
    let reg = registry();
    let h = home();
    h.load("rich");
    let before = h.snapshot();
    let dest = format!("{}/served/rich:1", reg.addr);
    let body = format!(r#"{{"reference":"rich","to":"{dest}","chunkBytes":100}}"#);
    // Over the socket with no token configured, a push is refused.
    let socket = Server::start(Config::new(h.backend.clone())).unwrap();
    let (code, err) = post(&socket, "/v1/images/push", &body, false);
    assert_eq!(
        (code, err["code"].as_str()),
        (401, Some("Unauthorized")),
        "{err}"
    );
    socket.stop();
    let server = tcp(&h);
    let (code, _) = post(&server, "/v1/images/push", &body, false);
    assert_eq!(code, 401);
    let head = format!("http://{}/v2/served/rich/manifests/1", reg.addr);
    let probe = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I", &head])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout),
        "404",
        "nothing was pushed"
    );
    let (code, report) = post(&server, "/v1/images/push", &body, true);
    assert_eq!(code, 200, "{report}");
    assert_eq!(
        report["manifestDigest"].as_str(),
        Some(digest_of("rich").as_str())
    );
    assert_eq!(report["blobsUploaded"], 4);
    assert_eq!(report["reference"].as_str(), Some(dest.as_str()));
    assert_eq!(raw_digest(&dest), digest_of("rich"));
    // Pushed again: everything is there.
    let (code, again) = post(&server, "/v1/images/push", &body, true);
    assert_eq!(
        (code, again["blobsSkipped"].as_u64()),
        (200, Some(4)),
        "{again}"
    );
    for (body, status, code) in [
        (
            r#"{"reference":"rich","nope":1}"#.to_owned(),
            400,
            "InvalidArgument",
        ),
        (
            r#"{"reference":"rich","to":"Bad Name"}"#.to_owned(),
            400,
            "InvalidReference",
        ),
        (
            format!(r#"{{"reference":"absent:1","to":"{dest}"}}"#),
            404,
            "ImageNotFound",
        ),
    ] {
        let (got, err) = post(&server, "/v1/images/push", &body, true);
        assert_eq!(
            (got, err["code"].as_str()),
            (status, Some(code)),
            "{body}: {err}"
        );
    }
    h.assert_untouched(&before, "served push");
    server.stop();
}

/// distribution 2.8 in proxy mode authenticates to its upstream only
/// through a bearer realm (it files the configured credentials under the
/// realm URLs of the upstream's `Bearer` challenges); `/v2/` challenges
/// with `Basic`, so a proxy-mode registry uses a cache served with
/// `public_registry` (the management endpoints keep their token).
#[test]
fn v2_serves_a_docker_registry_in_proxy_mode() {
    let h = home();
    h.load("rich");
    let mut c = Config::new(h.backend.clone());
    c.listen = Some(Listen::parse("127.0.0.1:0").unwrap());
    c.token = Some(Token::new(TOKEN).unwrap());
    c.public_registry = true;
    let server = Server::start(c).unwrap();
    let cache = start_registry(
        tempfile::tempdir().unwrap(),
        &format!("proxy:\n  remoteurl: http://{}\n", server.address()),
    );
    let image = format!("{}/library/rich:latest", cache.addr);
    assert_eq!(raw_digest(&image), digest_of("rich"));
    let out = tempfile::tempdir().unwrap();
    let dst = format!("oci:{}:rich", out.path().display());
    skopeo(&[
        "copy",
        "--insecure-policy",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &dst,
    ]);
    for blob in blobs_of("rich") {
        let bytes = std::fs::read(out.path().join("blobs/sha256").join(&blob[7..])).unwrap();
        assert_eq!(microsandbox::Digest::of(&bytes).to_string(), blob);
    }
    // Another cache pulls through the proxy, which now holds the image.
    let peer = home();
    let pulled = peer
        .backend
        .pull_image(&image, &Default::default())
        .unwrap();
    assert_eq!(pulled.manifest_digest().unwrap(), digest_of("rich"));
    peer.assert_invariants();
    server.stop();
}
