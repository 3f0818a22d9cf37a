//! Saved archives: round trips through skopeo and load, determinism, atomicity.

use super::*;

pub(super) fn save(h: &Home, refs: &[&str], path: &Path, format: microsandbox::SaveFormat) {
    let refs: Vec<String> = refs.iter().map(|r| (*r).to_owned()).collect();
    h.backend
        .save_images(
            &refs,
            path,
            // Tests save over their own archives again.
            &microsandbox::SaveOptions {
                format,
                overwrite: true,
            },
        )
        .unwrap();
}

#[test]
fn saved_oci_archives_round_trip_through_skopeo_and_through_load() {
    let h = home();
    h.load("rich");
    h.load("pair");
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("out.tar");
    save(
        &h,
        &["rich", "app", "base"],
        &tar,
        microsandbox::SaveFormat::Oci,
    );
    // skopeo reads each image back by its full name, with our digests.
    for (name, key) in [
        ("docker.io/library/rich:latest", "rich"),
        ("docker.io/library/app:latest", "pair/app"),
    ] {
        let out = work.path().join(format!("copy-{}", key.replace('/', "-")));
        skopeo(&[
            "copy",
            "--insecure-policy",
            &format!("oci-archive:{}:{name}", tar.display()),
            &format!("oci:{}:x", out.display()),
        ]);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], digest_of(key).as_str());
    }
    // Our save, then our load: the identity on digests.
    let other = home();
    let loaded = other
        .backend
        .load_images(&tar, &Default::default())
        .unwrap();
    let mut got: Vec<(String, String)> = loaded
        .iter()
        .map(|i| {
            (
                i.reference().to_owned(),
                i.manifest_digest().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("app:latest".to_owned(), digest_of("pair/app")),
            ("base:latest".to_owned(), digest_of("pair/base")),
            ("rich:latest".to_owned(), digest_of("rich")),
        ]
    );
    other.assert_invariants();
}

#[test]
fn saved_docker_archives_round_trip_through_skopeo_and_through_load() {
    let h = home();
    h.load("rich");
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("docker.tar");
    save(&h, &["rich"], &tar, microsandbox::SaveFormat::Docker);
    // `dir:` keeps the manifest skopeo builds from manifest.json as it is
    // (a conversion to OCI would rewrite the config).
    let out = work.path().join("copy");
    skopeo(&[
        "copy",
        "--insecure-policy",
        &format!("docker-archive:{}:rich:latest", tar.display()),
        &format!("dir:{}", out.display()),
    ]);
    let exp = expected();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["config"]["digest"], exp["rich"]["configDigest"]);
    // skopeo reads a docker-archive's layers as uncompressed tars: what it
    // reports are the diff_ids, which our gzip layers decompress to.
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(fixtures().join("rich.config.json")).unwrap()).unwrap();
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let ours: Vec<&str> = exp["rich"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(layers, diff_ids);
    // docker-archive by tag through our own load keeps config and layers.
    let other = home();
    let loaded = other
        .backend
        .load_images(&tar, &Default::default())
        .unwrap();
    assert_eq!(loaded.len(), 1);
    let d = other.backend.inspect_image("rich").unwrap();
    assert_eq!(
        d.config.as_ref().unwrap().digest,
        exp["rich"]["configDigest"].as_str().unwrap()
    );
    let blobs: Vec<&str> = d.layers.iter().map(|l| l.blob_digest.as_str()).collect();
    assert_eq!(blobs, ours);
}

#[test]
fn saves_are_deterministic_and_atomic() {
    let h = home();
    h.load("pair");
    let work = tempfile::tempdir().unwrap();
    for format in [
        microsandbox::SaveFormat::Oci,
        microsandbox::SaveFormat::Docker,
    ] {
        let a = work.path().join("a.tar");
        let b = work.path().join("b.tar");
        save(&h, &["app", "base"], &a, format);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        save(&h, &["app", "base"], &b, format);
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "{format:?}");
        // The transfer pin is gone with the save.
        assert!(h.backend.list_leases().unwrap().is_empty());
    }
    // A failed save leaves nothing at the path, and no temporary.
    let c = work.path().join("c.tar");
    let err = h
        .backend
        .save_images(&["app".into(), "nope".into()], &c, &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageNotFound);
    fs::write(&c, b"precious").unwrap();
    // A save whose blob vanished fails midway and keeps the old file
    // (one asked to replace it, or it would not have started).
    let replace = microsandbox::SaveOptions {
        overwrite: true,
        ..Default::default()
    };
    let exp = expected();
    let layer = exp["pair/app"]["layers"][1].as_str().unwrap();
    fs::remove_file(
        h.oci()
            .join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:")),
    )
    .unwrap();
    let err = h
        .backend
        .save_images(&["app".into()], &c, &replace)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptCache, "{err}");
    assert_eq!(fs::read(&c).unwrap(), b"precious");
    let names: Vec<String> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
}

#[test]
fn save_refuses_to_write_inside_the_cache_home() {
    let h = home();
    h.load("rich");
    for inside in [
        h.oci().join("index.json"),
        h.dir.path().join("leases/x.json"),
        h.dir.path().join("out.tar"),
    ] {
        let err = h
            .backend
            .save_images(&["rich".into()], &inside, &Default::default())
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidArgument,
            "{}",
            inside.display()
        );
    }
    h.assert_invariants();
    assert!(h.backend.get_image("rich").is_ok());
}
