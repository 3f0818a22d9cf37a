//! VM disks made by the cache: each image's layer images, fsmeta and VMDK,
//! read back by the real readers (qemu-img, the kernel's EROFS, fsck.erofs)
//! and compared with `umoci unpack` of the same image; shared layers made
//! once, concurrent makers agreeing, bad artifacts replaced, hostile
//! layers refused with the cache as it was.

mod common;
#[path = "../../erofs/tests/common/mod.rs"]
mod erofs_common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{fixtures, home, Home};
use erofs_common::tarw::{tar, Ent};
use erofs_common::view::{compare, snapshot, Opts};
use erofs_common::{need, run, Mount};
use microsandbox::{ErrorKind, ImageDisk, MaterializeOptions, PullProgress, PullProgressFn};

const TOOLS: &[&str] = &["mount", "losetup", "qemu-img", "umoci", "fsck.erofs"];

/// The disk through qemu-img, mounted by the kernel, against umoci's
/// unpack of `image` (`layout:tag`).
fn prove(disk: &ImageDisk, image: &str, work: &Path) {
    for l in &disk.layers {
        assert_eq!(fs::metadata(&l.path).unwrap().len(), l.size_bytes);
        run(Command::new("fsck.erofs").arg(&l.path));
    }
    let mut fsck = Command::new("fsck.erofs");
    for l in &disk.layers {
        fsck.arg(format!("--device={}", l.path.display()));
    }
    run(fsck.arg(&disk.fsmeta_path));
    let fsmeta = fs::metadata(&disk.fsmeta_path).unwrap().len();
    assert_eq!(
        disk.total_bytes,
        fsmeta + disk.layers.iter().map(|l| l.size_bytes).sum::<u64>()
    );
    let raw = work.join("disk.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(&disk.vmdk_path)
        .arg(&raw));
    assert_eq!(fs::metadata(&raw).unwrap().len(), disk.total_bytes);
    let bundle = work.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", image])
        .arg(&bundle));
    let expected = snapshot(&bundle.join("rootfs"));
    let m = Mount::image(&raw, &work.join("mnt"));
    let actual = snapshot(&m.dir);
    let mut opts = Opts::default();
    opts.skip_mtime.insert(Vec::new()); // umoci's rootfs directory is its own
    if let Err(diff) = compare(&expected, &actual, &opts) {
        panic!("{image}: the disk differs from umoci's unpack:\n{diff}");
    }
    drop(m);
    fs::remove_file(&raw).unwrap();
}

fn materialize(h: &Home, reference: &str) -> ImageDisk {
    h.backend
        .materialize(reference, &MaterializeOptions::default())
        .unwrap()
}

fn events() -> (PullProgressFn, Arc<Mutex<Vec<PullProgress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (
        PullProgressFn::new(move |e| s.lock().unwrap().push(e.clone())),
        seen,
    )
}

fn started(seen: &Mutex<Vec<PullProgress>>) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PullProgress::LayerMaterializeStarted { .. }))
        .count()
}

#[test]
fn every_fixture_image_boots_as_umoci_unpacks_it() {
    if !need("every_fixture_image_boots_as_umoci_unpacks_it", TOOLS) {
        return;
    }
    let h = home();
    h.load("rich");
    h.load("pair");
    for (reference, image) in [
        (
            "rich",
            format!("{}:rich", fixtures().join("rich").display()),
        ),
        (
            "base",
            format!("{}:base", fixtures().join("pair").display()),
        ),
        ("app", format!("{}:app", fixtures().join("pair").display())),
    ] {
        let work = tempfile::tempdir().unwrap();
        let disk = materialize(&h, reference);
        assert!(disk.vmdk_path.is_absolute() && disk.vmdk_path.is_file());
        assert!(disk
            .fsmeta_path
            .starts_with(h.dir.path().join("cache/vm/fsmeta")));
        assert_eq!(
            disk.manifest_digest,
            h.backend
                .get_image(reference)
                .unwrap()
                .manifest_digest()
                .unwrap()
        );
        let detail = h.backend.inspect_image(reference).unwrap();
        assert_eq!(disk.layers.len(), detail.layers.len());
        for (l, d) in disk.layers.iter().zip(&detail.layers) {
            assert_eq!(l.diff_id, d.diff_id);
            assert_eq!(d.erofs_size_bytes, Some(l.size_bytes as i64));
        }
        prove(&disk, &image, work.path());
    }
    assert!(h.tmp_names().is_empty(), "{:?}", h.tmp_names());
    h.assert_invariants();
}

#[test]
fn zstd_images_boot_as_umoci_unpacks_their_gzip_originals() {
    if !need(
        "zstd_images_boot_as_umoci_unpacks_their_gzip_originals",
        TOOLS,
    ) {
        return;
    }
    // umoci 0.4 reads no zstd layer, but a zstd copy decompresses to the
    // same diff_ids as its original: the original's unpack is the truth.
    for format in ["zstd", "zstd:chunked"] {
        let work = tempfile::tempdir().unwrap();
        let h = home();
        for (layout, tags, in_pass) in [
            ("rich", &["rich"][..], true),
            ("pair", &["base", "app"][..], false),
        ] {
            let z = work.path().join(layout);
            for tag in tags {
                compress_copy(&fixtures().join(layout), tag, &z, tag, format);
            }
            h.backend
                .load_images(
                    &z,
                    &microsandbox::LoadOptions {
                        materialize: in_pass,
                        ..Default::default()
                    },
                )
                .unwrap();
            for tag in tags {
                let disk = materialize(&h, tag);
                let detail = h.backend.inspect_image(tag).unwrap();
                assert!(detail.layers.iter().all(|l| l
                    .media_type
                    .as_deref()
                    .is_some_and(|m| m.ends_with("+zstd"))));
                let original = format!("{}:{tag}", fixtures().join(layout).display());
                prove(&disk, &original, tempfile::tempdir().unwrap().path());
            }
        }
        assert!(h.backend.verify(&Default::default()).unwrap().is_clean());
        h.assert_invariants();
    }
}

/// skopeo's copy of `from:from_tag` into the layout `to` as `to_tag`,
/// its layers recompressed in `format` (`gzip`, `zstd`, `zstd:chunked`).
fn compress_copy(from: &Path, from_tag: &str, to: &Path, to_tag: &str, format: &str) {
    run(Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--dest-compress-format",
            format,
            "--dest-compress",
        ])
        .arg(format!("oci:{}:{from_tag}", from.display()))
        .arg(format!("oci:{}:{to_tag}", to.display())));
}

#[test]
fn shared_layers_are_made_once_and_a_made_disk_returns_at_once() {
    let h = home();
    h.load("pair");
    // Before: no layer has an image.
    let detail = h.backend.inspect_image("app").unwrap();
    assert!(detail.layers.iter().all(|l| l.erofs_size_bytes.is_none()));
    let (p, seen) = events();
    let options = MaterializeOptions {
        pull_progress: Some(p),
        ..Default::default()
    };
    let base = h.backend.materialize("base", &options).unwrap();
    assert_eq!(started(&seen), 1);
    let base_layer = fs::metadata(&base.layers[0].path).unwrap().ino();
    let app = h.backend.materialize("app", &options).unwrap();
    // app shares base's layer: only its own top layer is made.
    assert_eq!(started(&seen), 2);
    assert_eq!(app.layers[0].path, base.layers[0].path);
    assert_eq!(fs::metadata(&app.layers[0].path).unwrap().ino(), base_layer);
    let again = h.backend.materialize("app", &options).unwrap();
    assert_eq!(started(&seen), 2, "a made disk is made again");
    assert_eq!(again, app);
    let kinds: Vec<&str> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            PullProgress::StitchComplete { .. } => "stitched",
            PullProgress::LayerMaterializeComplete { .. } => "layer",
            _ => "",
        })
        .filter(|k| !k.is_empty())
        .collect();
    assert_eq!(
        kinds,
        ["layer", "stitched", "layer", "layer", "stitched", "layer", "layer", "stitched"]
    );
    // 2 layer images, an fsmeta and a VMDK per image.
    assert_eq!(h.artifacts().len(), 6, "{:?}", h.artifacts());
    assert!(h.tmp_names().is_empty());
}

#[test]
fn two_makers_of_one_disk_make_each_artifact_once() {
    let h = home();
    h.load("rich");
    let (p, seen) = events();
    let disks: Vec<ImageDisk> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                // A backend each: flock is per open file, as between processes.
                let backend = microsandbox::LocalBackend::builder()
                    .home(h.dir.path())
                    .build_blocking()
                    .unwrap();
                let options = MaterializeOptions {
                    pull_progress: Some(p.clone()),
                    ..Default::default()
                };
                s.spawn(move || backend.materialize("rich", &options).unwrap())
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(disks[0], disks[1]);
    assert_eq!(started(&seen), 3, "each of rich's 3 layers is made once");
    assert!(h.tmp_names().is_empty());
}

#[test]
fn a_damaged_artifact_is_replaced_by_the_next_materialize() {
    let h = home();
    h.load("rich");
    let disk = materialize(&h, "rich");
    let good = fs::read(&disk.layers[1].path).unwrap();
    // Cut the layer image short, and scribble over the descriptor.
    fs::write(&disk.layers[1].path, &good[..4096]).unwrap();
    fs::write(&disk.vmdk_path, b"# not a descriptor\n").unwrap();
    let again = materialize(&h, "rich");
    let remade: Vec<&str> = again
        .remade
        .iter()
        .map(|l| l.split('/').nth(1).unwrap())
        .collect();
    assert_eq!(remade, ["layers", "vmdk"], "{:?}", again.remade);
    assert_eq!(
        ImageDisk {
            remade: Vec::new(),
            ..again
        },
        disk
    );
    assert_eq!(
        fs::read(&disk.layers[1].path).unwrap(),
        good,
        "rebuilt byte for byte"
    );
    let text = fs::read_to_string(&disk.vmdk_path).unwrap();
    assert!(text.contains("../layers/"), "{text}");
}

#[test]
fn materialize_of_an_absent_reference_is_image_not_found() {
    let h = home();
    h.load("rich");
    let err = h
        .backend
        .materialize("nope", &MaterializeOptions::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageNotFound);
    assert!(h.artifacts().is_empty());
}

/// A layout of one image `t` of these layer tars, loaded into a new home
/// as `hostile`.
fn hostile(layers: &[Vec<u8>], gzip: bool) -> (Home, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut tars = Vec::new();
    for (k, t) in layers.iter().enumerate() {
        let p = dir.path().join(format!("l{k}.tar"));
        fs::write(&p, t).unwrap();
        tars.push(p);
    }
    let plain = dir.path().join("plain");
    erofs_common::oci::layout(&plain, &tars);
    let src: PathBuf = if gzip {
        let gz = dir.path().join("gz");
        gzip_copy(&plain, &gz, "t");
        gz
    } else {
        plain
    };
    let h = home();
    h.backend
        .load_images(
            &src,
            &microsandbox::LoadOptions {
                reference: Some(microsandbox::Reference::parse("hostile").unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
    (h, dir)
}

#[test]
fn hostile_layers_are_refused_and_leave_the_cache_as_it_was() {
    let big = vec![0u8; 3 << 20];
    // What, its layers, gzip them, the decompression limit, the code.
    type Case = (&'static str, Vec<Vec<u8>>, bool, Option<u64>, ErrorKind);
    let cases: Vec<Case> = vec![
        (
            "a path escaping the root",
            vec![tar(&[Ent::file("../../etc/owned", b"x")])],
            false,
            None,
            ErrorKind::InvalidArchive,
        ),
        (
            "a hard link to nowhere",
            vec![tar(&[Ent::hardlink("a", "missing")])],
            false,
            None,
            ErrorKind::InvalidArchive,
        ),
        (
            "a whiteout of ..",
            vec![tar(&[Ent::dir("d"), Ent::file("d/.wh...", b"")])],
            false,
            None,
            ErrorKind::InvalidArchive,
        ),
        (
            "a decompression bomb",
            vec![tar(&[Ent::file("zeros", &big)])],
            true,
            Some(1 << 20),
            ErrorKind::InvalidArchive,
        ),
        (
            "a tar cut short",
            vec![tar(&[Ent::file("f", &big)])[..(1 << 20)].to_vec()],
            false,
            None,
            ErrorKind::InvalidArchive,
        ),
    ];
    for (what, layers, gzip, limit, kind) in cases {
        let (h, _src) = hostile(&layers, gzip);
        let before = h.snapshot();
        let err = h
            .backend
            .materialize(
                "hostile",
                &MaterializeOptions {
                    max_layer_bytes: limit,
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{what}: {err}");
        assert!(
            err.to_string().contains("layer 0 of hostile"),
            "{what}: {err}"
        );
        assert!(h.artifacts().is_empty(), "{what}: {:?}", h.artifacts());
        assert!(h.tmp_names().is_empty(), "{what}: {:?}", h.tmp_names());
        h.assert_untouched(&before, what);
        assert!(h.backend.list_leases().unwrap().is_empty(), "{what}");
    }
}

#[test]
fn a_sandbox_pulls_leases_its_disk_boots_it_and_cleans_up() {
    if !need(
        "a_sandbox_pulls_leases_its_disk_boots_it_and_cleans_up",
        TOOLS,
    ) {
        return;
    }
    use common::registry::{push, registry};
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    let h = home();
    let reference = format!("{}/team/rich:1", reg.addr);
    let (p, seen) = events();
    let handle = h
        .backend
        .pull_image(
            &reference,
            &microsandbox::PullOptions {
                materialize: true,
                pull_progress: Some(p),
                ..Default::default()
            },
        )
        .unwrap();
    // The layer images were written as the layers streamed in: the
    // materialize after the commit found them made and made only the
    // fsmeta and the VMDK.
    assert_eq!(started(&seen), 0, "a layer image was made after the pull");
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, PullProgress::StitchComplete { .. })));
    let lease = h
        .backend
        .acquire_lease(
            &reference,
            &microsandbox::LeaseOptions {
                materialize: true,
                ..Default::default()
            },
        )
        .unwrap();
    let disk = lease
        .disk
        .clone()
        .expect("acquire with materialize returns the disk");
    assert_eq!(
        Some(disk.manifest_digest.as_str()),
        handle.manifest_digest()
    );
    assert_eq!(started(&seen), 0, "the disk was made once");
    // A prune while the sandbox runs takes nothing of its disk.
    let report = h.backend.prune_images().unwrap();
    assert_eq!(
        (
            report.fsmeta_removed,
            report.vmdk_removed,
            report.layers_removed
        ),
        (0, 0, 0)
    );
    let work = tempfile::tempdir().unwrap();
    prove(
        &disk,
        &format!("{}:rich", fixtures().join("rich").display()),
        work.path(),
    );
    h.backend.release_lease(&lease.id).unwrap();
    let report = h.backend.prune_images().unwrap();
    assert_eq!(report.image_refs_removed, 1);
    assert_eq!((report.fsmeta_removed, report.vmdk_removed), (1, 1));
    assert_eq!(
        report.layers_removed, 6,
        "3 layer blobs and 3 layer images: {report:?}"
    );
    assert!(h.artifacts().is_empty());
    assert!(h.blob_names().is_empty());
}

#[test]
fn load_with_materialize_makes_the_disks_and_a_failed_acquire_leaves_no_lease() {
    let h = home();
    let phases = Arc::new(Mutex::new(Vec::new()));
    let p = phases.clone();
    let handles = h
        .backend
        .load_images(
            &fixtures().join("pair"),
            &microsandbox::LoadOptions {
                materialize: true,
                progress: Some(microsandbox::ProgressFn::new(move |e| {
                    p.lock().unwrap().push(e.phase)
                })),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(handles.len(), 2);
    // Made in the load's own pass over each layer: no layer blob was read
    // again for its image afterwards.
    assert!(!phases.lock().unwrap().contains(&microsandbox::Phase::Erofs));
    // base and app: 2 layer images, 2 fsmeta, 2 VMDK.
    assert_eq!(h.artifacts().len(), 6, "{:?}", h.artifacts());
    let (bad, _src) = hostile(&[tar(&[Ent::file("../x", b"x")])], false);
    let err = bad
        .backend
        .acquire_lease(
            "hostile",
            &microsandbox::LeaseOptions {
                materialize: true,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArchive);
    assert!(bad.backend.list_leases().unwrap().is_empty());
}

#[test]
fn a_size_budget_counts_the_vm_disks() {
    let h = home();
    h.load("pair");
    let blobs = h.backend.disk_usage().unwrap().blobs_bytes;
    // The blobs alone fit the budget: nothing would go.
    let dry = |max: u64| {
        h.backend
            .prune_images_with(&microsandbox::PruneOptions {
                dry_run: true,
                max_bytes: Some(max),
                ..Default::default()
            })
            .unwrap()
    };
    assert_eq!(dry(blobs).image_refs_removed, 0);
    materialize(&h, "base");
    materialize(&h, "app");
    let du = h.backend.disk_usage().unwrap();
    assert!(du.vm_bytes > 0);
    // With the disks, the same budget is exceeded: the least recently
    // used image goes, with its disk.
    let report = dry(blobs);
    assert!(report.image_refs_removed >= 1, "{report:?}");
    assert!(report.vmdk_removed >= 1, "{report:?}");
    assert_eq!(dry(blobs + du.vm_bytes).image_refs_removed, 0);
}

#[test]
fn a_debian_root_materializes_and_boots_as_umoci_unpacks_it() {
    if !need(
        "a_debian_root_materializes_and_boots_as_umoci_unpacks_it",
        &[
            "mount",
            "losetup",
            "qemu-img",
            "umoci",
            "fsck.erofs",
            "debootstrap",
            "skopeo",
        ],
    ) {
        return;
    }
    let tar = erofs_common::debian::debian_tar();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    erofs_common::oci::layout(&plain, &[tar]);
    // As a registry would serve it: one gzip layer.
    let gz = dir.path().join("gz");
    gzip_copy(&plain, &gz, "debian");
    let h = home();
    h.backend
        .load_images(
            &gz,
            &microsandbox::LoadOptions {
                materialize: true,
                ..Default::default()
            },
        )
        .unwrap();
    let disk = materialize(&h, "debian");
    assert!(disk.layers[0].size_bytes > 100 << 20, "{disk:?}");
    prove(&disk, &format!("{}:debian", gz.display()), dir.path());
    assert!(h.backend.verify(&Default::default()).unwrap().is_clean());
}

/// skopeo's copy of the layout `plain` (tag `t`) into `gz` as `tag`, its
/// layers gzip'ed, as a registry would serve them.
fn gzip_copy(plain: &Path, gz: &Path, tag: &str) {
    compress_copy(plain, "t", gz, tag, "gzip");
}

#[path = "vm/upkeep.rs"]
mod upkeep;
