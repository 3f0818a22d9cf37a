//! The cache end to end on real images made by umoci and skopeo.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use microsandbox::testing::{lock_file, LockMode};
use microsandbox::{ErrorKind, Image, LeaseKind, LeaseOptions, LoadOptions};

#[test]
fn inspect_agrees_field_by_field_with_skopeo() {
    let h = home();
    let loaded = h.load("rich");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].reference(), "rich:latest");
    let detail = h.backend.inspect_image("rich").unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(fixtures().join("rich.config.json")).unwrap()).unwrap();
    let c = &cfg["config"];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(detail.config.as_ref().unwrap().env, strings(&c["Env"]));
    assert_eq!(
        detail.config.as_ref().unwrap().cmd,
        Some(strings(&c["Cmd"]))
    );
    assert_eq!(
        detail.config.as_ref().unwrap().entrypoint,
        Some(strings(&c["Entrypoint"]))
    );
    assert_eq!(
        detail.config.as_ref().unwrap().working_dir.as_deref(),
        c["WorkingDir"].as_str()
    );
    assert_eq!(
        detail.config.as_ref().unwrap().user.as_deref(),
        c["User"].as_str()
    );
    assert_eq!(
        detail.config.as_ref().unwrap().stop_signal.as_deref(),
        Some("SIGQUIT")
    );
    assert_eq!(
        detail.config.as_ref().unwrap().stop_signal.as_deref(),
        c["StopSignal"].as_str()
    );
    assert_eq!(
        detail.config.as_ref().unwrap().labels,
        Some(c["Labels"].clone())
    );
    let diff_ids = strings(&cfg["rootfs"]["diff_ids"]);
    assert_eq!(detail.layers.len(), 3);
    let exp = expected();
    for (i, layer) in detail.layers.iter().enumerate() {
        assert_eq!(layer.position as usize, i);
        assert_eq!(layer.diff_id, diff_ids[i]);
        assert_eq!(
            layer.blob_digest,
            exp["rich"]["layers"][i].as_str().unwrap()
        );
        assert_eq!(
            layer.compressed_size_bytes,
            exp["rich"]["layerSizes"][i].as_i64()
        );
        assert_eq!(layer.erofs_size_bytes, None);
    }
    assert_eq!(
        detail.config.as_ref().unwrap().digest,
        exp["rich"]["configDigest"].as_str().unwrap()
    );
    let handle = &detail.handle;
    assert_eq!(handle.manifest_digest().unwrap(), digest_of("rich"));
    assert_eq!(handle.size_bytes().unwrap() as u64, total_size("rich"));
    assert_eq!(handle.layer_count(), 3);
    assert_eq!(
        (handle.os(), handle.architecture()),
        (Some("linux"), Some("amd64"))
    );
    // skopeo's own view of the manifest agrees too.
    let inspect: serde_json::Value =
        serde_json::from_slice(&fs::read(fixtures().join("rich.inspect.json")).unwrap()).unwrap();
    assert_eq!(
        inspect["Digest"].as_str().unwrap(),
        handle.manifest_digest().unwrap()
    );
    h.assert_invariants();
}

#[test]
fn every_equivalent_form_names_the_same_image() {
    let h = home();
    h.load("rich");
    let digest = digest_of("rich");
    for form in [
        "rich".to_owned(),
        "rich:latest".to_owned(),
        "library/rich".to_owned(),
        "docker.io/library/rich:latest".to_owned(),
        "index.docker.io/library/rich".to_owned(),
        format!("rich@{digest}"),
    ] {
        let handle = h
            .backend
            .get_image(&form)
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        assert_eq!(handle.manifest_digest().unwrap(), digest, "{form}");
        assert_eq!(handle.reference(), "rich:latest");
        assert_eq!(
            handle.canonical_reference(),
            "docker.io/library/rich:latest"
        );
    }
    let other = format!("other@{digest}");
    assert_eq!(
        h.backend.get_image(&other).unwrap_err().kind(),
        ErrorKind::ImageNotFound
    );
    let err = h.backend.get_image("rich:v2").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageNotFound);
    assert_eq!(err.to_string(), "image not found: rich:v2");
    assert_eq!(
        h.backend.get_image("Rich").unwrap_err().kind(),
        ErrorKind::InvalidReference
    );
}

#[test]
fn list_reads_index_json_alone_and_is_newest_first() {
    let h = home();
    h.load("rich");
    std::thread::sleep(Duration::from_millis(5));
    h.load("pair");
    let list = h.backend.list_images().unwrap();
    let refs: Vec<&str> = list.iter().map(|i| i.reference()).collect();
    assert_eq!(refs.len(), 3);
    assert_eq!(refs[2], "rich:latest", "{refs:?}");
    assert!(list[0].created_at() >= list[1].created_at());
    // With every blob unreadable, list still answers from index.json.
    let blobs = h.oci().join("blobs");
    let moved = h.dir.path().join("blobs-away");
    fs::rename(&blobs, &moved).unwrap();
    let again = h.backend.list_images().unwrap();
    fs::rename(&moved, &blobs).unwrap();
    assert_eq!(again, list);
}

#[test]
fn reloading_changes_nothing_but_keeps_created_at() {
    let h = home();
    let first = h.load("pair");
    let snapshot = h.snapshot();
    let second = h.load("pair");
    assert_eq!(first, second);
    assert_eq!(h.snapshot(), snapshot);
    assert!(h.tmp_names().is_empty());
}

#[test]
fn platform_indexes_resolve_to_the_host_or_the_requested_platform() {
    let h = home();
    let amd = h.load("multiarch");
    assert_eq!(
        amd[0].manifest_digest().unwrap(),
        digest_of("multiarch/amd64")
    );
    assert_eq!(amd[0].architecture(), Some("amd64"));
    let h2 = home();
    let arm = h2
        .backend
        .load_images(
            &fixtures().join("multiarch"),
            &LoadOptions {
                platform: Some(microsandbox::Platform::parse("linux/arm64").unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        arm[0].manifest_digest().unwrap(),
        digest_of("multiarch/arm64")
    );
    assert_eq!(arm[0].architecture(), Some("arm64"));
    let err = h2
        .backend
        .load_images(
            &fixtures().join("multiarch"),
            &LoadOptions {
                platform: Some(microsandbox::Platform::parse("linux/s390x").unwrap()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PlatformNotFound);
    assert!(err.to_string().contains("linux/arm64"), "{err}");
    // The attestation manifest is never taken, whatever is asked.
    let att = expected()["multiarch/index"]["attestationManifestDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!h.blob_names().contains(att.trim_start_matches("sha256:")));
    h.assert_invariants();
}

#[test]
fn a_layout_written_by_skopeo_loads_with_skopeos_digests() {
    let h = home();
    let loaded = h.load("skopeo");
    assert_eq!(loaded[0].reference(), "copied:latest");
    let inspect: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("oci:{}:copied", fixtures().join("skopeo").display()),
    ]))
    .unwrap();
    assert_eq!(
        loaded[0].manifest_digest().unwrap(),
        inspect["Digest"].as_str().unwrap()
    );
    let detail = h.backend.inspect_image("copied").unwrap();
    let layers: Vec<&str> = detail
        .layers
        .iter()
        .map(|l| l.blob_digest.as_str())
        .collect();
    let theirs: Vec<&str> = inspect["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(layers, theirs);
}

#[test]
fn skopeo_reads_the_cache_as_an_oci_layout() {
    let h = home();
    h.load("pair");
    let spec = format!("oci:{}:docker.io/library/app:latest", h.oci().display());
    let inspect: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", &spec])).unwrap();
    assert_eq!(inspect["Digest"].as_str().unwrap(), digest_of("pair/app"));
    let out = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--insecure-policy",
        &spec,
        &format!("oci:{}:app", out.path().display()),
    ]);
}

#[test]
fn an_entry_another_tool_wrote_is_listed_with_computed_values() {
    let h = home();
    h.load("rich");
    // skopeo writes straight into the cache's layout, without our annotations.
    skopeo(&[
        "copy",
        "--insecure-policy",
        &format!("oci:{}:base", fixtures().join("pair").display()),
        &format!("oci:{}:docker.io/library/foreign:1", h.oci().display()),
    ]);
    let handle = h.backend.get_image("foreign:1").unwrap();
    assert_eq!(handle.manifest_digest().unwrap(), digest_of("pair/base"));
    assert_eq!(handle.size_bytes().unwrap() as u64, total_size("pair/base"));
    assert_eq!(handle.layer_count(), 1);
    assert_eq!(handle.created_at(), None);
    assert_eq!(h.backend.list_images().unwrap().len(), 2);
}

fn expect_load_error(fixture_dir: &std::path::Path, kind: ErrorKind, needle: &str) {
    let h = home();
    h.load("rich");
    let before = h.snapshot();
    let err = h
        .backend
        .load_images(fixture_dir, &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
    assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
    assert_eq!(h.snapshot(), before, "a failed load changed the cache");
    assert!(h.tmp_names().is_empty(), "{:?}", h.tmp_names());
    assert!(h.backend.list_leases().unwrap().is_empty());
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn bad_sources_are_refused_and_leave_the_cache_as_it_was() {
    let exp = expected();
    let corrupted = exp["broken-digest"]["corruptedBlob"].as_str().unwrap();
    expect_load_error(
        &fixtures().join("broken-digest"),
        ErrorKind::DigestMismatch,
        corrupted,
    );
    let deleted = exp["missing-blob"]["deletedBlob"].as_str().unwrap();
    expect_load_error(
        &fixtures().join("missing-blob"),
        ErrorKind::InvalidArchive,
        deleted,
    );
    let work = tempfile::tempdir().unwrap();
    expect_load_error(work.path(), ErrorKind::InvalidArchive, "oci-layout");

    // Malformed index.json.
    let bad_json = work.path().join("bad-json");
    copy_dir(&fixtures().join("pair"), &bad_json);
    fs::write(bad_json.join("index.json"), b"{\"manifests\": [").unwrap();
    expect_load_error(&bad_json, ErrorKind::InvalidArchive, "index.json");

    // A blob that is a symlink to a file elsewhere.
    let symlinked = work.path().join("symlinked");
    copy_dir(&fixtures().join("pair"), &symlinked);
    let layer = exp["pair/app"]["layers"][1].as_str().unwrap();
    let hex = layer.trim_start_matches("sha256:");
    let target = work.path().join("outside");
    fs::copy(symlinked.join("blobs/sha256").join(hex), &target).unwrap();
    fs::remove_file(symlinked.join("blobs/sha256").join(hex)).unwrap();
    std::os::unix::fs::symlink(&target, symlinked.join("blobs/sha256").join(hex)).unwrap();
    expect_load_error(&symlinked, ErrorKind::InvalidArchive, "symlink");

    // A descriptor whose digest is a path escape never parses as a digest.
    let escape = work.path().join("escape");
    copy_dir(&fixtures().join("pair"), &escape);
    let text = fs::read_to_string(escape.join("index.json")).unwrap();
    let first = exp["pair/base"]["manifestDigest"].as_str().unwrap();
    fs::write(
        escape.join("index.json"),
        text.replace(first, "sha256:../../../../etc/passwd"),
    )
    .unwrap();
    expect_load_error(&escape, ErrorKind::InvalidArchive, "index.json");

    // A manifest declaring a huge size is refused before any read.
    let huge = work.path().join("huge");
    copy_dir(&fixtures().join("pair"), &huge);
    let text = fs::read_to_string(huge.join("index.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let size = v["manifests"][0]["size"].as_u64().unwrap();
    fs::write(
        huge.join("index.json"),
        text.replacen(
            &format!("\"size\":{size}"),
            "\"size\":18446744073709551615",
            1,
        ),
    )
    .unwrap();
    expect_load_error(&huge, ErrorKind::InvalidArchive, "limit");

    // A name pinning a digest that is not the one its descriptor points at.
    let lying = work.path().join("lying-digest");
    copy_dir(&fixtures().join("pair"), &lying);
    let text = fs::read_to_string(lying.join("index.json")).unwrap();
    let other = exp["rich"]["manifestDigest"].as_str().unwrap();
    fs::write(
        lying.join("index.json"),
        text.replacen("\"base\"", &format!("\"base@{other}\""), 1),
    )
    .unwrap();
    expect_load_error(&lying, ErrorKind::InvalidArchive, "names digest");

    // index.json as a FIFO must not hang the load.
    let fifo = work.path().join("fifo");
    copy_dir(&fixtures().join("pair"), &fifo);
    fs::remove_file(fifo.join("index.json")).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(fifo.join("index.json"))
        .status()
        .unwrap();
    assert!(status.success());
    expect_load_error(&fifo, ErrorKind::InvalidArchive, "not a regular file");

    // A reference outside the grammar.
    let bad_ref = work.path().join("bad-ref");
    copy_dir(&fixtures().join("pair"), &bad_ref);
    let text = fs::read_to_string(bad_ref.join("index.json")).unwrap();
    fs::write(
        bad_ref.join("index.json"),
        text.replacen("\"base\"", "\"BASE/../x\"", 1),
    )
    .unwrap();
    expect_load_error(&bad_ref, ErrorKind::InvalidArchive, "invalid reference");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_operations_in_one_process_keep_the_invariants() {
    let h = home();
    let backend = h.backend.clone();
    Image::load_local(&backend, fixtures().join("rich"), Default::default())
        .await
        .unwrap();
    // A sandbox pins rich for the whole run: prune must never take it.
    let pin = Image::acquire_local(&backend, "rich", Default::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let b = backend.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..15 {
                match (worker + round) % 6 {
                    0 => {
                        Image::load_local(&b, fixtures().join("pair"), Default::default())
                            .await
                            .unwrap();
                    }
                    1 => {
                        let lease = Image::acquire_local(&b, "rich", Default::default())
                            .await
                            .unwrap();
                        // While leased, rich stays whole whatever else runs.
                        let d = Image::inspect_local(&b, "rich").await.unwrap();
                        assert_eq!(d.layers.len(), 3);
                        Image::release_local(&b, &lease.id).await.unwrap();
                    }
                    2 => {
                        Image::prune_local(&b).await.unwrap();
                    }
                    3 => match Image::remove_local(&b, "app", false).await {
                        Ok(()) => {}
                        Err(e) => assert_eq!(e.kind(), ErrorKind::ImageNotFound, "{e}"),
                    },
                    4 => {
                        Image::list_local(&b).await.unwrap();
                    }
                    _ => match Image::inspect_local(&b, "base").await {
                        Ok(d) => assert_eq!(d.layers.len(), 1),
                        Err(e) => assert_eq!(e.kind(), ErrorKind::ImageNotFound, "{e}"),
                    },
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Image::get_local(&backend, "rich").await.unwrap();
    h.assert_invariants();
    Image::release_local(&backend, &pin.id).await.unwrap();
    Image::prune_local(&backend).await.unwrap();
    assert!(h.blob_names().is_empty());
    assert!(h.tmp_names().is_empty());
}

#[test]
fn one_digest_with_two_sizes_is_refused() {
    let exp = expected();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("two-sizes");
    copy_dir(&fixtures().join("pair"), &dir);
    // Rewrite app's manifest so its shared base layer claims another size.
    let app = exp["pair/app"]["manifestDigest"].as_str().unwrap();
    let blob = dir
        .join("blobs/sha256")
        .join(app.trim_start_matches("sha256:"));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&blob).unwrap()).unwrap();
    let real = manifest["layers"][0]["size"].as_u64().unwrap();
    manifest["layers"][0]["size"] = serde_json::json!(real + 1);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = microsandbox::Digest::of(&bytes);
    fs::write(dir.join("blobs/sha256").join(digest.hex()), &bytes).unwrap();
    let text = fs::read_to_string(dir.join("index.json")).unwrap();
    let old_size = exp["pair/app"]["manifestSize"].as_u64().unwrap();
    let text = text.replace(app, digest.as_str()).replace(
        &format!("\"size\":{old_size}"),
        &format!("\"size\":{}", bytes.len()),
    );
    fs::write(dir.join("index.json"), text).unwrap();
    expect_load_error(&dir, ErrorKind::InvalidArchive, "declared with");
}

#[test]
fn a_directory_in_tmp_or_blobs_does_not_break_prune() {
    let h = home();
    h.load("rich");
    fs::create_dir(h.dir.path().join("cache/tmp/somedir")).unwrap();
    fs::create_dir(h.oci().join("blobs/sha256").join("a".repeat(64))).unwrap();
    h.backend.remove_image("rich", false).unwrap();
    let rich_bytes = h.allocated(&blobs_of("rich"));
    let report = h.backend.prune_images().unwrap();
    assert_eq!(report.bytes_reclaimed.unwrap(), rich_bytes);
    assert!(rich_bytes >= total_size("rich"));
    assert!(h.dir.path().join("cache/tmp/somedir").is_dir());
}

#[test]
fn a_prune_that_cannot_mark_changes_nothing() {
    let h = home();
    h.load("pair");
    let lease = h
        .backend
        .acquire_lease("base", &Default::default())
        .unwrap();
    // The pinned manifest is damaged: prune cannot know what it needs.
    let base = digest_of("pair/base");
    let path = h
        .oci()
        .join("blobs/sha256")
        .join(base.trim_start_matches("sha256:"));
    fs::write(&path, b"not json").unwrap();
    let before = h.snapshot();
    let err = h.backend.prune_images().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptCache, "{err}");
    assert_eq!(h.snapshot(), before);
    assert!(h.backend.get_image("app").is_ok());
    h.backend.release_lease(&lease.id).unwrap();
}

#[test]
fn an_expiry_past_year_9999_is_an_invalid_argument() {
    let h = home();
    h.load("rich");
    let err = h
        .backend
        .acquire_lease(
            "rich",
            &LeaseOptions {
                expires_in: Some(Duration::from_secs(1 << 50)),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(h.backend.list_leases().unwrap().is_empty());
}

/// Writes `value` as a blob of the layout at `dir`; returns digest and size.
fn put_json(dir: &std::path::Path, value: &serde_json::Value) -> (String, u64) {
    let bytes = serde_json::to_vec(value).unwrap();
    let digest = microsandbox::Digest::of(&bytes);
    fs::write(dir.join("blobs/sha256").join(digest.hex()), &bytes).unwrap();
    (digest.to_string(), bytes.len() as u64)
}

#[test]
fn a_gzip_layer_must_decompress_to_its_diff_id() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("lying-diff-id");
    copy_dir(&fixtures().join("pair"), &dir);
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let read = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(blob(d)).unwrap()).unwrap()
    };
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let at = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .position(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "base")
        .unwrap();
    let mut manifest = read(index["manifests"][at]["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());
    config["rootfs"]["diff_ids"][0] = serde_json::json!(format!("sha256:{}", "0".repeat(64)));
    let (digest, size) = put_json(&dir, &config);
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put_json(&dir, &manifest);
    index["manifests"][at]["digest"] = digest.into();
    index["manifests"][at]["size"] = size.into();
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    expect_load_error(&dir, ErrorKind::DigestMismatch, "diff_id");
    // Also when the cache holds the layer already: the new config is checked.
    let h = home();
    h.load("pair");
    let before = h.snapshot();
    let err = h
        .backend
        .load_images(&dir, &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DigestMismatch, "{err}");
    assert_eq!(h.snapshot(), before);
}

#[test]
fn a_caller_cannot_take_an_ingest_lease() {
    let h = home();
    h.load("rich");
    let err = h
        .backend
        .acquire_lease(
            "rich",
            &LeaseOptions {
                kind: Some(LeaseKind::Ingest),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("ingest"), "{err}");
    assert!(h.backend.list_leases().unwrap().is_empty());
    assert_eq!(LeaseKind::parse("snapshot").unwrap(), LeaseKind::Snapshot);
    for text in ["ingest", "Sandbox", ""] {
        let err = LeaseKind::parse(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{text:?}");
    }
}

#[path = "cache/removal.rs"]
mod removal;
