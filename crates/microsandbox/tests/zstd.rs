//! zstd layers, as podman, buildx and `skopeo --dest-compress-format
//! zstd` (and `zstd:chunked`, whose layers are many frames and skippable
//! ones) write them: loaded, pulled and saved with every diff_id checked
//! exactly as for gzip, a forged diff_id refused with nothing stored.

mod common;

use std::fs;
use std::path::Path;

use common::registry::registry;
use common::{fixtures, home, skopeo};
use microsandbox::{ErrorKind, LoadOptions, Reference, SaveFormat, SaveOptions};
use serde_json::Value;

const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// skopeo's copy of fixture `rich` into the layout `dir` (tag `rich`),
/// its layers recompressed in `format` (`zstd`, `zstd:chunked`).
fn zstd_copy(dir: &Path, format: &str) {
    skopeo(&[
        "copy",
        "-q",
        "--dest-compress-format",
        format,
        "--dest-compress",
        &format!("oci:{}:rich", fixtures().join("rich").display()),
        &format!("oci:{}:rich", dir.display()),
    ]);
}

/// skopeo's copy of the layout `dir`'s `rich` to the registry as `name`,
/// its bytes kept as they are.
fn push_rich(dir: &Path, name: &str) {
    skopeo(&[
        "copy",
        "-q",
        "--insecure-policy",
        "--dest-tls-verify=false",
        &format!("oci:{}:rich", dir.display()),
        &format!("docker://{name}"),
    ]);
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn blob(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The layout's one manifest and its config.
fn manifest_and_config(dir: &Path) -> (Value, Value) {
    let index = read_json(&dir.join("index.json"));
    let m = read_json(&blob(
        dir,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    let c = read_json(&blob(dir, m["config"]["digest"].as_str().unwrap()));
    (m, c)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The diff_id the cache recorded on a layer blob (its attribute).
fn recorded_diff_id(home: &Path, digest: &str) -> Option<String> {
    let path = blob(&home.join("cache/oci"), digest);
    let mut buf = [0u8; 100];
    let n = rustix::fs::getxattr(&path, "user.microsandbox.diff_id", &mut buf[..]).ok()?;
    Some(String::from_utf8(buf[..n].to_vec()).unwrap())
}

/// The cache's image `reference`: each layer zstd, each diff_id the
/// config's, each recorded as checked.
fn assert_checked_zstd(h: &common::Home, reference: &str, diff_ids: &[String]) {
    let detail = h.backend.inspect_image(reference).unwrap();
    assert_eq!(detail.layers.len(), diff_ids.len());
    for (l, want) in detail.layers.iter().zip(diff_ids) {
        assert_eq!(l.media_type.as_deref(), Some(ZSTD), "{l:?}");
        assert_eq!(&l.diff_id, want);
        assert_eq!(
            recorded_diff_id(h.dir.path(), &l.blob_digest).as_ref(),
            Some(want),
            "layer {} of {reference} was not checked",
            l.blob_digest
        );
    }
    let report = h.backend.verify(&Default::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    h.assert_invariants();
}

#[test]
fn zstd_and_zstd_chunked_images_load_pull_and_save_with_every_diff_id_checked() {
    let reg = registry();
    for format in ["zstd", "zstd:chunked"] {
        let work = tempfile::tempdir().unwrap();
        let z = work.path().join("z");
        zstd_copy(&z, format);
        let (m, c) = manifest_and_config(&z);
        let diff_ids = strings(&c["rootfs"]["diff_ids"]);
        let layers: Vec<String> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                assert_eq!(l["mediaType"], ZSTD, "{format}");
                l["digest"].as_str().unwrap().to_owned()
            })
            .collect();
        // zstd:chunked keeps its table of contents in a skippable frame.
        if format == "zstd:chunked" {
            let bytes = fs::read(blob(&z, &layers[0])).unwrap();
            assert!(
                bytes.windows(3).any(|w| w == [0x2a, 0x4d, 0x18]),
                "no skippable frame in a zstd:chunked layer"
            );
        }

        // Load.
        let h = home();
        let loaded = h.backend.load_images(&z, &LoadOptions::default()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_checked_zstd(&h, "rich", &diff_ids);

        // Pull: the registry keeps skopeo's bytes, so the digests agree.
        let name = format!("{}/zstd/rich:{}", reg.addr, format.replace(':', "-"));
        push_rich(&z, &name);
        let p = home();
        let pulled = p.backend.pull_image(&name, &Default::default()).unwrap();
        assert_eq!(
            pulled.manifest_digest(),
            loaded[0].manifest_digest(),
            "{format}"
        );
        assert_checked_zstd(&p, &name, &diff_ids);

        // Save in both formats; each loads back into a new cache with
        // the same layer blobs, zstd still, checked again.
        for (fmt, file) in [
            (SaveFormat::Oci, "oci.tar"),
            (SaveFormat::Docker, "docker.tar"),
        ] {
            let out = work.path().join(file);
            h.backend
                .save_images(
                    &["rich".to_owned()],
                    &out,
                    &SaveOptions {
                        format: fmt,
                        ..Default::default()
                    },
                )
                .unwrap();
            let again = home();
            again
                .backend
                .load_images(
                    &out,
                    &LoadOptions {
                        reference: Some(Reference::parse("again").unwrap()),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_checked_zstd(&again, "again", &diff_ids);
            let detail = again.backend.inspect_image("again").unwrap();
            let blobs: Vec<&str> = detail
                .layers
                .iter()
                .map(|l| l.blob_digest.as_str())
                .collect();
            assert_eq!(blobs, layers, "{format} saved as {file}");
        }
        // A whole archive compressed with zstd (`.tar.zst`) loads as well.
        let tar = fs::read(work.path().join("docker.tar")).unwrap();
        let zst = work.path().join("docker.tar.zst");
        fs::write(&zst, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        let again = home();
        let handles = again
            .backend
            .load_images(&zst, &LoadOptions::default())
            .unwrap();
        assert_eq!(handles.len(), 1);
        assert_checked_zstd(&again, handles[0].reference(), &diff_ids);
        // skopeo reads what was saved as it reads its own.
        let out = work.path().join("oci.tar");
        let seen: Value = serde_json::from_str(&skopeo(&[
            "inspect",
            &format!("oci-archive:{}", out.display()),
        ]))
        .unwrap();
        assert_eq!(strings(&seen["Layers"]), layers);
    }
}

/// Rewrites `dir`'s image: `edit` changes its manifest and config, which
/// are written anew with the index naming them.
fn rewrite(dir: &Path, edit: impl FnOnce(&mut Value, &mut Value)) {
    let (mut m, mut c) = manifest_and_config(dir);
    edit(&mut m, &mut c);
    let put = |bytes: Vec<u8>| {
        let digest = microsandbox::Digest::of(&bytes).to_string();
        fs::write(blob(dir, &digest), &bytes).unwrap();
        (digest, bytes.len())
    };
    let (cd, cs) = put(serde_json::to_vec(&c).unwrap());
    m["config"]["digest"] = Value::from(cd);
    m["config"]["size"] = Value::from(cs);
    let (md, ms) = put(serde_json::to_vec(&m).unwrap());
    let mut index = read_json(&dir.join("index.json"));
    index["manifests"][0]["digest"] = Value::from(md);
    index["manifests"][0]["size"] = Value::from(ms);
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn a_forged_zstd_diff_id_is_refused_by_load_and_pull_and_nothing_is_stored() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let z = work.path().join("z");
    zstd_copy(&z, "zstd");
    let (_, c) = manifest_and_config(&z);
    // The second layer's diff_id: a real digest, the wrong one.
    let forged = c["rootfs"]["diff_ids"][1].as_str().unwrap().to_owned();
    rewrite(&z, |_, c| {
        c["rootfs"]["diff_ids"][0] = Value::from(forged.as_str())
    });

    let h = home();
    h.load("pair");
    let before = h.snapshot();
    let err = h
        .backend
        .load_images(&z, &LoadOptions::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DigestMismatch, "{err}");
    assert!(err.to_string().contains(&forged), "{err}");
    h.assert_untouched(&before, "a load of a forged zstd layer");
    assert!(h.tmp_names().is_empty(), "{:?}", h.tmp_names());

    let name = format!("{}/zstd/forged:1", reg.addr);
    push_rich(&z, &name);
    for materialize in [false, true] {
        let err = h
            .backend
            .pull_image(
                &name,
                &microsandbox::PullOptions {
                    materialize,
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DigestMismatch, "{err}");
        assert_eq!(h.snapshot(), before, "a pull of a forged zstd layer");
        // As for gzip: downloads that hash to their names wait in tmp/ for
        // the next try (which checks them again), never in blobs/.
        let left = h.tmp_names();
        assert!(left.iter().all(|n| n.starts_with("partial-")), "{left:?}");
        assert!(h.backend.list_leases().unwrap().is_empty());
        assert!(h.artifacts().is_empty(), "{:?}", h.artifacts());
    }
    h.backend.prune_images().unwrap();
    assert!(h.tmp_names().is_empty(), "{:?}", h.tmp_names());
    let report = h.backend.verify(&Default::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn a_zstd_layer_cut_short_or_inflating_past_the_limit_is_an_invalid_archive() {
    let work = tempfile::tempdir().unwrap();
    let z = work.path().join("z");
    zstd_copy(&z, "zstd");
    let (m, _) = manifest_and_config(&z);
    let top = m["layers"][2]["digest"].as_str().unwrap().to_owned();

    // Over the limit: the layers of `rich` inflate to a few KiB.
    let h = home();
    h.load("pair");
    let before = h.snapshot();
    let err = h
        .backend
        .load_images(
            &z,
            &LoadOptions {
                max_layer_bytes: Some(1024),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArchive, "{err}");
    assert!(err.to_string().contains("more than 1024 bytes"), "{err}");
    h.assert_untouched(&before, "a zstd bomb");

    // Cut short: the blob's last bytes gone, the manifest made to match,
    // so only the zstd stream tells.
    let path = blob(&z, &top);
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 4);
    let cut = microsandbox::Digest::of(&bytes).to_string();
    fs::write(blob(&z, &cut), &bytes).unwrap();
    rewrite(&z, |m, _| {
        m["layers"][2]["digest"] = Value::from(cut.as_str());
        m["layers"][2]["size"] = Value::from(bytes.len());
    });
    let err = h
        .backend
        .load_images(&z, &LoadOptions::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArchive, "{err}");
    assert!(err.to_string().contains("corrupt zstd layer"), "{err}");
    h.assert_untouched(&before, "a zstd layer cut short");
}
