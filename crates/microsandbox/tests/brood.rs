//! brood-box's cache commands (`../shared/seeds/brood-box-cache-cli.txt`):
//! the orphans (`cache list`), the reachability collection (`cache gc`)
//! and the nuclear option (`cache purge`), on real caches.

mod common;

use std::process::Command;

use common::*;
use microsandbox::{ErrorKind, LeaseOptions, PruneOptions, PurgeOptions};

#[test]
fn orphans_are_what_a_dangling_prune_takes() {
    let h = home();
    h.load("pair");
    h.load("rich");
    assert!(h.backend.orphans().unwrap().is_empty());
    h.backend.remove_image("app", false).unwrap();
    let orphans = h.backend.orphans().unwrap();
    let exp = expected();
    let mut got: Vec<(String, &str)> = orphans.iter().map(|o| (o.digest.clone(), o.kind)).collect();
    got.sort();
    let mut want = vec![
        (
            exp["pair/app"]["manifestDigest"]
                .as_str()
                .unwrap()
                .to_owned(),
            "manifest",
        ),
        (
            exp["pair/app"]["configDigest"].as_str().unwrap().to_owned(),
            "config",
        ),
        (
            exp["pair/app"]["layers"][1].as_str().unwrap().to_owned(),
            "layer",
        ),
    ];
    want.sort();
    assert_eq!(got, want);
    // Sizes are allocated bytes, largest first, with the file's time.
    let digests: Vec<String> = orphans.iter().map(|o| o.digest.clone()).collect();
    assert_eq!(
        orphans.iter().map(|o| o.size_bytes).sum::<u64>(),
        h.allocated(&digests)
    );
    assert!(orphans
        .windows(2)
        .all(|w| w[0].size_bytes >= w[1].size_bytes));
    assert!(orphans.iter().all(|o| o.modified_at.is_some()));
    // A lease keeps what it pins out of the orphans.
    let lease = h
        .backend
        .acquire_lease("rich", &LeaseOptions::default())
        .unwrap();
    h.backend.remove_image("rich", true).unwrap();
    assert_eq!(h.backend.orphans().unwrap().len(), 3);
    // And the gc takes exactly them.
    let r = h
        .backend
        .prune_images_with(&PruneOptions {
            dangling: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        r.manifests_removed + r.configs_removed + r.layers_removed,
        3
    );
    assert_eq!(
        r.bytes_reclaimed.unwrap(),
        orphans.iter().map(|o| o.size_bytes).sum::<u64>()
    );
    assert!(h.backend.orphans().unwrap().is_empty());
    h.backend.release_lease(&lease.id).unwrap();
    assert_eq!(h.backend.orphans().unwrap().len(), blobs_of("rich").len());
}

#[test]
fn purge_leaves_an_empty_layout_other_tools_still_open() {
    let h = home();
    h.load("pair");
    h.load("rich");
    let lease = h
        .backend
        .acquire_lease(
            "rich",
            &LeaseOptions {
                id: Some("sbx-1".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let before = h.snapshot();
    let err = h.backend.purge(&PurgeOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageInUse, "{err}");
    assert!(err.to_string().contains("sandbox sbx-1"), "{err}");
    assert_eq!(h.snapshot(), before, "a refused purge changed the cache");
    assert_eq!(h.backend.list_leases().unwrap().len(), 1);
    // With force, the leases end first and everything goes.
    std::fs::write(
        h.dir.path().join("cache/tmp/ingest-dead"),
        b"left by a crash",
    )
    .unwrap();
    let r = h.backend.purge(&PurgeOptions { force: true }).unwrap();
    assert_eq!(r.image_refs_removed, 3);
    assert_eq!(r.expired_leases_removed, 1, "the lease it ended");
    assert_eq!(r.tmp_files_removed, 1);
    assert!(r.bytes_reclaimed.unwrap() > 0);
    assert!(h.blob_names().is_empty());
    assert!(h.tmp_names().is_empty());
    assert!(h.backend.list_leases().unwrap().is_empty());
    assert!(h.backend.list_images().unwrap().is_empty());
    assert!(!h.backend.release_lease(&lease.id).unwrap());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.oci().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));
    // umoci and skopeo still take the layout as one.
    let out = Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(h.oci())
        .output()
        .expect("umoci is required");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    skopeo(&[
        "copy",
        "--insecure-policy",
        &format!("oci:{}:rich", fixtures().join("rich").display()),
        &format!("oci:{}:again", h.oci().display()),
    ]);
    assert_eq!(h.refs(), ["again:latest"]);
    assert!(h.backend.verify(&Default::default()).unwrap().is_clean());
}
