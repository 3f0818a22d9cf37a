//! Finding 9 and after: sizes and counts from input are checked before they are used.

use super::*;

// Finding 9: digests that share a prefix, and manifests of 40,000 layers.

#[test]
fn a_manifest_of_forty_thousand_layers_is_refused_at_once() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    Command::new("cp")
        .args(["-a"])
        .arg(fixtures().join("rich"))
        .arg(&src)
        .status()
        .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(src.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let blobs = src.join("blobs/sha256");
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(blobs.join(&mdigest[7..])).unwrap()).unwrap();
    let layer = m["layers"][0].clone();
    let many: Vec<serde_json::Value> = (0..40_000u32)
        .map(|i| {
            let mut l = layer.clone();
            // Every digest shares its first 56 hex characters.
            l["digest"] = format!("sha256:{}{i:08x}", "a".repeat(56)).into();
            l
        })
        .collect();
    m["layers"] = many.into();
    let bytes = serde_json::to_vec(&m).unwrap();
    let d = Digest::of(&bytes);
    fs::write(blobs.join(d.hex()), &bytes).unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = d.to_string().into();
    index["manifests"][0]["size"] = bytes.len().into();
    fs::write(src.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let start = Instant::now();
    assert_load_refused(
        &src,
        &Default::default(),
        ErrorKind::InvalidArchive,
        "40000 layers, more than the 4096",
        "forty thousand layers",
    );
    // Refused in the time it takes to parse, not 38 s.
    assert!(start.elapsed() < Duration::from_secs(30));
}

// Finding 10: sizes that wrap.

#[test]
fn declared_sizes_never_wrap() {
    let h = home();
    h.load("rich");
    // Another tool's entry whose manifest declares two layers of 2^64-1
    // bytes (its blobs are, of course, absent).
    let cfg = fs::read(
        h.oci()
            .join("blobs/sha256")
            .join(&expected()["rich"]["configDigest"].as_str().unwrap()[7..]),
    )
    .unwrap();
    let config = Digest::of(&cfg);
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": cfg.len() },
        "layers": [
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::of(b"1").to_string(), "size": u64::MAX },
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::of(b"2").to_string(), "size": u64::MAX },
        ],
    });
    let bytes = serde_json::to_vec(&m).unwrap();
    let d = Digest::of(&bytes);
    fs::write(h.oci().join("blobs/sha256").join(d.hex()), &bytes).unwrap();
    let path = h.oci().join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d.to_string(),
            "size": bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": "huge:1" }
        }));
    fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    let huge = h.backend.get_image("huge:1").unwrap();
    // Not a wrapped sum: unknown.
    assert_eq!(huge.size_bytes(), None);
    let v = h.backend.verify(&VerifyOptions::default()).unwrap();
    assert!(
        v.dangling_references.contains(&"huge:1".to_owned()),
        "{v:?}"
    );
}

// Finding 11: modes, an expiry of zero (the helper's bound is a unit test
// of transfer::registry::auth).

#[test]
fn save_keeps_a_private_file_private_and_zero_expiry_is_refused() {
    let h = home();
    h.load("rich");
    let out = tempfile::tempdir().unwrap();
    let existing = out.path().join("private.tar");
    fs::write(&existing, b"old").unwrap();
    fs::set_permissions(&existing, fs::Permissions::from_mode(0o600)).unwrap();
    let replace = microsandbox::SaveOptions {
        overwrite: true,
        ..Default::default()
    };
    h.backend
        .save_images(&["rich".to_owned()], &existing, &replace)
        .unwrap();
    assert_eq!(
        fs::metadata(&existing).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A new archive of a private (0700) home is private too.
    fs::set_permissions(h.dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let fresh = out.path().join("fresh.tar");
    h.backend
        .save_images(&["rich".to_owned()], &fresh, &Default::default())
        .unwrap();
    assert_eq!(
        fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let err = h
        .backend
        .acquire_lease(
            "rich",
            &LeaseOptions {
                expires_in: Some(Duration::ZERO),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(h.backend.list_leases().unwrap().is_empty());
}

// The second, independent read of the core found these.

/// A docker-archive: `manifest.json` naming `layers` copies of one
/// uncompressed layer, and its config.
fn docker_archive_with_layers(path: &Path, layers: usize) {
    let layer = vec![0u8; 1024]; // an empty tar: its own diff_id
    let diff_id = Digest::of(&layer).to_string();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": vec![diff_id; layers] },
    });
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["big:1"],
        "Layers": vec!["layer.tar"; layers],
    }]);
    let mut tar = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, bytes) in [
        ("layer.tar", layer),
        ("config.json", serde_json::to_vec(&config).unwrap()),
        ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    tar.finish().unwrap();
}

#[test]
fn a_docker_archive_of_too_many_layers_is_refused_not_committed_broken() {
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big.tar");
    docker_archive_with_layers(&big, 5000);
    assert_load_refused(
        &big,
        &Default::default(),
        ErrorKind::InvalidArchive,
        "lists 5000 layers",
        "docker-archive of 5000 layers",
    );
    // At the cap it loads, and the cache can read what it stored.
    let fine = work.path().join("fine.tar");
    docker_archive_with_layers(&fine, 3);
    let h = home();
    h.backend.load_images(&fine, &Default::default()).unwrap();
    assert_eq!(h.backend.inspect_image("big:1").unwrap().layers.len(), 3);
    h.backend.disk_usage().unwrap();
}

#[test]
fn a_gzip_archive_that_inflates_past_the_limit_is_a_bomb() {
    use std::io::Write as _;
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("bomb.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&path).unwrap(),
        flate2::Compression::best(),
    );
    {
        let mut tar = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_ustar();
        h.set_size(64 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(
            &mut h,
            "blobs/sha256/zeros",
            std::io::repeat(0).take(64 << 20),
        )
        .unwrap();
        tar.finish().unwrap();
    }
    gz.flush().unwrap();
    gz.finish().unwrap();
    assert!(fs::metadata(&path).unwrap().len() < 1 << 20);
    assert_load_refused(
        &path,
        &microsandbox::LoadOptions {
            max_layer_bytes: Some(8 << 20),
            ..Default::default()
        },
        ErrorKind::InvalidArchive,
        "decompression bomb",
        "an archive bomb",
    );
}
