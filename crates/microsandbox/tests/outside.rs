//! What outside use found: a wrong-platform pull, trusted reads, two
//! spellings of one reference, and work done again that the cache had
//! already done. Each test failed before its fix.

mod common;

use std::fs;
use std::sync::{Arc, Mutex};

use common::registry::*;
use common::*;
use microsandbox::{
    ErrorKind, LoadOptions, Phase, Progress, ProgressFn, PruneOptions, PullOptions, PullPolicy,
};

fn pull(platform: &str, policy: PullPolicy) -> PullOptions {
    PullOptions {
        platform: Some(microsandbox::Platform::parse(platform).unwrap()),
        policy,
        ..Default::default()
    }
}

#[test]
fn a_cached_tag_answers_a_pull_only_for_its_own_platform() {
    let reg = registry();
    push(&reg, "multiarch:multi", "deb:multi", true);
    let name = format!("{}/deb:multi", reg.addr);
    let h = home();
    let arm = h
        .backend
        .pull_image(&name, &pull("linux/arm64", PullPolicy::Missing))
        .unwrap();
    assert_eq!(arm.manifest_digest().unwrap(), digest_of("multiarch/arm64"));
    // Cached as arm64: an amd64 pull (the default policy, or never) must
    // not hand back the arm64 manifest.
    let err = h
        .backend
        .pull_image(&name, &pull("linux/amd64", PullPolicy::Never))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PlatformNotFound, "{err}");
    assert!(err.to_string().contains("linux/arm64"), "{err}");
    let amd = h
        .backend
        .pull_image(&name, &pull("linux/amd64", PullPolicy::Missing))
        .unwrap();
    assert_eq!(amd.manifest_digest().unwrap(), digest_of("multiarch/amd64"));
    // A platform the index lacks is PlatformNotFound, not the cached one.
    let err = h
        .backend
        .pull_image(&name, &pull("linux/s390x", PullPolicy::Missing))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PlatformNotFound, "{err}");
    // The matching platform is answered from the cache.
    let again = h
        .backend
        .pull_image(&name, &pull("linux/amd64", PullPolicy::Never))
        .unwrap();
    assert_eq!(
        again.manifest_digest().unwrap(),
        digest_of("multiarch/amd64")
    );
}

#[test]
fn a_tampered_config_or_layer_is_a_corrupt_cache_naming_the_blob() {
    let config = expected()["rich"]["configDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = |h: &Home| {
        h.oci()
            .join("blobs/sha256")
            .join(config.trim_start_matches("sha256:"))
    };
    for (what, replacement) in [
        ("other JSON of another size", br#"{"architecture":"amd64","os":"linux","config":{"Env":["EVIL=1"]},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec()),
        ("other JSON of the same size", {
            let h = home();
            h.load("rich");
            let mut b = fs::read(path(&h)).unwrap();
            let i = b.iter().position(|&c| c == b'/').unwrap();
            b[i] = b'_';
            b
        }),
    ] {
        let h = home();
        h.load("rich");
        fs::write(path(&h), &replacement).unwrap();
        let err = h.backend.inspect_image("rich").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CorruptCache, "{what}: {err}");
        assert!(err.to_string().contains(&config), "{what}: {err}");
        let out = tempfile::tempdir().unwrap();
        let tar = out.path().join("rich.tar");
        let err = h
            .backend
            .save_images(&["rich".to_owned()], &tar, &Default::default())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CorruptCache, "{what}: {err}");
        assert!(!tar.exists(), "{what}: a save of tampered content left an archive");
    }
    // A layer of the right length and the wrong bytes: save copies it out,
    // finds the digest wrong, and leaves no archive (nor a temporary).
    let h = home();
    h.load("rich");
    let layer = expected()["rich"]["layers"][0].as_str().unwrap().to_owned();
    let lpath = h
        .oci()
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&lpath).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&lpath, &bytes).unwrap();
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("rich.tar");
    let err = h
        .backend
        .save_images(&["rich".to_owned()], &tar, &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptCache, "{err}");
    assert!(err.to_string().contains(&layer), "{err}");
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
}

/// Every progress event of an operation.
fn recorder() -> (ProgressFn, Arc<Mutex<Vec<Progress>>>) {
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let into = seen.clone();
    (
        ProgressFn::new(move |p| into.lock().unwrap().push(p.clone())),
        seen,
    )
}

#[test]
fn a_reload_of_a_cached_archive_decompresses_and_writes_no_layer() {
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("rich.tar");
    skopeo(&[
        "copy",
        "--insecure-policy",
        &format!("oci:{}:rich", fixtures().join("rich").display()),
        &format!("oci-archive:{}:rich", tar.display()),
    ]);
    let h = home();
    let (progress, seen) = recorder();
    let options = LoadOptions {
        progress: Some(progress),
        ..Default::default()
    };
    h.backend.load_images(&tar, &options).unwrap();
    let verified = |seen: &[Progress]| seen.iter().filter(|p| p.phase == Phase::Verify).count();
    let written = |seen: &[Progress]| seen.iter().filter(|p| p.phase == Phase::Write).count();
    assert!(
        verified(&seen.lock().unwrap()) > 0,
        "the first load checks the gzip layers"
    );
    seen.lock().unwrap().clear();
    h.backend.load_images(&tar, &options).unwrap();
    let events = seen.lock().unwrap();
    assert_eq!(
        verified(&events),
        0,
        "a cached layer was decompressed again: {events:?}"
    );
    assert_eq!(
        written(&events),
        0,
        "a cached blob was written again: {events:?}"
    );
    h.assert_invariants();
}

#[test]
fn a_fully_cached_pull_asks_the_registry_for_its_manifest_alone() {
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    let (proxy, _hits, log) = logging_proxy(reg.addr.clone(), "never".into(), Fault::None);
    let h = home();
    let name = format!("{proxy}/team/rich:1");
    h.backend.pull_image(&name, &Default::default()).unwrap();
    log.lock().unwrap().clear();
    let (progress, seen) = recorder();
    let always = PullOptions {
        policy: PullPolicy::Always,
        progress: Some(progress),
        ..Default::default()
    };
    let again = h.backend.pull_image(&name, &always).unwrap();
    assert_eq!(again.manifest_digest().unwrap(), digest_of("rich"));
    let requests = log.lock().unwrap().clone();
    assert!(
        requests.iter().all(|r| r.contains("/manifests/")),
        "fetched more than the manifest: {requests:?}"
    );
    let events = seen.lock().unwrap();
    assert!(
        events.iter().all(|p| p.phase == Phase::Commit),
        "worked on cached blobs again: {events:?}"
    );
}

#[test]
fn one_function_names_references_in_every_report() {
    let h = home();
    h.load("rich");
    // An entry as another tool tags it: ref.name is the bare tag.
    let path = h.oci().join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let mut other = index["manifests"][0].clone();
    other["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": "umoci-tag" });
    index["manifests"].as_array_mut().unwrap().push(other);
    fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    let listed: Vec<String> = h
        .backend
        .list_images()
        .unwrap()
        .iter()
        .map(|i| i.reference().to_owned())
        .collect();
    assert!(
        listed.contains(&"umoci-tag:latest".to_owned()),
        "{listed:?}"
    );
    let usage: Vec<String> = h
        .backend
        .disk_usage()
        .unwrap()
        .images
        .iter()
        .map(|i| i.reference.clone())
        .collect();
    assert!(usage.contains(&"umoci-tag:latest".to_owned()), "{usage:?}");
    let dry = h
        .backend
        .prune_images_with(&PruneOptions {
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    let removed: Vec<String> = dry.removed.iter().map(|r| r.reference.clone()).collect();
    assert!(
        removed.contains(&"umoci-tag:latest".to_owned()),
        "{removed:?}"
    );
}

#[test]
fn another_tools_gc_keeps_what_a_lease_pins() {
    let h = home();
    h.load("rich");
    let lease = h
        .backend
        .acquire_lease("rich", &Default::default())
        .unwrap();
    h.backend.remove_image("rich", true).unwrap();
    let umoci_gc = || {
        let out = std::process::Command::new("umoci")
            .args(["gc", "--layout"])
            .arg(h.oci())
            .output()
            .expect("umoci is required (apt-get install umoci)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    umoci_gc();
    for blob in blobs_of("rich") {
        assert!(
            h.blob_names().contains(blob.trim_start_matches("sha256:")),
            "umoci gc took {blob} of a leased image"
        );
    }
    // The record is no image: list, df and the index's names ignore it.
    assert!(h.backend.list_images().unwrap().is_empty());
    assert!(h.backend.disk_usage().unwrap().images.is_empty());
    // Released, the record goes, and so does the content under umoci gc.
    h.backend.release_lease(&lease.id).unwrap();
    let index = fs::read_to_string(h.oci().join("index.json")).unwrap();
    assert!(!index.contains("dev.microsandbox.pinned"), "{index}");
    umoci_gc();
    assert!(h.blob_names().is_empty(), "{:?}", h.blob_names());
}

#[test]
fn registries_hear_who_is_asking() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Write as _;
        if let Some(Ok(mut client)) = listener.incoming().next() {
            if let Some(head) = read_request_head(&mut client) {
                let _ = tx.send(head);
            }
            let _ = client.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let h = home();
    let _ = h
        .backend
        .pull_image(&format!("{addr}/a/b:1"), &Default::default());
    let head = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    let want = format!("user-agent: microsandbox/{}", env!("CARGO_PKG_VERSION"));
    assert!(head.to_ascii_lowercase().contains(&want), "{head}");
}

#[test]
fn a_docker_format_save_names_its_tags_in_full() {
    let h = home();
    h.load("rich");
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("d.tar");
    h.backend
        .save_images(
            &["rich".to_owned()],
            &tar,
            &microsandbox::SaveOptions {
                format: microsandbox::SaveFormat::Docker,
                ..Default::default()
            },
        )
        .unwrap();
    let out = std::process::Command::new("tar")
        .args(["-xOf"])
        .arg(&tar)
        .arg("manifest.json")
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["docker.io/library/rich:latest"])
    );
}

#[test]
fn short_digests_name_images_as_docker_image_ids_do() {
    let h = home();
    h.load("rich");
    h.load("pair");
    let rich = digest_of("rich");
    let short = &rich[7..19];
    assert_eq!(
        h.backend.get_image(short).unwrap().reference(),
        "rich:latest"
    );
    assert_eq!(
        h.backend
            .inspect_image(&rich[..16])
            .unwrap()
            .handle
            .manifest_digest()
            .unwrap(),
        rich
    );
    let lease = h.backend.acquire_lease(short, &Default::default()).unwrap();
    assert_eq!(lease.manifest_digest.as_deref(), Some(rich.as_str()));
    h.backend.release_lease(&lease.id).unwrap();
    let work = tempfile::tempdir().unwrap();
    h.backend
        .save_images(
            &[short.to_owned()],
            &work.path().join("r.tar"),
            &Default::default(),
        )
        .unwrap();
    // A prefix of several manifests is ambiguous, naming them.
    let app = digest_of("pair/app");
    let base = digest_of("pair/base");
    let common = rich[7..]
        .chars()
        .zip(app[7..].chars())
        .take_while(|(a, b)| a == b)
        .count();
    if common == 0 {
        let err = h.backend.get_image("sha256:").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidReference, "{err}");
    }
    let all = [rich.as_str(), app.as_str(), base.as_str()];
    for one in all {
        for other in all.iter().filter(|o| **o != one) {
            let shared = one[7..]
                .chars()
                .zip(other[7..].chars())
                .take_while(|(a, b)| a == b)
                .count();
            if shared >= 1 {
                let prefix = format!("sha256:{}", &one[7..7 + shared]);
                let err = h.backend.get_image(&prefix).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidReference, "{err}");
                assert!(
                    err.to_string().contains(one) && err.to_string().contains(other),
                    "{err}"
                );
            }
        }
    }
    // Short hex that names no manifest is a name that is not there.
    assert_eq!(
        h.backend.get_image("ffffffffffff").unwrap_err().kind(),
        ErrorKind::ImageNotFound
    );
    h.backend.remove_image(short, false).unwrap();
    assert!(h.backend.get_image("rich").is_err());
}

#[test]
fn inspect_shows_what_skopeo_and_podman_show_users() {
    let h = home();
    h.load("rich");
    let d = h.backend.inspect_image("rich").unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(fixtures().join("rich.config.json")).unwrap()).unwrap();
    assert_eq!(
        d.created,
        microsandbox::testing::parse_utc(config["created"].as_str().unwrap())
    );
    assert_eq!(d.author.as_deref(), config["author"].as_str());
    assert_eq!(d.history.len(), config["history"].as_array().unwrap().len());
    assert_eq!(
        d.history[0].created_by.as_deref(),
        config["history"][0]["created_by"].as_str()
    );
    let ports: Vec<String> = config["config"]["ExposedPorts"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(ports, ["8080/tcp"], "the fixture declares a port");
    assert_eq!(d.config.as_ref().unwrap().exposed_ports, ports);
    let volumes: Vec<String> = config["config"]["Volumes"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(volumes, ["/app/data"], "the fixture declares a volume");
    assert_eq!(d.config.as_ref().unwrap().volumes, volumes);
}
