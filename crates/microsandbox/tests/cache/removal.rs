//! Remove, prune, leases and the cache lock, by the contract.

use super::*;

#[test]
fn remove_prune_and_leases_follow_the_contract() {
    let h = home();
    h.load("pair");
    let base = digest_of("pair/base");
    let lease = h
        .backend
        .acquire_lease(
            "base",
            &LeaseOptions {
                id: Some("sandbox-1".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(lease.kind, LeaseKind::Sandbox);
    assert_eq!(lease.manifest_digest.as_deref(), Some(base.as_str()));
    assert_eq!(lease.reference.as_deref(), Some("base:latest"));
    let used = h.backend.get_image("base").unwrap();
    assert_eq!(used.last_used_at(), Some(lease.created_at));

    let err = h.backend.remove_image("base", false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageInUse);
    assert!(err.to_string().contains("sandbox-1"), "{err}");
    assert!(h.backend.get_image("base").is_ok());

    h.backend.remove_image("base", true).unwrap();
    assert_eq!(
        h.backend.get_image("base").unwrap_err().kind(),
        ErrorKind::ImageNotFound
    );
    assert_eq!(
        h.backend.remove_image("base", true).unwrap_err().kind(),
        ErrorKind::ImageNotFound
    );

    // Prune takes `app` (not pinned) but keeps everything `base` needs.
    let exp = expected();
    let app_only: Vec<String> = [
        exp["pair/app"]["manifestDigest"].as_str().unwrap(),
        exp["pair/app"]["configDigest"].as_str().unwrap(),
        exp["pair/app"]["layers"][1].as_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec();
    let app_bytes = h.allocated(&app_only);
    let report = h.backend.prune_images().unwrap();
    assert_eq!(report.image_refs_removed, 1);
    assert_eq!(
        report.manifests_removed + report.configs_removed + report.layers_removed,
        app_only.len() as u32
    );
    assert_eq!(report.bytes_reclaimed.unwrap(), app_bytes);
    let blobs = h.blob_names();
    for d in std::iter::once(exp["pair/base"]["manifestDigest"].as_str().unwrap())
        .chain(std::iter::once(
            exp["pair/base"]["configDigest"].as_str().unwrap(),
        ))
        .chain(std::iter::once(
            exp["pair/base"]["layers"][0].as_str().unwrap(),
        ))
    {
        assert!(
            blobs.contains(d.trim_start_matches("sha256:")),
            "{d} was pruned"
        );
    }

    // The lease outlives the backend that made it.
    let other = microsandbox::LocalBackend::builder()
        .home(h.dir.path())
        .build_blocking()
        .unwrap();
    assert_eq!(other.list_leases().unwrap().len(), 1);
    assert!(other.release_lease("sandbox-1").unwrap());
    assert!(!other.release_lease("sandbox-1").unwrap());
    let report = h.backend.prune_images().unwrap();
    assert_eq!(report.image_refs_removed, 0);
    assert_eq!(report.manifests_removed, 1);
    assert_eq!(report.configs_removed, 1);
    assert_eq!(report.layers_removed, 1);
    assert!(h.blob_names().is_empty());
    h.assert_invariants();
}

#[test]
fn removing_one_of_two_names_of_a_leased_image_is_allowed() {
    let h = home();
    h.load("pair");
    // A second name on base's manifest, loaded through skopeo's copy.
    skopeo(&[
        "copy",
        "--insecure-policy",
        &format!("oci:{}:base", fixtures().join("pair").display()),
        &format!("oci:{}:docker.io/library/alias:latest", h.oci().display()),
    ]);
    h.backend
        .acquire_lease("base", &Default::default())
        .unwrap();
    h.backend.remove_image("alias", false).unwrap();
    assert_eq!(
        h.backend.remove_image("base", false).unwrap_err().kind(),
        ErrorKind::ImageInUse
    );
}

#[test]
fn expired_leases_pin_nothing_and_are_swept() {
    let h = home();
    h.load("rich");
    h.backend
        .acquire_lease(
            "rich",
            &LeaseOptions {
                expires_in: Some(Duration::from_millis(1)),
                kind: Some(LeaseKind::Snapshot),
                ..Default::default()
            },
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(h.backend.list_leases().unwrap().is_empty());
    let rich_bytes = h.allocated(&blobs_of("rich"));
    let report = h.backend.prune_images().unwrap();
    assert_eq!(report.image_refs_removed, 1);
    assert_eq!(report.expired_leases_removed, 1);
    assert_eq!(report.bytes_reclaimed.unwrap(), rich_bytes);
    assert!(fs::read_dir(h.dir.path().join("leases"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn a_held_lock_gives_busy_within_the_bound() {
    let h = home();
    h.load("rich");
    let impatient = microsandbox::LocalBackend::builder()
        .home(h.dir.path())
        .lock_timeout(Duration::from_millis(100))
        .build_blocking()
        .unwrap();
    let held = lock_file(
        &h.dir.path().join("cache/lock"),
        LockMode::Exclusive,
        Duration::from_secs(1),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let err = impatient.get_image("rich").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(
        impatient.remove_image("rich", false).unwrap_err().kind(),
        ErrorKind::Busy
    );
    drop(held);
    assert!(impatient.get_image("rich").is_ok());
}

#[test]
fn prune_sweeps_dead_writers_but_not_live_ones() {
    let h = home();
    h.load("rich");
    let tmp = h.dir.path().join("cache/tmp");
    fs::write(tmp.join("ingest-dead"), b"left by a crash").unwrap();
    let layout = microsandbox::testing::layout(&h.backend).unwrap();
    let live = microsandbox::testing::BlobWriter::create(&layout).unwrap();
    // A leftover of an interrupted atomic write of index.json.
    fs::write(h.oci().join(".index.json.tmp-0123"), b"{").unwrap();
    let lease = h
        .backend
        .acquire_lease("rich", &Default::default())
        .unwrap();
    let report = h.backend.prune_images().unwrap();
    assert_eq!(report.tmp_files_removed, 2);
    assert_eq!(h.tmp_names().len(), 1, "the live writer's file must stay");
    drop(live);
    assert!(h.tmp_names().is_empty());
    assert!(!h.oci().join(".index.json.tmp-0123").exists());
    h.backend.release_lease(&lease.id).unwrap();
}
