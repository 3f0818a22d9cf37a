//! Verify and repair on real images, each fault made by hand.

mod common;

use std::fs;

use common::*;
use microsandbox::{VerifyOptions, VerifyReport};

fn check(h: &Home) -> VerifyReport {
    h.backend.verify(&VerifyOptions::default()).unwrap()
}

fn repair(h: &Home) -> VerifyReport {
    h.backend.verify(&VerifyOptions { repair: true }).unwrap()
}

fn blob(h: &Home, digest: &str) -> std::path::PathBuf {
    h.oci()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

#[test]
fn a_sound_cache_is_clean_and_repair_changes_nothing() {
    let h = home();
    h.load("pair");
    h.load("rich");
    let r = check(&h);
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.blobs_checked as usize, h.blob_names().len());
    assert!(r.bytes_checked > 0);
    let before = h.snapshot();
    let r = repair(&h);
    assert!(r.is_clean() && r.quarantined.is_empty() && r.removed_references.is_empty());
    assert_eq!(h.snapshot(), before);
}

#[test]
fn a_corrupt_layer_is_found_and_repair_takes_only_what_it_breaks() {
    let h = home();
    h.load("pair");
    h.load("rich");
    h.load("skopeo"); // copied:latest, rich's manifest under another name
    let layer = expected()["rich"]["layers"][0].as_str().unwrap().to_owned();
    let path = blob(&h, &layer);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&path, bytes).unwrap();
    let r = check(&h);
    assert_eq!(r.corrupt_blobs, vec![layer.clone()]);
    assert_eq!(r.dangling_references, ["rich:latest", "copied:latest"]);
    assert!(r.missing_blobs.is_empty());
    let r = repair(&h);
    assert_eq!(r.quarantined, vec![layer.clone()]);
    let mut removed = r.removed_references.clone();
    removed.sort();
    assert_eq!(removed, ["copied:latest", "rich:latest"]);
    assert!(!path.exists());
    assert!(h
        .dir
        .path()
        .join("cache/quarantine")
        .join(layer.trim_start_matches("sha256:"))
        .is_file());
    // The whole references stay and serve.
    assert_eq!(h.refs(), ["app:latest", "base:latest"]);
    h.backend.inspect_image("app").unwrap();
    assert!(check(&h).is_clean());
    h.assert_invariants();
    // Loading the image again brings it back whole.
    h.load("rich");
    assert!(check(&h).is_clean());
}

#[test]
fn missing_blobs_symlinks_strays_and_bad_leases_are_reported() {
    let h = home();
    h.load("pair");
    h.load("rich");
    let exp = expected();
    // A leased image whose reference went (force) and whose config is lost.
    h.backend
        .acquire_lease("base", &Default::default())
        .unwrap();
    h.backend.remove_image("base", true).unwrap();
    let base_config = exp["pair/base"]["configDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    // app shares base's layer, not its config.
    fs::remove_file(blob(&h, &base_config)).unwrap();
    // rich loses a layer.
    let rich_layer = exp["rich"]["layers"][1].as_str().unwrap().to_owned();
    fs::remove_file(blob(&h, &rich_layer)).unwrap();
    // A symlink where a blob should be (never followed, never served).
    let outside = tempfile::NamedTempFile::new().unwrap();
    let fake = format!("sha256:{}", "ab".repeat(32));
    std::os::unix::fs::symlink(outside.path(), blob(&h, &fake)).unwrap();
    // Leftovers: a dead writer's file, an interrupted atomic write, a lease
    // that does not parse.
    fs::write(h.dir.path().join("cache/tmp/ingest-dead"), b"half").unwrap();
    fs::write(h.oci().join(".index.json.tmp-0badc0de"), b"{").unwrap();
    fs::write(h.dir.path().join("leases/broken.json"), b"{not json").unwrap();

    let r = check(&h);
    assert_eq!(r.corrupt_blobs, vec![fake.clone()]);
    let mut missing = r.missing_blobs.clone();
    missing.sort();
    let mut want = vec![base_config.clone(), rich_layer.clone()];
    want.sort();
    assert_eq!(missing, want);
    assert_eq!(r.dangling_references, ["rich:latest"]);
    assert!(
        r.stray_tmp_files.contains(&"tmp/ingest-dead".to_owned()),
        "{r:?}"
    );
    assert!(
        r.stray_tmp_files
            .iter()
            .any(|f| f.starts_with("oci/.index.json")),
        "{r:?}"
    );
    assert_eq!(r.bad_leases, ["broken.json"]);
    // The symlink's target was never touched.
    let r = repair(&h);
    assert_eq!(r.quarantined, [fake]);
    assert_eq!(r.removed_references, ["rich:latest"]);
    assert!(outside.path().exists());
    assert!(fs::symlink_metadata(blob(&h, &format!("sha256:{}", "ab".repeat(32)))).is_err());
}

#[test]
fn verify_runs_beside_a_reader_and_repair_needs_the_lock() {
    let h = home();
    h.load("rich");
    let r = check(&h);
    assert!(r.is_clean());
    // A repair waits for the exclusive lock like any writer: here it is
    // free, and the cache stays sound.
    assert!(repair(&h).is_clean());
    h.assert_invariants();
}
