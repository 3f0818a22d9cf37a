//! The EROFS writer's limits as the cache meets them: a gzip layer of a
//! few hundred bytes whose sparse file declares a size past what an inode
//! holds (2^63, or 2^64-1, which wrapped the writer's block arithmetic) is
//! refused as an invalid archive, no VM artifact is committed and verify
//! stays clean; and a layer image forged in the cache (a negative i_size,
//! which the kernel refuses) is reported by verify.

mod common;
#[path = "../../erofs/tests/common/mod.rs"]
mod erofs_common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{home, Home};
use erofs_common::forge::{fix_checksum, resolve};
use erofs_common::sparse::sparse_1_0;
use erofs_common::tarw::{Ent, TarW};
use microsandbox::{ErrorKind, LoadOptions, Reference};
use sha2::{Digest as _, Sha256};

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let h = hex(&Sha256::digest(bytes));
    fs::write(dir.join("blobs/sha256").join(&h), bytes).unwrap();
    (format!("sha256:{h}"), bytes.len())
}

/// An OCI layout at `dir` with one image `t` whose one layer is `tar`,
/// gzip'ed as a registry serves it; returns the gzip layer's size.
fn gzip_layout(dir: &Path, tar: &[u8]) -> usize {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(tar).unwrap();
    let gz = gz.finish().unwrap();
    let diff_id = format!("sha256:{}", hex(&Sha256::digest(tar)));
    let (ld, ls) = blob(dir, &gz);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let (cd, cs) = blob(dir, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{ld}","size":{ls}}}]}}"#
    );
    let (md, ms) = blob(dir, manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#
    );
    fs::write(dir.join("index.json"), index).unwrap();
    gz.len()
}

fn load(h: &Home, src: &Path) -> microsandbox::MicrosandboxResult<()> {
    h.backend
        .load_images(
            src,
            &LoadOptions {
                reference: Some(Reference::parse("hostile").unwrap()),
                materialize: true,
                ..Default::default()
            },
        )
        .map(|_| ())
}

#[test]
fn sparse_layers_past_an_inode_are_refused_and_nothing_is_committed() {
    for realsize in [1u64 << 63, u64::MAX] {
        let what = format!("realsize {realsize}");
        let mut w = TarW::new();
        sparse_1_0(&mut w, "big", &realsize.to_string(), &[(0, b"0123456789")]);
        let tar = w.finish();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("layout");
        let gz = gzip_layout(&src, &tar);
        assert!(gz < 512, "{what}: a gzip layer of {gz} bytes");

        let h = home();
        let err = load(&h, &src).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArchive, "{what}: {err}");
        let msg = err.to_string();
        eprintln!("{what}: a gzip layer of {gz} bytes: {msg}");
        assert!(
            msg.contains("GNU.sparse.realsize") && msg.contains("GNUSparseFile.0/big"),
            "{what}: {msg}"
        );
        assert!(h.artifacts().is_empty(), "{what}: {:?}", h.artifacts());
        assert!(h.tmp_names().is_empty(), "{what}: {:?}", h.tmp_names());
        // If the load kept the image, making its disk again fails the same way.
        if let Ok(images) = h.backend.list_images() {
            if !images.is_empty() {
                let err = h
                    .backend
                    .materialize("hostile", &Default::default())
                    .unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidArchive, "{what}: {err}");
                assert!(h.artifacts().is_empty(), "{what}: {:?}", h.artifacts());
            }
        }
        let report = h.backend.verify(&Default::default()).unwrap();
        assert!(report.is_clean(), "{what}: {report:?}");
    }
}

#[test]
fn verify_reports_a_layer_image_with_a_negative_size() {
    let mut w = TarW::new();
    w.add(&Ent::dir("d"));
    // A uid past 16 bits: an extended inode, whose size has 64 bits.
    w.add(&Ent::file("d/f", vec![7u8; 10_000]).owner(70000, 0));
    let tar = w.finish();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout");
    gzip_layout(&src, &tar);
    let h = home();
    load(&h, &src).unwrap();
    let report = h.backend.verify(&Default::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.artifacts_checked >= 3, "{report:?}");

    let layers: Vec<PathBuf> = fs::read_dir(h.dir.path().join("cache/vm/layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(layers.len(), 1, "{layers:?}");
    let mut img = fs::read(&layers[0]).unwrap();
    let f = resolve(&img, "d/f");
    assert!(f.extended && f.size == 10_000);
    // What the kernel refuses as "negative i_size"; the superblock's
    // checksum made to match, so only the inode walk can tell.
    img[f.pos + 8..f.pos + 16].copy_from_slice(&((1u64 << 63) + 4096).to_le_bytes());
    fix_checksum(&mut img);
    fs::write(&layers[0], &img).unwrap();

    let report = h.backend.verify(&Default::default()).unwrap();
    assert!(!report.is_clean(), "{report:?}");
    let name = layers[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        report
            .corrupt_artifacts
            .iter()
            .any(|a| a.contains(&name) && a.contains("negative")),
        "{report:?}"
    );
}
