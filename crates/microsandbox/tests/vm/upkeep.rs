//! VM disks under prune, disk usage and verify.

use super::*;

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn prune_takes_the_artifacts_of_what_it_takes_and_a_lease_keeps_them() {
    let h = home();
    h.load("pair");
    let base = materialize(&h, "base");
    let app = materialize(&h, "app");
    // Another format version's file and a stray name: orphans.
    let layers = h.dir.path().join("cache/vm/layers");
    let old = layers.join(format!("{}.v999.erofs", "ab".repeat(32)));
    fs::write(&old, vec![0u8; 4096]).unwrap();
    fs::write(layers.join("junk"), b"x").unwrap();
    let lease = h
        .backend
        .acquire_lease("base", &Default::default())
        .unwrap();
    let dry = h
        .backend
        .prune_images_with(&microsandbox::PruneOptions {
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    let report = h.backend.prune_images().unwrap();
    assert_eq!(report.fsmeta_removed, 1);
    assert_eq!(report.vmdk_removed, 1);
    // app's own layer blob, its layer image, and the two orphans.
    assert_eq!(report.layers_removed, 4, "{report:?}");
    assert_eq!(
        (
            dry.layers_removed,
            dry.fsmeta_removed,
            dry.vmdk_removed,
            dry.bytes_reclaimed
        ),
        (
            report.layers_removed,
            report.fsmeta_removed,
            report.vmdk_removed,
            report.bytes_reclaimed
        ),
        "the dry run promised what the prune did"
    );
    assert!(!app.fsmeta_path.exists() && !app.vmdk_path.exists() && !app.layers[1].path.exists());
    assert!(!old.exists() && !layers.join("junk").exists());
    for p in [&base.vmdk_path, &base.fsmeta_path, &base.layers[0].path] {
        assert!(p.is_file(), "{} went with a lease on base", p.display());
    }
    assert!(h.backend.verify(&Default::default()).unwrap().is_clean());
    h.backend.release_lease(&lease.id).unwrap();
    let report = h.backend.prune_images().unwrap();
    assert_eq!((report.fsmeta_removed, report.vmdk_removed), (1, 1));
    assert!(h.artifacts().is_empty(), "{:?}", h.artifacts());
}

#[test]
fn disk_usage_counts_vm_bytes_with_their_images() {
    let h = home();
    h.load("pair");
    let before = h.backend.disk_usage().unwrap();
    assert_eq!(before.vm_bytes, 0);
    let base = materialize(&h, "base");
    let app = materialize(&h, "app");
    let du = h.backend.disk_usage().unwrap();
    let mut files: Vec<PathBuf> = vec![
        base.vmdk_path,
        base.fsmeta_path,
        app.vmdk_path.clone(),
        app.fsmeta_path.clone(),
    ];
    files.extend(app.layers.iter().map(|l| l.path.clone()));
    let vm: u64 = files.iter().map(|p| allocated(p)).sum();
    assert_eq!(du.vm_bytes, vm);
    assert_eq!(du.total_bytes, before.total_bytes + vm);
    assert_eq!(du.blobs_bytes, before.blobs_bytes);
    let app_usage = du
        .images
        .iter()
        .find(|i| i.reference == "app:latest")
        .unwrap();
    let app_before = before
        .images
        .iter()
        .find(|i| i.reference == "app:latest")
        .unwrap();
    let own: u64 = [&app.vmdk_path, &app.fsmeta_path, &app.layers[1].path]
        .iter()
        .map(|p| allocated(p))
        .sum();
    assert_eq!(app_usage.unique_bytes, app_before.unique_bytes + own);
    assert_eq!(
        app_usage.shared_bytes,
        app_before.shared_bytes + allocated(&app.layers[0].path),
        "the base layer's image is shared"
    );
    // What a prune would free now includes every artifact.
    let dry = h
        .backend
        .prune_images_with(&microsandbox::PruneOptions {
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(du.reclaimable_bytes, dry.bytes_reclaimed.unwrap());
}

#[test]
fn a_vm_only_prune_drops_artifacts_and_keeps_blobs_and_references() {
    let h = home();
    h.load("pair");
    let base = materialize(&h, "base");
    let app = materialize(&h, "app");
    let blobs = h.blob_names();
    let lease = h
        .backend
        .acquire_lease("base", &Default::default())
        .unwrap();
    let report = h
        .backend
        .prune_images_with(&microsandbox::PruneOptions {
            vm_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (report.image_refs_removed, report.manifests_removed),
        (0, 0)
    );
    assert_eq!(
        (
            report.layers_removed,
            report.fsmeta_removed,
            report.vmdk_removed
        ),
        (1, 1, 1)
    );
    assert_eq!(h.blob_names(), blobs);
    assert_eq!(h.refs().len(), 2);
    assert!(base.vmdk_path.is_file() && base.layers[0].path.is_file());
    assert!(!app.vmdk_path.exists() && !app.layers[1].path.exists());
    // A budget: everything but the pinned disk goes while over it; a
    // generous one keeps app's disk.
    h.backend.release_lease(&lease.id).unwrap();
    materialize(&h, "app");
    let report = h
        .backend
        .prune_images_with(&microsandbox::PruneOptions {
            vm_only: true,
            max_bytes: Some(u64::MAX / 2),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(report.bytes_reclaimed, Some(0));
    let report = h
        .backend
        .prune_images_with(&microsandbox::PruneOptions {
            vm_only: true,
            max_bytes: Some(0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((report.fsmeta_removed, report.vmdk_removed), (2, 2));
    assert!(h.artifacts().is_empty());
    assert_eq!(h.blob_names(), blobs);
    let err = h
        .backend
        .prune_images_with(&microsandbox::PruneOptions {
            vm_only: true,
            dangling: true,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn verify_finds_damaged_artifacts_and_repair_deletes_them() {
    let h = home();
    h.load("rich");
    let disk = materialize(&h, "rich");
    assert_eq!(
        h.backend
            .verify(&Default::default())
            .unwrap()
            .artifacts_checked,
        5
    );
    // A flipped byte in the second layer image's superblock.
    let mut bytes = fs::read(&disk.layers[1].path).unwrap();
    bytes[1024 + 8] ^= 0xff; // its features: the checksum flag
    fs::write(&disk.layers[1].path, &bytes).unwrap();
    let r = h.backend.verify(&Default::default()).unwrap();
    assert!(!r.is_clean());
    assert_eq!(
        r.corrupt_artifacts.len(),
        3,
        "the layer, and the fsmeta and VMDK over it: {r:?}"
    );
    assert!(r.corrupt_artifacts[0].starts_with("vm/layers/"), "{r:?}");
    assert!(r.corrupt_artifacts[1].starts_with("vm/fsmeta/"), "{r:?}");
    assert!(r.corrupt_artifacts[2].starts_with("vm/vmdk/"), "{r:?}");
    let r = h
        .backend
        .verify(&microsandbox::VerifyOptions { repair: true })
        .unwrap();
    assert_eq!(r.corrupt_artifacts.len(), 3);
    assert!(
        !disk.layers[1].path.exists() && !disk.fsmeta_path.exists() && !disk.vmdk_path.exists()
    );
    assert!(disk.layers[0].path.exists(), "a sound layer image stays");
    assert!(h.backend.verify(&Default::default()).unwrap().is_clean());
    let again = materialize(&h, "rich");
    assert_eq!(again, disk);
    assert!(h.backend.verify(&Default::default()).unwrap().is_clean());
}
