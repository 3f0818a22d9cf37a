//! Archives other tools write: docker 25 and `tar -c .`.

use super::*;

#[test]
fn docker_25_archives_load_by_their_index_or_else_their_manifest_json() {
    // Our docker format is Docker 25's: an OCI layout and manifest.json.
    let h = home();
    h.load("rich");
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("d25.tar");
    save(&h, &["rich"], &tar, microsandbox::SaveFormat::Docker);
    let mut entries = entries_of(&tar);
    assert!(entries
        .iter()
        .any(|e| matches!(e, E::File(n, _) if n == "oci-layout")));
    assert!(entries
        .iter()
        .any(|e| matches!(e, E::File(n, _) if n == "manifest.json")));
    // With the names gone from index.json, manifest.json's RepoTags name it.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest_of("rich"),
            "size": expected()["rich"]["manifestSize"],
        }]
    });
    replace(
        &mut entries,
        "index.json",
        E::File("index.json".into(), serde_json::to_vec(&index).unwrap()),
    );
    let unnamed = work.path().join("d25-unnamed.tar");
    fs::write(&unnamed, raw_tar(&entries)).unwrap();
    let other = home();
    let loaded = other
        .backend
        .load_images(&unnamed, &Default::default())
        .unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].reference(), "rich:latest");
    let d = other.backend.inspect_image("rich").unwrap();
    assert_eq!(
        d.config.as_ref().unwrap().digest,
        expected()["rich"]["configDigest"].as_str().unwrap()
    );
    other.assert_invariants();
}

#[test]
fn archives_made_with_tar_dash_c_dot_load() {
    // `tar -C layout .` starts with a `./` entry and prefixes every name.
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("dot.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tar)
        .arg("-C")
        .arg(fixtures().join("pair"))
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let h = home();
    let loaded = h.backend.load_images(&tar, &Default::default()).unwrap();
    assert_eq!(loaded.len(), 2);
    // A PAX global header (as `git archive` writes) is no obstacle.
    let mut entries = vec![E::Typed(
        "pax_global_header".into(),
        b'g',
        b"52 comment=0123456789012345678901234567890123456789\n".to_vec(),
    )];
    entries.extend(layout_entries(&fixtures().join("rich")));
    let with_global = work.path().join("global.tar");
    fs::write(&with_global, raw_tar(&entries)).unwrap();
    assert_eq!(
        h.backend
            .load_images(&with_global, &Default::default())
            .unwrap()
            .len(),
        1
    );
}
