//! An OCI image layout of uncompressed layer tars, and `umoci unpack` of it:
//! the reference view of a whole image (whiteouts applied).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let h = hex(&Sha256::digest(bytes));
    std::fs::write(dir.join("blobs/sha256").join(&h), bytes).unwrap();
    (format!("sha256:{h}"), bytes.len())
}

fn blob_file(dir: &Path, file: &Path) -> (String, u64) {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(file).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    let hx = hex(&h.finalize());
    let dst = dir.join("blobs/sha256").join(&hx);
    if std::fs::hard_link(file, &dst).is_err() {
        std::fs::copy(file, &dst).unwrap();
    }
    (
        format!("sha256:{hx}"),
        std::fs::metadata(file).unwrap().len(),
    )
}

/// Writes an OCI layout at `dir` with one image `t` of these layer tars.
pub fn layout(dir: &Path, layers: &[PathBuf]) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let descs: Vec<(String, u64)> = layers.iter().map(|l| blob_file(dir, l)).collect();
    let diff_ids: Vec<String> = descs.iter().map(|d| format!("\"{}\"", d.0)).collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let (cd, cs) = blob(dir, config.as_bytes());
    let layer_descs: Vec<String> = descs
        .iter()
        .map(|(d, s)| {
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{s}}}"#)
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[{}]}}"#,
        layer_descs.join(",")
    );
    let (md, ms) = blob(dir, manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#
    );
    std::fs::write(dir.join("index.json"), index).unwrap();
}

/// `umoci unpack` of the image as root; returns the rootfs.
pub fn unpack(layout_dir: &Path, bundle: &Path) -> PathBuf {
    super::run(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:t", layout_dir.display()))
            .arg(bundle),
    );
    bundle.join("rootfs")
}
