//! Pulls from a real registry: Debian's `docker-registry` (distribution)
//! on 127.0.0.1, filled by skopeo.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::registry::*;
use common::*;
use microsandbox::{ErrorKind, PullOptions, PullPolicy};

/// A registry in proxy mode: a pull-through cache of `upstream`.
fn pull_through_cache(upstream: &str) -> Registry {
    start_registry(
        tempfile::tempdir().unwrap(),
        &format!("proxy:\n  remoteurl: http://{upstream}\n"),
    )
}

#[test]
fn pulls_images_and_indexes_with_the_registrys_digests() {
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    push(&reg, "multiarch:multi", "multi:1", true);
    let h = home();
    let rich = h
        .backend
        .pull_image(&format!("{}/team/rich:1", reg.addr), &Default::default())
        .unwrap();
    assert_eq!(rich.manifest_digest().unwrap(), digest_of("rich"));
    assert_eq!(rich.size_bytes().unwrap() as u64, total_size("rich"));
    assert_eq!(rich.reference(), format!("{}/team/rich:1", reg.addr));
    let d = h
        .backend
        .inspect_image(&format!("{}/team/rich:1", reg.addr))
        .unwrap();
    assert_eq!(
        d.config.as_ref().unwrap().stop_signal.as_deref(),
        Some("SIGQUIT")
    );
    h.assert_invariants();
    assert!(h.tmp_names().is_empty());
    assert!(h.backend.list_leases().unwrap().is_empty());

    let multi = format!("{}/multi:1", reg.addr);
    let amd = h.backend.pull_image(&multi, &Default::default()).unwrap();
    assert_eq!(amd.manifest_digest().unwrap(), digest_of("multiarch/amd64"));
    let other = home();
    let arm = other
        .backend
        .pull_image(
            &multi,
            &PullOptions {
                platform: Some(microsandbox::Platform::parse("linux/arm64").unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(arm.manifest_digest().unwrap(), digest_of("multiarch/arm64"));
    let err = other
        .backend
        .pull_image(
            &multi,
            &PullOptions {
                platform: Some(microsandbox::Platform::parse("linux/s390x").unwrap()),
                policy: PullPolicy::Always,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PlatformNotFound);

    // By digest, the manifest is checked against it.
    let by_digest = format!("{}/team/rich@{}", reg.addr, digest_of("rich"));
    let third = home();
    assert_eq!(
        third
            .backend
            .pull_image(&by_digest, &Default::default())
            .unwrap()
            .manifest_digest()
            .unwrap(),
        digest_of("rich")
    );
}

#[test]
fn policies_and_absent_images() {
    let reg = registry();
    push(&reg, "pair:base", "base:1", false);
    let name = format!("{}/base:1", reg.addr);
    let h = home();
    let never = PullOptions {
        policy: PullPolicy::Never,
        ..Default::default()
    };
    assert_eq!(
        h.backend.pull_image(&name, &never).unwrap_err().kind(),
        ErrorKind::ImageNotFound
    );
    let err = h
        .backend
        .pull_image(&format!("{}/base:nope", reg.addr), &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageNotFound, "{err}");
    let pulled = h.backend.pull_image(&name, &Default::default()).unwrap();
    assert_eq!(pulled.manifest_digest().unwrap(), digest_of("pair/base"));
    drop(reg);
    // `missing` and `never` answer from the cache without the registry.
    assert_eq!(
        h.backend.pull_image(&name, &Default::default()).unwrap(),
        pulled
    );
    assert_eq!(h.backend.pull_image(&name, &never).unwrap(), pulled);
    // `always` asks, and the registry is gone.
    let always = PullOptions {
        policy: PullPolicy::Always,
        ..Default::default()
    };
    let err = h.backend.pull_image(&name, &always).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RegistryError, "{err}");
    assert_eq!(h.backend.get_image(&name).unwrap(), pulled);
}

/// Pushes `pair:base` to a registry that asks for `user:password`, then
/// pulls it with no credentials, with a wrong password (`Unauthorized`
/// both times, the password in no message) and with the right one, from
/// docker config files; no secret lands in the cache.
fn pulls_only_with_the_right_login(reg: &Registry, user: &str, password: &str) {
    let src = format!("oci:{}", fixtures().join("pair:base").display());
    let dst = format!("docker://{}/private/base:1", reg.addr);
    let login = format!("{user}:{password}");
    skopeo(&[
        "copy",
        "--insecure-policy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &login,
        &src,
        &dst,
    ]);
    let name = format!("{}/private/base:1", reg.addr);
    let config = |pass: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        if let Some(pass) = pass {
            use base64::Engine as _;
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            std::fs::write(
                dir.path().join("config.json"),
                format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
            )
            .unwrap();
        }
        dir
    };
    let h = home();
    let pull = |dir: &tempfile::TempDir| {
        h.backend.pull_image(
            &name,
            &PullOptions {
                docker_config: Some(dir.path().to_owned()),
                ..Default::default()
            },
        )
    };
    for pass in [None, Some("a-wrong-guess")] {
        let err = pull(&config(pass)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
        assert!(!err.to_string().contains("a-wrong-guess"), "{err}");
    }
    let pulled = pull(&config(Some(password))).unwrap();
    assert_eq!(pulled.manifest_digest().unwrap(), digest_of("pair/base"));
    h.assert_invariants();
    // Nothing of the credentials lands in the cache.
    let index = std::fs::read_to_string(h.oci().join("index.json")).unwrap();
    assert!(!index.contains(password) && !index.contains("Bearer") && !index.contains("Basic"));
}

#[test]
fn basic_auth_credentials_come_from_the_docker_config() {
    let reg = registry_with(Some(("tester", "s3cret-pass")));
    pulls_only_with_the_right_login(&reg, "tester", "s3cret-pass");
}

#[test]
fn a_cut_transfer_resumes_and_a_corrupt_one_commits_nothing() {
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    let exp = expected();
    let layer = exp["rich"]["layers"][2].as_str().unwrap().to_owned();

    let (cut_addr, cut_hits) = faulty_proxy(reg.addr.clone(), layer.clone(), Fault::Cut);
    let h = home();
    let pulled = h
        .backend
        .pull_image(&format!("{cut_addr}/team/rich:1"), &Default::default())
        .unwrap();
    assert_eq!(pulled.manifest_digest().unwrap(), digest_of("rich"));
    assert!(
        cut_hits.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the blob was asked for again"
    );
    h.assert_invariants();

    let (bad_addr, _) = faulty_proxy(reg.addr.clone(), layer.clone(), Fault::Corrupt);
    let h = home();
    h.load("pair");
    let before = h.snapshot();
    let err = h
        .backend
        .pull_image(&format!("{bad_addr}/team/rich:1"), &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DigestMismatch, "{err}");
    assert!(err.to_string().contains(&layer), "{err}");
    assert_eq!(h.snapshot(), before);
    // Only verified downloads of other layers are left, for the next try;
    // never the corrupt one. A prune sweeps them once no pull pins them.
    let left = h.tmp_names();
    assert!(left.iter().all(|n| n.starts_with("partial-")), "{left:?}");
    assert!(!left.iter().any(|n| layer.ends_with(&n["partial-".len()..])));
    assert!(h.backend.list_leases().unwrap().is_empty());
    h.backend.prune_images().unwrap();
    assert!(h.tmp_names().is_empty());
}

#[test]
fn an_interrupted_pull_resumes_on_the_next_try() {
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    let exp = expected();
    let layers: Vec<String> = exp["rich"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    let largest = layers
        .iter()
        .max_by_key(|l| {
            std::fs::metadata(
                fixtures()
                    .join("rich/blobs/sha256")
                    .join(l.trim_start_matches("sha256:")),
            )
            .unwrap()
            .len()
        })
        .unwrap()
        .clone();
    // The first try: the largest layer is cut midway every time, so the
    // pull gives up after its retries.
    let (cut, _, _) = logging_proxy(reg.addr.clone(), largest.clone(), Fault::CutAlways);
    let h = home();
    let name = format!("{cut}/team/rich:1");
    let err = h
        .backend
        .pull_image(&name, &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RegistryError, "{err}");
    assert!(h.backend.list_images().unwrap().is_empty());
    // The second try, through a sound proxy on the same registry name:
    // the layers that were whole are not asked for again, and the cut one
    // is asked for from where its bytes stop.
    let (sound, _, log) = logging_proxy(reg.addr.clone(), String::new(), Fault::None);
    let options = PullOptions {
        mirrors: Some([(cut.clone(), vec![format!("http://{sound}")])].into()),
        ..Default::default()
    };
    let pulled = h.backend.pull_image(&name, &options).unwrap();
    assert_eq!(pulled.manifest_digest().unwrap(), digest_of("rich"));
    h.assert_invariants();
    assert!(h.tmp_names().is_empty(), "{:?}", h.tmp_names());
    let log = log.lock().unwrap().clone();
    let config = exp["rich"]["configDigest"].as_str().unwrap();
    let blob_requests: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("/blobs/") && !l.contains(config))
        .collect();
    assert_eq!(
        blob_requests.len(),
        1,
        "only the cut layer is fetched again: {log:?}"
    );
    assert!(blob_requests[0].contains(&largest), "{log:?}");
    let from: u64 = blob_requests[0]
        .split("bytes=")
        .nth(1)
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or_else(|| panic!("no range: {log:?}"));
    assert!(from > 0, "{log:?}");
}

#[test]
fn a_prune_racing_a_pull_takes_nothing_the_pull_needs() {
    let reg = registry();
    push(&reg, "pair:app", "team/app:1", false);
    let exp = expected();
    // The top layer comes slowly; meanwhile the base layer is already in
    // the cache, unreferenced, where a prune would take it if nothing
    // pinned it.
    let top = exp["pair/app"]["layers"][1].as_str().unwrap().to_owned();
    let top_file = top.trim_start_matches("sha256:").to_owned();
    let (slow, hits) = faulty_proxy(
        reg.addr.clone(),
        top,
        Fault::Slow(Duration::from_millis(1500)),
    );
    let h = home();
    h.load("pair");
    h.backend.remove_image("app", false).unwrap();
    h.backend.remove_image("base", false).unwrap();
    // The top layer must come from the registry: take it out as a prune
    // of that one orphan would.
    std::fs::remove_file(h.oci().join("blobs/sha256").join(&top_file)).unwrap();
    let backend = h.backend.clone();
    let name = format!("{slow}/team/app:1");
    let puller = std::thread::spawn(move || backend.pull_image(&name, &Default::default()));
    // Prune only once the pull has taken stock of the cache (it is
    // fetching the top layer): the base layer it counts on is in the cache,
    // unreferenced, and only the pull's pin keeps it there.
    while hits.load(std::sync::atomic::Ordering::SeqCst) == 0 && !puller.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Prunes that keep every reference and take all content nothing needs:
    // one that took references could also run after the pull has ended
    // and before the loop sees it, and take the image pulled (a plain
    // prune takes every reference no lease pins).
    let blobs_only = microsandbox::PruneOptions {
        dangling: true,
        ..Default::default()
    };
    let mut prunes = 0;
    while !puller.is_finished() {
        h.backend.prune_images_with(&blobs_only).unwrap();
        prunes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let pulled = puller.join().unwrap().unwrap();
    assert!(prunes > 3, "only {prunes} prunes ran during the pull");
    assert_eq!(pulled.manifest_digest().unwrap(), digest_of("pair/app"));
    let d = h
        .backend
        .inspect_image(&format!("{slow}/team/app:1"))
        .unwrap();
    assert_eq!(d.layers.len(), 2);
    h.assert_invariants();
    // Once the pull is done, the pin is gone.
    assert!(h.backend.list_leases().unwrap().is_empty());
}

/// The blob requests of a proxy's log: `(digest, range)` for each.
fn blob_gets(log: &Log) -> Vec<(String, String)> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|l| {
            let at = l.find("/blobs/")? + "/blobs/".len();
            let digest = l[at..].split_whitespace().next()?.to_owned();
            let range = l.split("range:").nth(1).unwrap_or("").trim().to_owned();
            Some((digest, range))
        })
        .collect()
}

#[test]
fn mirrors_serve_the_pull_and_the_origin_answers_what_they_cannot() {
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    // The name the pulls use is a counting proxy in front of the origin,
    // so the test sees every request that reaches the origin directly.
    let (origin, _, origin_log) = logging_proxy(reg.addr.clone(), String::new(), Fault::None);
    let name = format!("{origin}/team/rich:1");
    let cache = pull_through_cache(&reg.addr);
    let mirror = format!("http://{}", cache.addr);

    // Through the option: nothing reaches the origin from us.
    let h = home();
    let options = PullOptions {
        mirrors: Some([(origin.clone(), vec![mirror.clone()])].into()),
        ..Default::default()
    };
    let pulled = h.backend.pull_image(&name, &options).unwrap();
    assert_eq!(pulled.manifest_digest().unwrap(), digest_of("rich"));
    assert_eq!(pulled.reference(), name);
    h.assert_invariants();
    assert!(origin_log.lock().unwrap().is_empty());

    // Through the settings file of another home: the same.
    let other = home();
    std::fs::write(
        other.dir.path().join("registries.json"),
        format!(r#"{{"mirrors":{{"{origin}":["{mirror}"]}}}}"#),
    )
    .unwrap();
    let pulled = other
        .backend
        .pull_image(&name, &Default::default())
        .unwrap();
    assert_eq!(pulled.manifest_digest().unwrap(), digest_of("rich"));
    assert!(origin_log.lock().unwrap().is_empty());

    // A mirror that is down, then one that lacks the image: the pull goes
    // on to the origin.
    let empty = registry();
    let down = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let third = home();
    let options = PullOptions {
        mirrors: Some(
            [(
                origin.clone(),
                vec![format!("http://{down}"), format!("http://{}", empty.addr)],
            )]
            .into(),
        ),
        ..Default::default()
    };
    let pulled = third.backend.pull_image(&name, &options).unwrap();
    assert_eq!(pulled.manifest_digest().unwrap(), digest_of("rich"));
    third.assert_invariants();
    let reached = blob_gets(&origin_log);
    assert_eq!(
        reached.len(),
        expected()["rich"]["layers"].as_array().unwrap().len() + 1,
        "the layers and the config came from the origin: {reached:?}"
    );

    // A malformed mirror or settings file is refused before any request.
    let fourth = home();
    let bad = PullOptions {
        mirrors: Some([(origin.clone(), vec!["ftp://x".to_owned()])].into()),
        ..Default::default()
    };
    let err = fourth.backend.pull_image(&name, &bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    std::fs::write(fourth.dir.path().join("registries.json"), "{not json").unwrap();
    let err = fourth
        .backend
        .pull_image(&name, &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(fourth.backend.list_images().unwrap().is_empty());
}

#[test]
fn concurrent_pulls_of_one_image_fetch_each_blob_once() {
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    // Every blob answer is held back, so the pulls overlap.
    let (slow, _, log) = logging_proxy(
        reg.addr.clone(),
        "/blobs/".into(),
        Fault::Slow(Duration::from_millis(300)),
    );
    let h = home();
    let name = format!("{slow}/team/rich:1");
    let pullers: Vec<_> = (0..3)
        .map(|_| {
            let backend = h.backend.clone();
            let name = name.clone();
            std::thread::spawn(move || {
                backend.pull_image(
                    &name,
                    &PullOptions {
                        policy: PullPolicy::Always,
                        ..Default::default()
                    },
                )
            })
        })
        .collect();
    for p in pullers {
        assert_eq!(
            p.join().unwrap().unwrap().manifest_digest().unwrap(),
            digest_of("rich")
        );
    }
    h.assert_invariants();
    assert!(h.tmp_names().is_empty(), "{:?}", h.tmp_names());
    let exp = expected();
    let config = exp["rich"]["configDigest"].as_str().unwrap();
    let layers: Vec<String> = blob_gets(&log)
        .into_iter()
        .map(|(d, _)| d)
        .filter(|d| d != config)
        .collect();
    let distinct: std::collections::BTreeSet<&String> = layers.iter().collect();
    assert_eq!(
        layers.len(),
        distinct.len(),
        "a layer was fetched twice: {layers:?}"
    );
    assert_eq!(
        distinct.len(),
        exp["rich"]["layers"].as_array().unwrap().len()
    );
}

#[test]
fn bearer_tokens_come_from_the_registrys_token_server() {
    let dir = tempfile::tempdir().unwrap();
    let (_token, auth) = token_server(dir.path(), "robot", "t0ken-pass");
    let reg = start_registry(dir, &auth);
    pulls_only_with_the_right_login(&reg, "robot", "t0ken-pass");
}
