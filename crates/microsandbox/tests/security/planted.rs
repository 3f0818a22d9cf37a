//! Files an attacker plants in the home: hard links and second names in
//! tmp/, links at a blob's or a save's name, FIFOs as sources, leases with
//! odd times.

use super::*;

#[test]
fn a_hard_link_planted_in_tmp_is_never_written_or_locked() {
    use common::registry::{push, registry};
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    let h = home();
    // The first layer's partial download, hard-linked to a file elsewhere.
    let exp = expected();
    let layer = exp["rich"]["layers"][0].as_str().unwrap();
    let size = fs::metadata(fixtures().join("rich/blobs/sha256").join(&layer[7..]))
        .unwrap()
        .len();
    microsandbox::testing::layout(&h.backend).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let precious = outside.path().join("precious");
    fs::write(&precious, b"precious").unwrap();
    fs::hard_link(
        &precious,
        h.dir
            .path()
            .join(format!("cache/tmp/partial-{}-{size}", &layer[7..])),
    )
    .unwrap();
    let err = h
        .backend
        .pull_image(&format!("{}/team/rich:1", reg.addr), &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptCache, "{err}");
    assert!(err.to_string().contains("hard link"), "{err}");
    assert_eq!(fs::read(&precious).unwrap(), b"precious");
}

#[test]
fn prune_drops_a_second_name_in_tmp_and_leaves_its_file_alone() {
    let h = home();
    h.load("rich");
    // What a commit killed between linking its temporary into blobs/ and
    // dropping the temporary's name leaves, and what a planted link is.
    let blob = blobs_of("rich")[0].trim_start_matches("sha256:").to_owned();
    let tmp = h.dir.path().join("cache/tmp");
    let blob_path = h.oci().join("blobs/sha256").join(&blob);
    fs::hard_link(&blob_path, tmp.join("ingest-killed-mid-commit")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let precious = outside.path().join("precious");
    fs::write(&precious, b"precious").unwrap();
    fs::hard_link(&precious, tmp.join("ingest-planted")).unwrap();
    let r = h.backend.verify(&VerifyOptions::default()).unwrap();
    assert_eq!(r.stray_tmp_files.len(), 2, "{r:?}");
    h.backend
        .acquire_lease("rich", &LeaseOptions::default())
        .unwrap();
    let report = h.backend.prune_images().unwrap();
    assert_eq!(report.tmp_files_removed, 2);
    assert!(h.tmp_names().is_empty(), "{:?}", h.tmp_names());
    assert_eq!(fs::read(&precious).unwrap(), b"precious");
    assert!(blob_path.is_file());
    assert!(h
        .backend
        .verify(&VerifyOptions::default())
        .unwrap()
        .is_clean());
}

#[test]
fn a_lease_expiring_at_a_time_with_an_offset_still_pins() {
    let h = home();
    h.load("rich");
    let lease = h
        .backend
        .acquire_lease(
            "rich",
            &LeaseOptions {
                id: Some("sbx-offset".into()),
                expires_in: Some(Duration::from_secs(3600)),
                ..Default::default()
            },
        )
        .unwrap();
    let file = h.dir.path().join("leases/sbx-offset.json");
    let mut record: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    record["expiresAt"] = "2999-01-01T00:00:00+01:00".into();
    fs::write(&file, serde_json::to_vec(&record).unwrap()).unwrap();
    let report = h.backend.prune_images().unwrap();
    assert_eq!(report.expired_leases_removed, 0);
    assert!(file.is_file());
    for blob in blobs_of("rich") {
        assert!(h.blob_names().contains(blob.trim_start_matches("sha256:")));
    }
    // A time that does not read at all stops prune instead.
    record["expiresAt"] = "2999-01-01".into();
    fs::write(&file, serde_json::to_vec(&record).unwrap()).unwrap();
    let err = h.backend.prune_images().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptCache, "{err}");
    fs::remove_file(&file).unwrap();
    assert!(!h.backend.release_lease(&lease.id).unwrap());
}

#[test]
fn save_never_replaces_a_link_and_never_the_home() {
    let h = home();
    h.load("rich");
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("target");
    fs::write(&target, b"kept").unwrap();
    let link = out.path().join("link.tar");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = h
        .backend
        .save_images(&["rich".to_owned()], &link, &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(fs::read(&target).unwrap(), b"kept");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    // The home's own name, when the home is a link the caller made.
    let via = out.path().join("home-link");
    std::os::unix::fs::symlink(h.dir.path(), &via).unwrap();
    let b = LocalBackend::builder().home(&via).build_blocking().unwrap();
    let err = b
        .save_images(&["rich".to_owned()], &via, &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(b.list_images().unwrap().len(), 1);
}

#[test]
fn a_link_planted_at_a_blob_name_is_a_corrupt_cache_not_busy() {
    let h = home();
    h.load("rich");
    let config = expected()["rich"]["configDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = h.oci().join("blobs/sha256").join(&config[7..]);
    let len = fs::metadata(&blob).unwrap().len() as usize;
    h.backend.remove_image("rich", false).unwrap();
    fs::remove_file(&blob).unwrap();
    // A link whose target text has the blob's length.
    std::os::unix::fs::symlink("x".repeat(len), &blob).unwrap();
    let err = h
        .backend
        .load_images(&fixtures().join("rich"), &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptCache, "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn a_fifo_given_as_a_source_is_refused_at_once() {
    let work = tempfile::tempdir().unwrap();
    let fifo = work.path().join("in.tar");
    mkfifo(&fifo);
    let h = home();
    let b = h.backend.clone();
    let err = within(Duration::from_secs(10), move || {
        b.load_images(&fifo, &Default::default()).unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::InvalidArchive, "{err}");
}
