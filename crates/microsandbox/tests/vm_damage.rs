//! Damage in `cache/vm/`, by accident or by someone who can write in the
//! home: an edited artifact is caught by its seal (materialize by the
//! file's size and time, verify by every byte), made again and reported;
//! a link or a directory under an artifact's name, and anything but a
//! directory where `cache/vm/` or one of its directories belongs, never
//! takes the cache down: every operation keeps working, verify reports it,
//! repair and materialize take it away, and nothing it points at is read,
//! written or deleted.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{home, Home};
use microsandbox::{ImageDisk, MaterializeOptions, PruneOptions, VerifyOptions, VerifyReport};

const SEAL: &str = "user.microsandbox.seal";

fn materialize(h: &Home) -> ImageDisk {
    h.backend
        .materialize("rich", &MaterializeOptions::default())
        .unwrap()
}

fn verify(h: &Home) -> VerifyReport {
    h.backend.verify(&VerifyOptions::default()).unwrap()
}

fn repair(h: &Home) -> VerifyReport {
    h.backend.verify(&VerifyOptions { repair: true }).unwrap()
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Every file below `dir` with its bytes (links as their targets).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
                out.insert(p, b"<dir>".to_vec());
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.insert(p, t.to_string_lossy().as_bytes().to_vec());
            } else {
                out.insert(p.clone(), fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A disk as it should be once remade: the same paths and sizes, nothing
/// left to report.
fn same_disk(again: &ImageDisk, disk: &ImageDisk) {
    assert_eq!(
        ImageDisk {
            remade: Vec::new(),
            ..again.clone()
        },
        *disk
    );
}

#[test]
fn an_edited_layer_image_is_made_again_by_materialize_and_reported() {
    let h = home();
    h.load("rich");
    let disk = materialize(&h);
    assert!(disk.remade.is_empty(), "{:?}", disk.remade);
    let layer = &disk.layers[1].path;
    let good = fs::read(layer).unwrap();
    assert!(good.len() >= 8192, "a data block after the superblock's");
    // One byte of a file's data: the image's structure still checks, as
    // the kernel and fsck.erofs see it; only the seal tells.
    let f = fs::OpenOptions::new().write(true).open(layer).unwrap();
    f.write_at(&[good[4096] ^ 0x20], 4096).unwrap();
    drop(f);

    let r = verify(&h);
    // The layer, and the fsmeta and descriptor made over it.
    assert_eq!(r.corrupt_artifacts.len(), 3, "{r:?}");
    let line = &r.corrupt_artifacts[0];
    assert!(
        line.starts_with(&format!("vm/layers/{}: ", name(layer)))
            && line.contains("changed after it was made"),
        "{line}"
    );

    let again = materialize(&h);
    assert_eq!(again.remade.len(), 1, "{:?}", again.remade);
    assert!(
        again.remade[0].starts_with(&format!("vm/layers/{}: ", name(layer))),
        "{:?}",
        again.remade
    );
    same_disk(&again, &disk);
    assert_eq!(fs::read(layer).unwrap(), good, "made again byte for byte");
    assert!(verify(&h).is_clean());
    assert!(materialize(&h).remade.is_empty(), "sound now");
}

#[test]
fn an_edit_that_puts_the_time_back_is_found_by_verify_and_repaired() {
    let h = home();
    h.load("rich");
    let disk = materialize(&h);
    let layer = &disk.layers[0].path;
    let good = fs::read(layer).unwrap();
    let before = fs::metadata(layer).unwrap().modified().unwrap();
    let f = fs::OpenOptions::new().write(true).open(layer).unwrap();
    f.write_at(&[good[4096] ^ 0x01], 4096).unwrap();
    f.set_modified(before).unwrap();
    drop(f);

    let r = verify(&h);
    // The layer, and the fsmeta and descriptor made over it.
    assert_eq!(r.corrupt_artifacts.len(), 3, "{r:?}");
    let line = &r.corrupt_artifacts[0];
    assert!(
        line.starts_with(&format!("vm/layers/{}: ", name(layer))) && line.contains("hash to"),
        "{line}"
    );
    assert!(
        r.bytes_checked > good.len() as u64,
        "artifacts are hashed: {r:?}"
    );
    let r = repair(&h);
    assert_eq!(r.corrupt_artifacts.len(), 3, "{r:?}");
    assert!(!layer.exists() && !disk.fsmeta_path.exists());
    assert!(verify(&h).is_clean());
    same_disk(&materialize(&h), &disk);
    assert_eq!(fs::read(layer).unwrap(), good);
}

#[test]
fn an_artifact_without_its_seal_is_made_again() {
    let h = home();
    h.load("rich");
    let disk = materialize(&h);
    rustix::fs::removexattr(&disk.fsmeta_path, SEAL).unwrap();
    let r = verify(&h);
    // The fsmeta, and the descriptor over it.
    assert_eq!(r.corrupt_artifacts.len(), 2, "{r:?}");
    assert!(
        r.corrupt_artifacts[0].contains("no seal"),
        "{:?}",
        r.corrupt_artifacts
    );
    let again = materialize(&h);
    assert_eq!(again.remade.len(), 1, "{:?}", again.remade);
    assert!(
        again.remade[0].starts_with("vm/fsmeta/"),
        "{:?}",
        again.remade
    );
    same_disk(&again, &disk);
    let mut buf = [0u8; 128];
    let n = rustix::fs::getxattr(&disk.fsmeta_path, SEAL, &mut buf[..]).unwrap();
    let seal = String::from_utf8_lossy(&buf[..n]).into_owned();
    // The digest of the bytes on disk: its first 4 KiB and the rest, each
    // hashed, then the two hashes.
    use sha2::Digest as _;
    let bytes = fs::read(&disk.fsmeta_path).unwrap();
    let (head, rest) = bytes.split_at(4096.min(bytes.len()));
    let mut both = sha2::Sha256::new();
    both.update(sha2::Sha256::digest(head));
    both.update(sha2::Sha256::digest(rest));
    let sha = format!("sha256:{:x}", both.finalize());
    assert!(
        seal.starts_with(&format!("split {sha} ")),
        "{seal} vs {sha}"
    );
    assert!(verify(&h).is_clean());
}

#[test]
fn a_link_planted_at_an_artifact_name_is_taken_away_and_never_followed() {
    let h = home();
    h.load("rich");
    let disk = materialize(&h);
    let layer = disk.layers[2].path.clone();
    let good = fs::read(&layer).unwrap();
    // The link points at a copy of the real image elsewhere: following it
    // would look right, and hand a sandbox a file outside the cache.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("image.erofs");
    fs::write(&target, &good).unwrap();
    let untouched = tree(outside.path());
    fs::remove_file(&layer).unwrap();
    symlink(&target, &layer).unwrap();

    let r = verify(&h);
    assert!(
        r.corrupt_artifacts
            .iter()
            .any(|l| l.starts_with(&format!("vm/layers/{}: a symbolic link", name(&layer)))),
        "{r:?}"
    );
    let again = materialize(&h);
    assert!(
        again
            .remade
            .iter()
            .any(|l| l.starts_with(&format!("vm/layers/{}: ", name(&layer)))
                && l.contains("symbolic link")),
        "{:?}",
        again.remade
    );
    same_disk(&again, &disk);
    assert!(fs::symlink_metadata(&layer).unwrap().is_file());
    assert_eq!(fs::read(&layer).unwrap(), good);
    assert_eq!(tree(outside.path()), untouched);
    assert!(verify(&h).is_clean(), "{:?}", verify(&h));

    // Again, and this time repair takes it away.
    fs::remove_file(&layer).unwrap();
    symlink(&target, &layer).unwrap();
    let r = repair(&h);
    assert!(!r.corrupt_artifacts.is_empty(), "{r:?}");
    assert!(fs::symlink_metadata(&layer).is_err(), "the link is gone");
    assert_eq!(tree(outside.path()), untouched);
    assert!(verify(&h).is_clean(), "{:?}", verify(&h));
    same_disk(&materialize(&h), &disk);
}

#[test]
fn a_directory_at_an_artifact_name_is_moved_aside_whole() {
    let h = home();
    h.load("rich");
    let disk = materialize(&h);
    fs::remove_file(&disk.vmdk_path).unwrap();
    fs::create_dir(&disk.vmdk_path).unwrap();
    fs::write(disk.vmdk_path.join("kept"), b"someone's file").unwrap();
    let r = verify(&h);
    assert!(
        r.corrupt_artifacts
            .iter()
            .any(|l| l.starts_with("vm/vmdk/") && l.contains("a directory")),
        "{r:?}"
    );
    let again = materialize(&h);
    assert_eq!(again.remade.len(), 1, "{:?}", again.remade);
    same_disk(&again, &disk);
    assert!(fs::symlink_metadata(&disk.vmdk_path).unwrap().is_file());
    let aside: Vec<PathBuf> = fs::read_dir(h.dir.path().join("cache/quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(fs::read(aside[0].join("kept")).unwrap(), b"someone's file");
    assert!(verify(&h).is_clean());
}

/// Every reading and maintenance operation, with `cache/vm` damaged.
fn everything_else_works(h: &Home, what: &str) {
    let list = h.backend.list_images().unwrap();
    assert_eq!(list.len(), 3, "{what}");
    h.backend.get_image("rich").unwrap();
    h.backend.inspect_image("rich").unwrap();
    let usage = h.backend.disk_usage().unwrap();
    assert!(usage.total_bytes > 0, "{what}");
    h.backend
        .prune_images_with(&PruneOptions {
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    h.backend.remove_image("base", false).unwrap();
    h.assert_invariants();
}

fn load_three(h: &Home) {
    h.load("rich");
    h.load("pair");
}

#[test]
fn cache_vm_as_a_link_does_not_take_the_cache_down() {
    let h = home();
    load_three(&h);
    let disk = materialize(&h);
    let vm = h.dir.path().join("cache/vm");
    // The whole tree moved outside and linked back in.
    let outside = tempfile::tempdir().unwrap();
    let moved = outside.path().join("vm");
    fs::rename(&vm, &moved).unwrap();
    symlink(&moved, &vm).unwrap();
    let untouched = tree(outside.path());

    everything_else_works(&h, "cache/vm a link");
    let r = verify(&h);
    assert!(!r.is_clean());
    assert!(
        r.corrupt_artifacts
            .iter()
            .any(|l| l.starts_with("vm: ") && l.contains("symbolic link")),
        "{r:?}"
    );
    assert_eq!(r.artifacts_checked, 0, "nothing read through the link");
    assert_eq!(tree(outside.path()), untouched, "nothing done through it");

    // Materialize takes the link away, makes the directories and the disk.
    let again = materialize(&h);
    assert!(
        again
            .remade
            .first()
            .is_some_and(|l| l.starts_with("vm: ") && l.contains("symbolic link")),
        "{:?}",
        again.remade
    );
    same_disk(&again, &disk);
    assert!(fs::symlink_metadata(&vm).unwrap().is_dir());
    assert_eq!(tree(outside.path()), untouched);
    assert!(verify(&h).is_clean(), "{:?}", verify(&h));

    // Planted again: repair takes it away, and the cache works on.
    fs::remove_dir_all(&vm).unwrap();
    symlink(&moved, &vm).unwrap();
    let r = repair(&h);
    assert!(
        r.corrupt_artifacts.iter().any(|l| l.starts_with("vm: ")),
        "{r:?}"
    );
    assert!(fs::symlink_metadata(&vm).is_err(), "the link is gone");
    assert_eq!(tree(outside.path()), untouched);
    assert!(verify(&h).is_clean(), "{:?}", verify(&h));
    same_disk(&materialize(&h), &disk);
}

#[test]
fn a_file_where_a_vm_directory_belongs_is_reported_and_cleared() {
    let h = home();
    load_three(&h);
    let disk = materialize(&h);
    let layers = h.dir.path().join("cache/vm/layers");
    fs::remove_dir_all(&layers).unwrap();
    fs::write(&layers, b"not a directory").unwrap();

    everything_else_works(&h, "cache/vm/layers a file");
    let r = verify(&h);
    assert!(
        r.corrupt_artifacts
            .iter()
            .any(|l| l.starts_with("vm/layers: ") && l.contains("not a directory")),
        "{r:?}"
    );
    // The fsmeta and descriptor name layer images that cannot be found.
    assert!(
        r.corrupt_artifacts
            .iter()
            .any(|l| l.starts_with("vm/fsmeta/")),
        "{r:?}"
    );
    // A materializing load works too: its layer images wait for the
    // materialize after the commit, which clears the file.
    let handles = h
        .backend
        .load_images(
            &common::fixtures().join("rich"),
            &microsandbox::LoadOptions {
                materialize: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(handles.len(), 1);
    assert!(fs::symlink_metadata(&layers).unwrap().is_dir());
    let again = materialize(&h);
    assert!(again.remade.is_empty(), "{:?}", again.remade);
    same_disk(&again, &disk);
    assert!(verify(&h).is_clean(), "{:?}", verify(&h));
    assert!(disk
        .layers
        .iter()
        .all(|l| l.path.metadata().unwrap().nlink() == 1));
}
