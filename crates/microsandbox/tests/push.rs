//! Pushes to a real registry: Debian's `docker-registry` (distribution) on
//! 127.0.0.1, with no auth, htpasswd auth and a token server, read back
//! with skopeo; and the faults a push must live through (the registry
//! killed mid-upload, a 401 mid-push, a 416 on a chunk) from a proxy that
//! forwards requests with their bodies.

mod common;

use std::sync::{Arc, Mutex};

use common::registry::*;
use common::*;
use microsandbox::{Digest, ErrorKind, PushOptions, PushProgress, PushProgressFn, PushReport};

pub use common::registry::Registry;

fn to(dest: &str) -> PushOptions {
    PushOptions {
        to: Some(dest.to_owned()),
        ..Default::default()
    }
}

/// What skopeo reads of `reference`: the raw manifest's digest and the
/// raw config's digest.
fn read_back(reference: &str, creds: Option<&str>) -> (String, String) {
    let mut args = vec!["inspect", "--tls-verify=false", "--raw"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    let image = format!("docker://{reference}");
    args.push(&image);
    let manifest = skopeo(&args);
    args.insert(3, "--config");
    let config = skopeo(&args);
    (
        Digest::of(manifest.as_bytes()).to_string(),
        Digest::of(config.as_bytes()).to_string(),
    )
}

fn rich_config() -> String {
    expected()["rich"]["configDigest"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn pushes_whole_and_in_chunks_and_skopeo_reads_the_same_digests() {
    let (a, b) = (registry(), registry());
    let h = home();
    h.load("rich");
    let before = h.snapshot();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let whole = h
        .backend
        .push_image(
            "rich",
            &PushOptions {
                progress: Some(PushProgressFn::new(move |e| {
                    seen.lock().unwrap().push(e.clone())
                })),
                chunk_bytes: Some(0),
                ..to(&format!("{}/team/rich:1", a.addr))
            },
        )
        .unwrap();
    assert_eq!(whole.manifest_digest, digest_of("rich"));
    assert_eq!((whole.blobs_uploaded, whole.blobs_skipped), (4, 0));
    assert_eq!(whole.bytes_uploaded, total_size("rich") - 654);
    let chunked = h
        .backend
        .push_image(
            "docker.io/library/rich:latest",
            &PushOptions {
                chunk_bytes: Some(100),
                ..to(&format!("{}/team/rich:1", b.addr))
            },
        )
        .unwrap();
    let fields = |r: &PushReport| {
        (
            r.manifest_digest.clone(),
            r.blobs_uploaded,
            r.bytes_uploaded,
        )
    };
    assert_eq!(fields(&chunked), fields(&whole));
    assert_eq!(chunked.reference, format!("{}/team/rich:1", b.addr));
    for reg in [&a, &b] {
        let (m, c) = read_back(&format!("{}/team/rich:1", reg.addr), None);
        assert_eq!((m, c), (digest_of("rich"), rich_config()));
    }
    // A second push finds every blob there.
    let again = h
        .backend
        .push_image("rich", &to(&format!("{}/team/rich:1", a.addr)))
        .unwrap();
    assert_eq!((again.blobs_skipped, again.bytes_uploaded), (4, 0));
    // Nothing of it is recorded in the cache: no lease, no temporary.
    h.assert_untouched(&before, "push");
    assert!(h.backend.list_leases().unwrap().is_empty());
    assert!(h.tmp_names().is_empty());
    let events = events.lock().unwrap();
    assert!(matches!(
        &events[0],
        PushProgress::Resolved { layer_count: 3, .. }
    ));
    let done: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            PushProgress::BlobComplete {
                layer_index, how, ..
            } => Some((*layer_index, *how)),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 4, "{events:?}");
    assert!(done.iter().all(|(_, how)| *how == "uploaded"));
    assert!(matches!(events.last(), Some(PushProgress::Complete { .. })));
    // What the registry holds pulls back whole.
    let other = home();
    let pulled = other
        .backend
        .pull_image(&format!("{}/team/rich:1", b.addr), &Default::default())
        .unwrap();
    assert_eq!(pulled.manifest_digest().unwrap(), digest_of("rich"));
    other.assert_invariants();
}

#[test]
fn blobs_of_another_repository_are_mounted_and_an_index_goes_whole() {
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    let h = home();
    let source = format!("{}/team/rich:1", reg.addr);
    h.backend.pull_image(&source, &Default::default()).unwrap();
    // The default destination is the image's own reference.
    let same = h.backend.push_image(&source, &Default::default()).unwrap();
    assert_eq!(
        (same.blobs_skipped, same.reference.as_str()),
        (4, source.as_str())
    );
    let moved = h
        .backend
        .push_image(&source, &to(&format!("{}/other/rich:2", reg.addr)))
        .unwrap();
    assert_eq!((moved.blobs_mounted, moved.bytes_uploaded), (4, 0));
    let (m, c) = read_back(&format!("{}/other/rich:2", reg.addr), None);
    assert_eq!((m, c), (digest_of("rich"), rich_config()));

    // An index another tool put into the cache, with every platform.
    let src = format!("oci:{}:multi", fixtures().join("multiarch").display());
    let dst = format!("oci:{}:docker.io/library/multi:1", h.oci().display());
    skopeo(&["copy", "--insecure-policy", "--all", &src, &dst]);
    let index = h
        .backend
        .push_image("multi:1", &to(&format!("{}/multi:1", reg.addr)))
        .unwrap();
    let want = expected()["multiarch/index"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(index.manifest_digest, want);
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/multi:1", reg.addr),
    ]);
    assert_eq!(Digest::of(raw.as_bytes()).to_string(), want);
    let arm = home();
    let pulled = arm
        .backend
        .pull_image(
            &format!("{}/multi:1", reg.addr),
            &microsandbox::PullOptions {
                platform: Some(microsandbox::Platform::parse("linux/arm64").unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        pulled.manifest_digest().unwrap(),
        digest_of("multiarch/arm64")
    );
}

#[test]
fn refusals_have_their_codes_and_change_nothing() {
    let reg = registry();
    let h = home();
    h.load("rich");
    let err = h
        .backend
        .push_image("absent:1", &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageNotFound, "{err}");
    let wrong = format!("{}/x@{}", reg.addr, digest_of("pair/base"));
    let err = h.backend.push_image("rich", &to(&wrong)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let err = h.backend.push_image("rich", &to("Bad Name")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidReference, "{err}");
    // A pull-through cache takes no pushes.
    let cache = start_registry(
        tempfile::tempdir().unwrap(),
        &format!("proxy:\n  remoteurl: http://{}\n", reg.addr),
    );
    let err = h
        .backend
        .push_image("rich", &to(&format!("{}/team/rich:1", cache.addr)))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    // A layer of the cache changed behind its back is never completed.
    let before = h.snapshot();
    let layer = expected()["rich"]["layers"][2].as_str().unwrap().to_owned();
    let path = h.oci().join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let dest = format!("{}/bad/rich:1", reg.addr);
    let err = h.backend.push_image("rich", &to(&dest)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptCache, "{err}");
    let head = ureq::head(&format!("http://{}/v2/bad/rich/blobs/{layer}", reg.addr))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(head.status(), 404);
    bytes[10] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    h.assert_untouched(&before, "failed push");
    assert!(h.backend.list_leases().unwrap().is_empty());
}

/// A docker config directory with `user:password` for `host`.
fn login(host: &str, user: &str, password: &str) -> tempfile::TempDir {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    dir
}

fn pushes_only_with_the_right_login(reg: &Registry, user: &str, password: &str) {
    let h = home();
    h.load("rich");
    let dest = format!("{}/private/rich:1", reg.addr);
    let with = |dir: &tempfile::TempDir, dest: &str| {
        h.backend.push_image(
            "rich",
            &PushOptions {
                docker_config: Some(dir.path().to_owned()),
                chunk_bytes: Some(256),
                ..to(dest)
            },
        )
    };
    let none = tempfile::tempdir().unwrap();
    let err = with(&none, &dest).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let err = with(&login(&reg.addr, user, "a-wrong-guess"), &dest).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.to_string().contains("a-wrong-guess"), "{err}");
    let right = login(&reg.addr, user, password);
    let pushed = with(&right, &dest).unwrap();
    assert_eq!(pushed.manifest_digest, digest_of("rich"));
    let creds = format!("{user}:{password}");
    assert_eq!(
        read_back(&dest, Some(&creds)),
        (digest_of("rich"), rich_config())
    );
    // Mounting from another repository asks the token for both.
    let other = home();
    other
        .backend
        .pull_image(
            &dest,
            &microsandbox::PullOptions {
                docker_config: Some(right.path().to_owned()),
                ..Default::default()
            },
        )
        .unwrap();
    let moved = other
        .backend
        .push_image(
            &dest,
            &PushOptions {
                docker_config: Some(right.path().to_owned()),
                ..to(&format!("{}/moved/rich:1", reg.addr))
            },
        )
        .unwrap();
    assert_eq!(moved.blobs_mounted, 4);
    let index = std::fs::read_to_string(h.oci().join("index.json")).unwrap();
    assert!(!index.contains(password));
}

#[test]
fn basic_auth_from_the_docker_config() {
    pushes_only_with_the_right_login(
        &registry_with(Some(("pusher", "s3cret-pw"))),
        "pusher",
        "s3cret-pw",
    );
}

#[test]
fn bearer_tokens_with_the_push_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (_token, auth) = token_server(dir.path(), "robot", "t0ken-pass");
    let reg = start_registry(dir, &auth);
    pushes_only_with_the_right_login(&reg, "robot", "t0ken-pass");
}

#[path = "push/faults.rs"]
mod faults;
