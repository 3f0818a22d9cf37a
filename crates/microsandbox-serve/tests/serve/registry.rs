//! The served `/v2`: manifests, blobs, ranges and tags, skopeo copies, a peer pulling through it.

use super::*;

#[test]
fn v2_serves_manifests_blobs_ranges_and_tags_as_a_registry_does() {
    let h = home();
    h.load("rich");
    let server = tcp(&h);
    let auth = format!("Authorization: Bearer {TOKEN}");
    let head = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-I", "-H", &auth, &url(&server, path)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let m = head("/v2/library/rich/manifests/latest");
    assert!(m.starts_with("http/1.1 200"), "{m}");
    assert!(
        m.contains("content-type: application/vnd.oci.image.manifest.v1+json"),
        "{m}"
    );
    assert!(
        m.contains(&format!("docker-content-digest: {}", digest_of("rich"))),
        "{m}"
    );
    assert!(m.contains("content-length: 654"), "{m}");
    let (code, body) = curl(&["-H", &auth, &url(&server, "/v2/rich/manifests/latest")]);
    assert_eq!(code, 200);
    assert_eq!(
        microsandbox::Digest::of(body.as_bytes()).to_string(),
        digest_of("rich")
    );
    let layer = blobs_of("rich")[2].clone();
    let path = format!("/v2/library/rich/blobs/{layer}");
    let part = h.dir.path().join("part");
    let p = part.display().to_string();
    let (code, _) = curl(&["-H", &auth, "-r", "0-9", "-o", &p, &url(&server, &path)]);
    assert_eq!(code, 206);
    let whole = std::fs::read(h.oci().join("blobs/sha256").join(&layer[7..])).unwrap();
    assert_eq!(std::fs::read(&part).unwrap(), &whole[..10]);
    let (code, _) = curl(&["-H", &auth, "-o", &p, &url(&server, &path)]);
    assert_eq!(code, 200);
    assert_eq!(std::fs::read(&part).unwrap(), whole);
    let (code, _) = curl(&["-H", &auth, "-r", "100000-", &url(&server, &path)]);
    assert_eq!(code, 416);
    let (code, body) = curl(&["-H", &auth, &url(&server, "/v2/library/rich/tags/list")]);
    assert_eq!(code, 200);
    assert_eq!(
        json_of(&body),
        serde_json::json!({ "name": "library/rich", "tags": ["latest"] })
    );
    for (path, want, code_word) in [
        ("/v2/library/other/manifests/latest", 404, "MANIFEST_UNKNOWN"),
        ("/v2/library/rich/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        ("/v2/library/rich/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000", 404, "BLOB_UNKNOWN"),
        ("/v2/library/rich/blobs/sha256:..%2F..%2Fetc", 400, "DIGEST_INVALID"),
        ("/v2/library/Rich/tags/list", 400, "NAME_INVALID"),
        ("/v2/library/rich/manifests/latest?ns=evil%2Fx", 400, "NAME_INVALID"),
        ("/v2/library/rich/tags/list?ns=ghcr.io", 404, "NAME_UNKNOWN"),
    ] {
        let (code, body) = curl(&["-H", &auth, &url(&server, path)]);
        assert_eq!(code, want, "{path}: {body}");
        assert!(body.contains(code_word), "{path}: {body}");
    }
    let (code, _) = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        &url(&server, "/v2/library/rich/manifests/x"),
    ]);
    assert_eq!(code, 405);
    server.stop();
}

/// The blob digests under a layout's blobs/sha256.
fn layout_blobs(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect()
}

#[test]
fn skopeo_copies_from_the_served_cache_byte_identical() {
    let h = home();
    h.load("rich");
    let server = tcp(&h);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    common::skopeo(&[
        "copy",
        "--insecure-policy",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("x:{TOKEN}"),
        &format!("docker://{}/library/rich:latest", server.address()),
        &format!("oci:{}:rich", dest.display()),
    ]);
    let want: BTreeSet<String> = blobs_of("rich").into_iter().collect();
    assert_eq!(layout_blobs(&dest), want);
    for d in &want {
        let bytes = std::fs::read(dest.join("blobs/sha256").join(&d[7..])).unwrap();
        assert_eq!(&microsandbox::Digest::of(&bytes).to_string(), d);
    }
    // Without the token, skopeo is refused.
    let refused = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/library/rich:latest", server.address()),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    server.stop();
}

/// A docker config whose `auths` give the served cache's token.
fn docker_config(dir: &Path, host: &str) -> PathBuf {
    let auth = base64_of(&format!("x:{TOKEN}"));
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    dir.to_owned()
}

#[test]
fn a_peer_pulls_through_the_served_cache_while_the_origin_is_down() {
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    let image = format!("{}/team/rich:1", reg.addr);
    let first = home();
    first
        .backend
        .pull_image(&image, &Default::default())
        .unwrap();
    let server = tcp(&first);
    drop(reg); // the origin stops
    let peer = home();
    let config = tempfile::tempdir().unwrap();
    let mirrors = [(
        image.split('/').next().unwrap().to_owned(),
        vec![format!("http://{}", server.address())],
    )]
    .into();
    let options = PullOptions {
        mirrors: Some(mirrors),
        docker_config: Some(docker_config(config.path(), server.address())),
        policy: PullPolicy::Always,
        ..Default::default()
    };
    let pulled = peer.backend.pull_image(&image, &options).unwrap();
    assert_eq!(pulled.manifest_digest().unwrap(), digest_of("rich"));
    assert_eq!(peer.blob_names(), first.blob_names());
    peer.assert_invariants();
    // A third home pulls through the second, which is served too.
    let second = tcp(&peer);
    let third = home();
    let options = PullOptions {
        mirrors: Some(
            [(
                image.split('/').next().unwrap().to_owned(),
                vec![format!("http://{}", second.address())],
            )]
            .into(),
        ),
        docker_config: Some(docker_config(config.path(), second.address())),
        ..Default::default()
    };
    let again = third.backend.pull_image(&image, &options).unwrap();
    assert_eq!(again.manifest_digest(), pulled.manifest_digest());
    second.stop();
    server.stop();
}
