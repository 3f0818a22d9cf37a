//! The read-only serving calls a registry answers from (`served_manifest`,
//! `served_blob`, `served_tags`) on real fixtures: what a reference or a
//! lease keeps is served, checked, by descriptor; nothing else is, however
//! it is asked for. And MiniBox's archive format, both ways.

mod common;

use std::fs;
use std::io::Read;

use common::{blobs_of, digest_of, expected, fixtures, home};
use microsandbox::{Digest, ErrorKind, LeaseOptions, SaveFormat, SaveOptions};

const RICH: &str = "docker.io/library/rich";

#[test]
fn a_reference_serves_its_manifest_by_tag_and_digest_and_its_blobs() {
    let h = home();
    h.load("rich");
    let m = h.backend.served_manifest(RICH, "latest").unwrap();
    assert_eq!(m.digest, digest_of("rich"));
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(Digest::of(&m.bytes).to_string(), m.digest);
    let again = h.backend.served_manifest(RICH, &m.digest).unwrap();
    assert_eq!(again.bytes, m.bytes);
    for blob in blobs_of("rich") {
        let mut served = h.backend.served_blob(RICH, &blob).unwrap();
        let mut bytes = Vec::new();
        served.file.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, served.size);
        assert_eq!(Digest::of(&bytes).to_string(), blob);
    }
    assert_eq!(h.backend.served_tags(RICH).unwrap(), vec!["latest"]);
}

#[test]
fn nothing_is_served_for_another_repository_or_an_unknown_name() {
    let h = home();
    h.load("rich");
    let layer = expected()["rich"]["layers"][0].as_str().unwrap().to_owned();
    for (repo, what) in [
        ("docker.io/library/other", "another repository"),
        ("ghcr.io/library/rich", "another registry"),
    ] {
        let err = h.backend.served_blob(repo, &layer).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ImageNotFound, "{what}");
        let err = h.backend.served_manifest(repo, "latest").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ImageNotFound, "{what}");
        let err = h.backend.served_tags(repo).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ImageNotFound, "{what}");
    }
    let err = h.backend.served_manifest(RICH, "v9").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageNotFound);
    // A layer's digest is no manifest.
    let err = h.backend.served_manifest(RICH, &layer).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageNotFound);
}

#[test]
fn every_name_is_checked_before_a_file_is_opened() {
    let h = home();
    h.load("rich");
    let before = h.snapshot();
    for repo in [
        "library/rich",
        "rich",
        "docker.io/library/../rich",
        "docker.io/library/Rich",
        "docker.io/library/rich:latest",
        "",
        "docker.io/library/rich/",
    ] {
        let err = h.backend.served_tags(repo).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidReference, "{repo:?}");
    }
    for digest in [
        "sha256:../../../etc/passwd",
        "sha256:abc",
        "sha512:0000",
        "../index.json",
        "index.json",
    ] {
        let err = h.backend.served_blob(RICH, digest).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidReference, "{digest:?}");
    }
    for tag in ["../x", "a/b", "", ".hidden", "x y"] {
        let err = h.backend.served_manifest(RICH, tag).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidReference, "{tag:?}");
    }
    h.assert_untouched(&before, "refused names");
}

#[test]
fn an_orphan_or_a_planted_file_is_not_served_and_a_link_is_not_followed() {
    let h = home();
    h.load("rich");
    let planted = b"not from any image";
    let planted_digest = Digest::of(planted);
    fs::write(
        h.oci().join("blobs/sha256").join(planted_digest.hex()),
        planted,
    )
    .unwrap();
    let err = h
        .backend
        .served_blob(RICH, planted_digest.as_str())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageNotFound);

    // A kept blob swapped for a link to a file outside the home.
    let outside = tempfile::NamedTempFile::new().unwrap();
    let layer = expected()["rich"]["layers"][1].as_str().unwrap().to_owned();
    let path = h.oci().join("blobs/sha256").join(&layer[7..]);
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(outside.path(), &path).unwrap();
    let err = h.backend.served_blob(RICH, &layer).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptCache, "{err}");

    // Removed, the image is no longer served: its blobs are orphans.
    h.backend.remove_image("rich", false).unwrap();
    let config = expected()["rich"]["configDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let err = h.backend.served_blob(RICH, &config).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageNotFound);
}

#[test]
fn a_lease_keeps_its_content_served_by_digest_after_a_forced_remove() {
    let h = home();
    h.load("rich");
    h.backend
        .acquire_lease("rich", &LeaseOptions::default())
        .unwrap();
    h.backend.remove_image("rich", true).unwrap();
    let digest = digest_of("rich");
    let m = h.backend.served_manifest(RICH, &digest).unwrap();
    assert_eq!(m.digest, digest);
    let config = expected()["rich"]["configDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(h.backend.served_blob(RICH, &config).is_ok());
    // The tag went with the reference.
    let err = h.backend.served_manifest(RICH, "latest").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageNotFound);
    assert!(h.backend.served_tags(RICH).unwrap().is_empty());
}

#[test]
fn an_index_another_tool_stored_serves_its_children_by_digest() {
    let h = home();
    h.load("rich");
    // The whole index, stored by another tool.
    let src = fixtures().join("multiarch");
    let status = std::process::Command::new("skopeo")
        .args(["copy", "--all", "--insecure-policy"])
        .arg(format!("oci:{}:multi", src.display()))
        .arg(format!("oci:{}:multi", h.oci().display()))
        .output()
        .expect("skopeo is required");
    assert!(status.status.success(), "{status:?}");
    let repo = "docker.io/library/multi";
    let top = h.backend.served_manifest(repo, "latest").unwrap();
    assert_eq!(top.digest, expected()["multiarch/index"]["digest"]);
    assert_eq!(top.media_type, "application/vnd.oci.image.index.v1+json");
    for child in ["multiarch/amd64", "multiarch/arm64"] {
        let m = h.backend.served_manifest(repo, &digest_of(child)).unwrap();
        assert_eq!(m.digest, digest_of(child));
    }
}

#[test]
fn minibox_archives_round_trip_as_minibox_writes_them() {
    let h = home();
    h.load("rich");
    let out = tempfile::tempdir().unwrap();
    let tar_path = out.path().join("rich.tar");
    h.backend
        .save_images(
            &["rich".to_owned()],
            &tar_path,
            &SaveOptions {
                format: SaveFormat::Minibox,
                ..Default::default()
            },
        )
        .unwrap();
    let mut archive = tar::Archive::new(fs::File::open(&tar_path).unwrap());
    let mut names = Vec::new();
    let mut meta = serde_json::Value::Null;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        if name == "meta.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            meta = serde_json::from_str(&text).unwrap();
        }
        names.push(name);
    }
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    let mut want = vec!["meta.json".to_owned()];
    want.extend(
        blobs_of("rich")
            .iter()
            .map(|d| format!("blobs/sha256/{}", hex(d))),
    );
    assert_eq!(names, want, "meta.json, then manifest, config, layers");
    assert_eq!(
        meta,
        serde_json::json!({ "image": "rich:latest", "manifest_digest": hex(&digest_of("rich")) })
    );
    let other = home();
    let loaded = other
        .backend
        .load_images(&tar_path, &Default::default())
        .unwrap();
    assert_eq!(loaded[0].reference(), "rich:latest");
    assert_eq!(loaded[0].manifest_digest().unwrap(), digest_of("rich"));
    other.assert_invariants();

    // One image per archive: two are refused, and nothing is written.
    h.load("pair");
    let two = out.path().join("two.tar");
    let err = h
        .backend
        .save_images(
            &["rich".to_owned(), "app".to_owned()],
            &two,
            &SaveOptions {
                format: SaveFormat::Minibox,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(!two.exists());
    assert_eq!(
        SaveFormat::parse("minibox").unwrap(),
        SaveFormat::Minibox,
        "the format's name"
    );
}
