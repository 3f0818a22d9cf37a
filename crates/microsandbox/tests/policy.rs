//! Prune policies and disk usage on real images that share layers: `pair`
//! (`base` and `app`, app on top of base's layer), `rich`, and `copied`
//! (skopeo's copy of rich: the same manifest under another name).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;
use microsandbox::testing::IndexFile;
use microsandbox::{ImagePruneReport, LoadOptions, PruneOptions, Reference};

/// A layout holding one image of a fixture, for loading under a new name.
fn single(dir: &Path, fixture_ref: &str) -> std::path::PathBuf {
    let out = dir.join(fixture_ref.replace([':', '/'], "-"));
    skopeo(&[
        "copy",
        "--insecure-policy",
        &format!("oci:{}", fixtures().join(fixture_ref).display()),
        &format!("oci:{}:x", out.display()),
    ]);
    out
}

fn load_as(h: &Home, path: &Path, name: &str) {
    h.backend
        .load_images(
            path,
            &LoadOptions {
                reference: Some(Reference::parse(name).unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
}

/// A cache of four references: app, base (pair), rich, copied (= rich).
fn four() -> Home {
    let h = home();
    h.load("pair");
    h.load("rich");
    h.load("skopeo");
    h
}

/// Rewrites the times of references in index.json: `(created, last-used)`
/// as ages before now.
fn set_times(h: &Home, times: &[(&str, Duration, Option<Duration>)]) {
    let path = h.oci().join("index.json");
    let mut index: IndexFile = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let now = SystemTime::now();
    let stamp = |age: Duration| microsandbox::testing::format_time(now - age);
    for (name, created, used) in times {
        let canonical = Reference::parse(name).unwrap().canonical();
        let d = index
            .manifests
            .iter_mut()
            .find(|d| d.ref_name() == Some(canonical.as_str()))
            .unwrap_or_else(|| panic!("{name} is not in the index"));
        d.annotations
            .insert("dev.microsandbox.created", stamp(*created));
        match used {
            Some(u) => d
                .annotations
                .insert("dev.microsandbox.last-used", stamp(*u)),
            None => {
                d.annotations.remove("dev.microsandbox.last-used");
            }
        }
    }
    fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

fn removed(r: &ImagePruneReport) -> Vec<String> {
    r.removed.iter().map(|x| x.reference.clone()).collect()
}

/// Runs the dry run, checks it changed nothing, then the real prune, and
/// checks both reports agree and the real one deleted what was listed.
fn dry_then_real(h: &Home, options: PruneOptions) -> ImagePruneReport {
    let before = h.snapshot();
    let tmp_before = h.tmp_names();
    let dry = h
        .backend
        .prune_images_with(&PruneOptions {
            dry_run: true,
            ..options.clone()
        })
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(h.snapshot(), before, "a dry run changed the cache");
    assert_eq!(h.tmp_names(), tmp_before, "a dry run changed tmp/");
    let real = h.backend.prune_images_with(&options).unwrap();
    assert!(!real.dry_run);
    assert_eq!(
        ImagePruneReport {
            dry_run: false,
            ..dry
        },
        real,
        "the dry run and the real prune disagree"
    );
    h.assert_invariants();
    real
}

#[test]
fn dangling_takes_what_a_moved_tag_left_and_nothing_else() {
    let work = tempfile::tempdir().unwrap();
    let base = single(work.path(), "pair:base");
    let h = four();
    load_as(&h, &fixtures().join("rich"), "moving:1");
    // The tag moves to base's image: rich's manifest stays referenced by
    // rich and copied, so nothing dangles yet.
    load_as(&h, &base, "moving:1");
    let r = dry_then_real(
        &h,
        PruneOptions {
            dangling: true,
            ..Default::default()
        },
    );
    assert_eq!(r.image_refs_removed, 0);
    assert!(r.removed.is_empty());
    assert_eq!(r.bytes_reclaimed.unwrap(), 0);
    // Now move rich and copied away too: rich's manifest, config and
    // layers dangle, and only they go.
    let rich_blobs = blobs_of("rich");
    load_as(&h, &base, "rich");
    load_as(&h, &base, "copied");
    let rich_bytes = h.allocated(&rich_blobs);
    let before = h.refs();
    let r = dry_then_real(
        &h,
        PruneOptions {
            dangling: true,
            ..Default::default()
        },
    );
    assert_eq!(h.refs(), before, "dangling kept every reference");
    assert_eq!(r.image_refs_removed, 0);
    assert_eq!(r.manifests_removed, 1);
    assert_eq!(r.configs_removed, 1);
    assert_eq!(r.layers_removed, rich_blobs.len() as u32 - 2);
    assert_eq!(r.bytes_reclaimed.unwrap(), rich_bytes);
    assert_eq!(h.allocated(&rich_blobs), 0);
}

#[test]
fn unused_for_takes_only_what_has_been_idle_that_long() {
    let h = four();
    let day = Duration::from_secs(86400);
    set_times(
        &h,
        &[
            ("base", day * 30, None),                // entered long ago, never used
            ("app", day * 30, Some(day)),            // used yesterday
            ("rich", Duration::from_secs(60), None), // entered a minute ago
            ("copied", day * 10, Some(day * 8)),     // used 8 days ago
        ],
    );
    let r = dry_then_real(
        &h,
        PruneOptions {
            unused_for: Some(day * 7),
            ..Default::default()
        },
    );
    let mut gone = removed(&r);
    gone.sort();
    assert_eq!(gone, ["base:latest", "copied:latest"]);
    assert_eq!(h.refs(), ["app:latest", "rich:latest"]);
    // app still needs base's layer, and rich the manifest copied shared.
    assert_eq!(
        r.manifests_removed + r.configs_removed + r.layers_removed,
        2
    );
}

#[test]
fn max_bytes_evicts_least_recently_used_first_and_stops_at_the_budget() {
    let h = four();
    let day = Duration::from_secs(86400);
    set_times(
        &h,
        &[
            ("rich", day * 5, Some(day * 4)),
            ("copied", day * 5, Some(day * 3)),
            ("base", day * 5, Some(day * 2)),
            ("app", day * 5, Some(day)),
        ],
    );
    let all = h.backend.disk_usage().unwrap().blobs_bytes;
    let rich = h.allocated(&blobs_of("rich"));
    // Just under everything: rich goes first, but copied still holds its
    // manifest, so copied must go too; base and app stay.
    let r = dry_then_real(
        &h,
        PruneOptions {
            max_bytes: Some(all - 1),
            ..Default::default()
        },
    );
    assert_eq!(removed(&r), ["rich:latest", "copied:latest"]);
    assert_eq!(r.bytes_reclaimed.unwrap(), rich);
    assert_eq!(r.over_budget_bytes, 0);
    assert_eq!(h.refs(), ["app:latest", "base:latest"]);
    let left = h.backend.disk_usage().unwrap().blobs_bytes;
    assert_eq!(left, all - rich);
    // A budget the remaining content already meets removes nothing.
    let r = dry_then_real(
        &h,
        PruneOptions {
            max_bytes: Some(left),
            ..Default::default()
        },
    );
    assert!(r.removed.is_empty());
    assert_eq!(r.bytes_reclaimed.unwrap(), 0);
}

#[test]
fn a_leased_image_survives_every_policy() {
    let policies = [
        PruneOptions::default(),
        PruneOptions {
            dangling: true,
            ..Default::default()
        },
        PruneOptions {
            unused_for: Some(Duration::ZERO),
            ..Default::default()
        },
        PruneOptions {
            max_bytes: Some(0),
            ..Default::default()
        },
    ];
    for policy in policies {
        let h = four();
        let day = Duration::from_secs(86400);
        set_times(&h, &[("base", day * 100, None)]);
        h.backend
            .acquire_lease("base", &Default::default())
            .unwrap();
        let base_bytes = h.allocated(&blobs_of("pair/base"));
        let r = dry_then_real(&h, policy.clone());
        assert!(h.refs().contains(&"base:latest".to_owned()), "{policy:?}");
        assert_eq!(
            h.allocated(&blobs_of("pair/base")),
            base_bytes,
            "{policy:?}"
        );
        if policy.max_bytes == Some(0) {
            // Everything else went; the lease holds base above the budget.
            assert_eq!(h.refs(), ["base:latest"]);
            assert_eq!(r.over_budget_bytes, base_bytes);
        }
    }
}

/// Sums `du -B1` over the files of a directory: what the disk says.
fn du_files(dir: &Path) -> u64 {
    let out = Command::new("sh")
        .arg("-c")
        .arg("find \"$1\" -type f -print0 | du -B1 -c --files0-from=- | tail -1")
        .arg("sh")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn disk_usage_counts_each_blob_once_and_unique_bytes_are_what_removal_frees() {
    let h = four();
    fs::write(
        h.dir.path().join("cache/tmp/left-behind"),
        vec![7u8; 10_000],
    )
    .unwrap();
    let u = h.backend.disk_usage().unwrap();
    assert_eq!(u.blobs_bytes, du_files(&h.oci().join("blobs/sha256")));
    assert_eq!(u.tmp_bytes, du_files(&h.dir.path().join("cache/tmp")));
    assert!(u.total_bytes >= u.blobs_bytes + u.tmp_bytes);
    let names: BTreeMap<&str, &microsandbox::ImageUsage> =
        u.images.iter().map(|i| (i.reference.as_str(), i)).collect();
    assert_eq!(
        names.keys().copied().collect::<Vec<_>>(),
        ["app:latest", "base:latest", "copied:latest", "rich:latest"]
    );
    // rich and copied share everything; base's layer is app's bottom one.
    assert_eq!(names["rich:latest"].unique_bytes, 0);
    assert_eq!(names["copied:latest"].unique_bytes, 0);
    assert!(names["app:latest"].shared_bytes > 0);
    for i in &u.images {
        assert_eq!(i.size_bytes, i.shared_bytes + i.unique_bytes);
        assert!(!i.in_use);
    }
    // Each image's unique bytes are what removing it alone and a prune of
    // what dangles free, on a fresh copy of the same cache.
    for i in &u.images {
        let other = four();
        other.backend.remove_image(&i.reference, false).unwrap();
        let r = other
            .backend
            .prune_images_with(&PruneOptions {
                dangling: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            r.bytes_reclaimed.unwrap(),
            i.unique_bytes,
            "{}",
            i.reference
        );
    }
    // Reclaimable is what the default prune frees: its dry run and its run.
    let dry = h
        .backend
        .prune_images_with(&PruneOptions {
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(u.reclaimable_bytes, dry.bytes_reclaimed.unwrap());
    assert_eq!(
        h.backend.prune_images().unwrap().bytes_reclaimed.unwrap(),
        u.reclaimable_bytes
    );
    // The backend remembers what it measured; files gone and files back
    // (new inodes under old names) are measured afresh.
    let u = h.backend.disk_usage().unwrap();
    assert_eq!((u.blobs_bytes, u.images.len()), (0, 0));
    h.load("rich");
    fs::write(
        h.oci().join("blobs/sha256").join("0".repeat(64)),
        vec![1u8; 50_000],
    )
    .unwrap();
    let u = h.backend.disk_usage().unwrap();
    assert_eq!(u.blobs_bytes, du_files(&h.oci().join("blobs/sha256")));
    assert_eq!(u.images.len(), 1);
    assert!(u.reclaimable_bytes >= 50_000);
    // A lease makes its image in use and its blobs not unique any more.
    let h = four();
    h.backend.acquire_lease("app", &Default::default()).unwrap();
    let u = h.backend.disk_usage().unwrap();
    let app = u
        .images
        .iter()
        .find(|i| i.reference == "app:latest")
        .unwrap();
    assert!(app.in_use);
    assert_eq!(app.unique_bytes, 0);
    assert!(app.last_used_at.is_some());
}

#[test]
fn contradictory_or_malformed_options_are_refused_and_change_nothing() {
    let h = four();
    let before = h.snapshot();
    let err = h
        .backend
        .prune_images_with(&PruneOptions {
            dangling: true,
            unused_for: Some(Duration::from_secs(1)),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.kind(), microsandbox::ErrorKind::InvalidArgument);
    assert_eq!(h.snapshot(), before);
}

/// The backend remembers its last listing of `blobs/sha256/` while the
/// directory is unchanged; a blob another process adds or takes away (the
/// directory's ctime moves) is seen by the next call, at once and after
/// the listing has settled.
#[test]
fn a_remembered_blob_listing_sees_every_change() {
    let h = four();
    let blobs = h.oci().join("blobs/sha256");
    let before = h.backend.disk_usage().unwrap().blobs_bytes;
    assert_eq!(before, du_files(&blobs));
    // At once: the listing just taken was racy and is not trusted.
    let planted = blobs.join("ab".repeat(32));
    fs::write(&planted, vec![1u8; 50_000]).unwrap();
    let with = h.backend.disk_usage().unwrap().blobs_bytes;
    assert_eq!(with, du_files(&blobs));
    assert!(with > before, "{with} > {before}");
    // Settled: the listing is remembered, and a change still shows.
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(h.backend.disk_usage().unwrap().blobs_bytes, with);
    assert_eq!(h.backend.disk_usage().unwrap().blobs_bytes, with);
    fs::remove_file(&planted).unwrap();
    assert_eq!(h.backend.disk_usage().unwrap().blobs_bytes, before);
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(h.backend.disk_usage().unwrap().blobs_bytes, before);
    fs::write(&planted, vec![1u8; 50_000]).unwrap();
    assert_eq!(h.backend.disk_usage().unwrap().blobs_bytes, with);
    // The dry run reads the same listing: the planted orphan is reclaimable.
    let dry = h
        .backend
        .prune_images_with(&PruneOptions {
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    assert!(dry.bytes_reclaimed.unwrap() >= with - before);
}
