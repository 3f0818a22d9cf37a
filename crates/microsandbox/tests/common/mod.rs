//! Shared test support: real fixtures made by umoci and skopeo, fresh
//! homes, and checks of the cache invariants of DESIGN.md §4.

#![allow(dead_code)]

pub mod registry;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use microsandbox::testing::{IndexFile, ManifestDoc, Shape};
use microsandbox::{Digest, LocalBackend};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fixture set, built once per test binary by `fixtures/make.sh`.
/// Fails (never skips) when the tools are missing.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo_root();
        let out = root.join("target/fixtures");
        let status = Command::new("bash")
            .arg(root.join("fixtures/make.sh"))
            .arg(&out)
            .status()
            .expect("run fixtures/make.sh");
        assert!(
            status.success(),
            "fixtures/make.sh failed: umoci, skopeo and jq are required (install them with apt-get)"
        );
        out
    })
}

/// manifest.json of the fixtures.
pub fn expected() -> serde_json::Value {
    serde_json::from_slice(&fs::read(fixtures().join("manifest.json")).unwrap()).unwrap()
}

pub fn digest_of(key: &str) -> String {
    expected()[key]["manifestDigest"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub fn total_size(key: &str) -> u64 {
    expected()[key]["totalSize"].as_u64().unwrap()
}

/// Every blob of a fixture image: manifest, config, layers.
pub fn blobs_of(key: &str) -> Vec<String> {
    let exp = expected();
    let e = &exp[key];
    let mut out = vec![
        e["manifestDigest"].as_str().unwrap().to_owned(),
        e["configDigest"].as_str().unwrap().to_owned(),
    ];
    for l in e["layers"].as_array().unwrap() {
        out.push(l.as_str().unwrap().to_owned());
    }
    out
}

pub struct Home {
    pub dir: tempfile::TempDir,
    pub backend: LocalBackend,
}

pub fn home() -> Home {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::builder()
        .home(dir.path())
        .build_blocking()
        .unwrap();
    Home { dir, backend }
}

impl Home {
    pub fn oci(&self) -> PathBuf {
        self.dir.path().join("cache/oci")
    }

    pub fn blob_names(&self) -> BTreeSet<String> {
        fs::read_dir(self.oci().join("blobs/sha256"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The bytes blobs of this cache occupy on disk (allocated blocks, as
    /// `du` counts); absent ones count nothing.
    pub fn allocated(&self, digests: &[String]) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let distinct: BTreeSet<&String> = digests.iter().collect();
        distinct
            .into_iter()
            .filter_map(|d| {
                fs::metadata(
                    self.oci()
                        .join("blobs/sha256")
                        .join(d.trim_start_matches("sha256:")),
                )
                .ok()
            })
            .map(|m| m.blocks() * 512)
            .sum()
    }

    /// The references the cache lists, sorted.
    pub fn refs(&self) -> Vec<String> {
        let mut r: Vec<String> = self
            .backend
            .list_images()
            .unwrap()
            .iter()
            .map(|i| i.reference().to_owned())
            .collect();
        r.sort();
        r
    }

    /// Asserts that a failed operation left the cache as `before` and no
    /// temporary or pin behind.
    pub fn assert_untouched(&self, before: &(Vec<u8>, BTreeSet<String>), what: &str) {
        assert_eq!(&self.snapshot(), before, "{what}: the cache changed");
        assert!(
            self.tmp_names().is_empty(),
            "{what}: {:?}",
            self.tmp_names()
        );
        assert!(self.backend.list_leases().unwrap().is_empty(), "{what}");
    }

    /// The VM artifacts in the cache, as `dir/name`, sorted.
    pub fn artifacts(&self) -> Vec<String> {
        let mut out = Vec::new();
        for dir in ["layers", "fsmeta", "vmdk"] {
            let d = self.dir.path().join("cache/vm").join(dir);
            for e in fs::read_dir(&d).into_iter().flatten() {
                let name = e.unwrap().file_name();
                out.push(format!("{dir}/{}", name.to_string_lossy()));
            }
        }
        out.sort();
        out
    }

    pub fn tmp_names(&self) -> Vec<String> {
        fs::read_dir(self.dir.path().join("cache/tmp"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Everything a reader could see: index.json's bytes and the blob names.
    pub fn snapshot(&self) -> (Vec<u8>, BTreeSet<String>) {
        (
            fs::read(self.oci().join("index.json")).unwrap_or_default(),
            self.blob_names(),
        )
    }

    pub fn load(&self, fixture: &str) -> Vec<microsandbox::ImageHandle> {
        self.backend
            .load_images(&fixtures().join(fixture), &Default::default())
            .unwrap()
    }

    /// Invariants 1 and 2: every reference resolves to a manifest whose
    /// blobs are all present, and every blob hashes to its name.
    pub fn assert_invariants(&self) {
        let index: IndexFile =
            serde_json::from_slice(&fs::read(self.oci().join("index.json")).unwrap()).unwrap();
        let blobs = self.oci().join("blobs/sha256");
        for d in &index.manifests {
            let bytes = fs::read(blobs.join(d.digest.hex()))
                .unwrap_or_else(|_| panic!("manifest {} of {:?} missing", d.digest, d.ref_name()));
            let doc = ManifestDoc::parse(&bytes).unwrap();
            if let Ok(Shape::Image { config, layers }) = doc.shape() {
                for b in std::iter::once(config).chain(layers) {
                    assert!(
                        blobs.join(b.digest.hex()).is_file(),
                        "blob {} of {:?} missing",
                        b.digest,
                        d.ref_name()
                    );
                }
            }
        }
        for name in self.blob_names() {
            let bytes = fs::read(blobs.join(&name)).unwrap();
            assert_eq!(Digest::of(&bytes).hex(), name, "blob {name} is corrupt");
        }
    }
}

pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is required (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Reads an HTTP request head (to the blank line) from a test server's
/// client; `None` if the client goes away first.
pub fn read_request_head(client: &mut std::net::TcpStream) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Loads `path` into a cache holding `rich` and checks the code, the
/// message, and that the cache did not change.
pub fn assert_load_refused(
    path: &Path,
    options: &microsandbox::LoadOptions,
    kind: microsandbox::ErrorKind,
    needle: &str,
    what: &str,
) {
    let h = home();
    h.load("rich");
    let before = h.snapshot();
    let err = h
        .backend
        .load_images(path, options)
        .map(|_| ())
        .expect_err(what);
    assert_eq!(err.kind(), kind, "{what}: {err}");
    assert!(
        err.to_string().contains(needle),
        "{what}: {err} lacks {needle:?}"
    );
    h.assert_untouched(&before, what);
}
