//! Blobs sent without hashing them again: the first whole GET of a blob
//! hashes it and seals it in the server's process; the next ones are sent
//! without a hash, with one `fstat` against the seal. A blob whose bytes
//! are changed on disk, even with the same size and its modification time
//! put back, is never sent whole again, and ranges of a sealed blob still
//! come out right. Clients are curl, over TCP with the token.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use microsandbox::blob_seal;
use microsandbox::{Digest, LocalBackend};
use microsandbox_serve::{Config, Listen, Server, Token};
use sha2::Digest as _;

const TOKEN: &str = "test-token-0123456789abcdef";
/// Many reads and a short last one: the check before the last one matters.
const DATA: usize = (1 << 20) + 12_345;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OCI layout of one image `big:1` whose one layer (an uncompressed
/// tar) holds `DATA` pseudo-random bytes; the layer's digest.
fn layout(dir: &Path) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..DATA)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("data.bin"), &data).unwrap();
    let tar = dir.join("layer.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("data.bin")
        .status()
        .expect("tar is required");
    assert!(st.success());
    let put = |bytes: &[u8]| {
        let d = hex(&sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&d), bytes).unwrap();
        (format!("sha256:{d}"), bytes.len())
    };
    let (ld, ls) = put(&std::fs::read(&tar).unwrap());
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [ld]},
    });
    let (cd, cs) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}],
    });
    let (md, ms) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": "big:1"},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    ld
}

/// A GET with curl into `out`: (curl succeeded, status, bytes received).
fn get(server: &Server, path: &str, range: Option<&str>, out: &Path) -> (bool, u16, u64) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o"])
        .arg(out)
        .args(["-w", "%{http_code} %{size_download}", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"));
    if let Some(r) = range {
        cmd.args(["-r", r]);
    }
    let o = cmd
        .arg(format!("http://{}{path}", server.address()))
        .output()
        .expect("curl is required");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (code, size) = text.trim().split_once(' ').unwrap();
    (
        o.status.success(),
        code.parse().unwrap(),
        size.parse().unwrap(),
    )
}

#[test]
fn a_sealed_blob_is_served_whole_and_in_ranges_and_an_edit_in_place_is_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layout(&dir.path().join("layout"));
    let backend = LocalBackend::builder()
        .home(dir.path().join("home"))
        .build_blocking()
        .unwrap();
    backend
        .load_images(&dir.path().join("layout"), &Default::default())
        .unwrap();
    let mut c = Config::new(backend);
    c.listen = Some(Listen::parse("127.0.0.1:0").unwrap());
    c.token = Some(Token::new(TOKEN).unwrap());
    let server = Server::start(c).unwrap();

    let blob = dir
        .path()
        .join("home/cache/oci/blobs/sha256")
        .join(&layer[7..]);
    let whole = std::fs::read(&blob).unwrap();
    let digest: Digest = layer.parse().unwrap();
    let sealed = || blob_seal::sealed(&File::open(&blob).unwrap(), &digest).is_some();
    let path = format!("/v2/library/big/blobs/{layer}");
    let out = dir.path().join("out");

    // Just committed: hashed as it is sent, not sealed (its change time
    // could still be shared by a write in the same tick).
    assert_eq!(
        get(&server, &path, None, &out),
        (true, 200, whole.len() as u64)
    );
    assert_eq!(std::fs::read(&out).unwrap(), whole);
    assert!(!sealed());
    std::thread::sleep(blob_seal::SETTLED + std::time::Duration::from_millis(200));
    // Hashed in full: sealed after.
    assert_eq!(
        get(&server, &path, None, &out),
        (true, 200, whole.len() as u64)
    );
    assert_eq!(std::fs::read(&out).unwrap(), whole);
    assert!(sealed(), "a whole GET that hashed the blob seals it");
    // Sent from the seal: the same bytes, whole and in ranges.
    for _ in 0..2 {
        assert_eq!(
            get(&server, &path, None, &out),
            (true, 200, whole.len() as u64)
        );
        assert_eq!(std::fs::read(&out).unwrap(), whole);
    }
    for (range, from, to) in [
        ("0-9", 0, 9),
        ("1000-", 1000, whole.len() - 1),
        ("300000-700000", 300_000, 700_000),
    ] {
        let (ok, code, n) = get(&server, &path, Some(range), &out);
        assert!(ok && code == 206, "{range}: {code}");
        assert_eq!(n as usize, to - from + 1, "{range}");
        assert_eq!(std::fs::read(&out).unwrap(), &whole[from..=to], "{range}");
    }
    assert!(sealed());

    // One byte changed in place, the size the same, the time put back.
    let f = File::options().write(true).open(&blob).unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    let mid = whole.len() / 2;
    f.write_at(&[whole[mid] ^ 0xff], mid as u64).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), whole.len() as u64);
    assert_eq!(std::fs::metadata(&blob).unwrap().modified().unwrap(), mtime);
    assert!(!sealed(), "the change time moved: the seal no longer holds");
    for _ in 0..2 {
        let (ok, code, n) = get(&server, &path, None, &out);
        assert!(!ok, "curl must see a cut answer ({code}, {n} bytes)");
        assert!(n < whole.len() as u64, "{n} of {} bytes", whole.len());
    }
    assert!(!sealed(), "a blob that fails its hash is never sealed");
    server.stop();
}
