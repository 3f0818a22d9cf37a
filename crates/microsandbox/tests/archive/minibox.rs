//! MiniBox archives, and which sources a reference may name.

use super::*;

#[test]
fn minibox_archives_load_as_tar_and_as_directory() {
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("mini.tar");
    fs::write(&tar, raw_tar(&minibox_entries("ghcr.io/org/rich:7"))).unwrap();
    let dir = work.path().join("mini-dir");
    let status = Command::new("mkdir").arg("-p").arg(&dir).status().unwrap();
    assert!(status.success());
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    for path in [tar, dir] {
        let h = home();
        let loaded = h.backend.load_images(&path, &Default::default()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].reference(), "ghcr.io/org/rich:7");
        assert_eq!(loaded[0].manifest_digest().unwrap(), digest_of("rich"));
        h.assert_invariants();
    }
}

#[test]
fn a_reference_names_a_single_image_source_and_only_such() {
    let work = tempfile::tempdir().unwrap();
    // skopeo without a tag writes an unnamed image.
    let unnamed = work.path().join("unnamed.tar");
    skopeo(&[
        "copy",
        "--insecure-policy",
        &format!("oci:{}:rich", fixtures().join("rich").display()),
        &format!("oci-archive:{}", unnamed.display()),
    ]);
    let h = home();
    let err = h
        .backend
        .load_images(&unnamed, &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArchive);
    let options = microsandbox::LoadOptions {
        reference: Some(microsandbox::Reference::parse("renamed:1").unwrap()),
        ..Default::default()
    };
    let loaded = h.backend.load_images(&unnamed, &options).unwrap();
    assert_eq!(loaded[0].reference(), "renamed:1");
    assert_eq!(loaded[0].manifest_digest().unwrap(), digest_of("rich"));
    // A named one is renamed too.
    let named = work.path().join("mini.tar");
    fs::write(&named, raw_tar(&minibox_entries("rich:old"))).unwrap();
    let loaded = h.backend.load_images(&named, &options).unwrap();
    assert_eq!(loaded[0].reference(), "renamed:1");
    assert!(h.backend.get_image("rich:old").is_err());
    // Two images cannot take one name.
    let before = h.snapshot();
    let err = h
        .backend
        .load_images(&fixtures().join("pair"), &options)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("2 images"), "{err}");
    assert_eq!(h.snapshot(), before);
}
