//! A hostile input corpus beyond the archive one (tests/archive.rs):
//! references, the JSON of a source layout (manifests, configs, index),
//! the cache's own index.json, decompression bombs, and registry answers.
//! Every case gives its documented code, nothing panics, and the cache is
//! unchanged byte for byte.

mod common;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use common::*;
use microsandbox::{Digest, ErrorKind, LoadOptions, PullOptions};
use serde_json::{json, Value};

fn sha(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

/// A copy of the `pair:base` image as a layout of its own, to mutate.
struct Source {
    dir: tempfile::TempDir,
}

impl Source {
    fn new() -> Source {
        let dir = tempfile::tempdir().unwrap();
        skopeo(&[
            "copy",
            "--insecure-policy",
            &format!("oci:{}", fixtures().join("pair:base").display()),
            &format!("oci:{}:base", dir.path().display()),
        ]);
        Source { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn blob(&self, digest: &str) -> PathBuf {
        self.path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn index(&self) -> Value {
        serde_json::from_slice(&fs::read(self.path().join("index.json")).unwrap()).unwrap()
    }

    fn manifest(&self) -> Value {
        let d = self.index()["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        serde_json::from_slice(&fs::read(self.blob(&d)).unwrap()).unwrap()
    }

    fn config(&self) -> Value {
        let d = self.manifest()["config"]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        serde_json::from_slice(&fs::read(self.blob(&d)).unwrap()).unwrap()
    }

    /// Stores bytes as a blob; returns its digest.
    fn put(&self, bytes: &[u8]) -> String {
        let d = sha(bytes);
        fs::write(self.blob(&d), bytes).unwrap();
        d
    }

    /// Makes `bytes` the manifest the index names.
    fn set_manifest_bytes(&self, bytes: &[u8]) {
        let d = self.put(bytes);
        let mut index = self.index();
        index["manifests"][0]["digest"] = json!(d);
        index["manifests"][0]["size"] = json!(bytes.len());
        fs::write(self.path().join("index.json"), index.to_string()).unwrap();
    }

    fn set_manifest(&self, m: &Value) {
        self.set_manifest_bytes(m.to_string().as_bytes());
    }

    /// Makes `bytes` the config the manifest names.
    fn set_config_bytes(&self, bytes: &[u8]) {
        let d = self.put(bytes);
        let mut m = self.manifest();
        m["config"]["digest"] = json!(d);
        m["config"]["size"] = json!(bytes.len());
        self.set_manifest(&m);
    }

    fn set_config(&self, c: &Value) {
        self.set_config_bytes(c.to_string().as_bytes());
    }
}

#[test]
fn hostile_references_are_invalid_references() {
    let h = home();
    h.load("rich");
    let long = "a".repeat(300);
    let cases = [
        "",
        " ",
        "upper/Case",
        long.as_str(),
        "name:tag with space",
        "nul\0byte",
        "../etc/passwd",
        "/absolute",
        "a//b",
        "a:b:c",
        "-leading",
        "name@sha256:short",
        "name@md5:d41d8cd98f00b204e9800998ecf8427e",
        "name@sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        "name:@sha256:",
        "tag:with:colons:",
        "name:-tag",
        "name:t\u{e9}g",
    ];
    let before = h.snapshot();
    for r in cases {
        let err = h.backend.get_image(r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidReference, "{r:?}: {err}");
        let err = h.backend.pull_image(r, &Default::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidReference, "{r:?}: {err}");
    }
    assert_eq!(h.snapshot(), before);
}

#[test]
fn hostile_layout_json_is_refused_with_its_code() {
    type Mutate = Box<dyn Fn(&Source)>;
    let cases: Vec<(&str, Mutate, ErrorKind, &str)> = vec![
        (
            "manifest without layers",
            Box::new(|s| {
                let mut m = s.manifest();
                m.as_object_mut().unwrap().remove("layers");
                s.set_manifest(&m);
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "manifest without config",
            Box::new(|s| {
                let mut m = s.manifest();
                m.as_object_mut().unwrap().remove("config");
                s.set_manifest(&m);
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "manifest schemaVersion 1",
            Box::new(|s| {
                let mut m = s.manifest();
                m["schemaVersion"] = json!(1);
                s.set_manifest(&m);
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "manifest that is not JSON",
            Box::new(|s| s.set_manifest_bytes(b"\x1f\x8b\x08\x00binary")),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "manifest nested 100000 deep",
            Box::new(|s| {
                let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
                s.set_manifest_bytes(deep.as_bytes());
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "manifest labelled an index",
            Box::new(|s| {
                let mut m = s.manifest();
                m["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
                s.set_manifest(&m);
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "layer size over the blob's",
            Box::new(|s| {
                let mut m = s.manifest();
                m["layers"][0]["size"] = json!(1_000_000_000_000_000_000u64);
                s.set_manifest(&m);
            }),
            ErrorKind::DigestMismatch,
            "size mismatch",
        ),
        (
            "layer size negative",
            Box::new(|s| {
                let mut m = s.manifest();
                m["layers"][0]["size"] = json!(-1);
                s.set_manifest(&m);
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "layer size beyond u64",
            Box::new(|s| {
                let m = s.manifest().to_string();
                let size = s.manifest()["layers"][0]["size"].to_string();
                let text = m.replacen(&format!("\"size\":{size}"), "\"size\":1e400", 2);
                s.set_manifest_bytes(text.as_bytes());
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "layer digest of another algorithm",
            Box::new(|s| {
                let mut m = s.manifest();
                m["layers"][0]["digest"] = json!(format!("sha512:{}", "ab".repeat(64)));
                s.set_manifest(&m);
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "layer digest that is a path",
            Box::new(|s| {
                let mut m = s.manifest();
                m["layers"][0]["digest"] = json!("sha256:../../../../etc/passwd");
                s.set_manifest(&m);
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "config digest of a missing blob",
            Box::new(|s| {
                let mut m = s.manifest();
                m["config"]["digest"] = json!(sha(b"nothing like it"));
                s.set_manifest(&m);
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "config without rootfs",
            Box::new(|s| {
                let mut c = s.config();
                c.as_object_mut().unwrap().remove("rootfs");
                s.set_config(&c);
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "config with fewer diff_ids than layers",
            Box::new(|s| {
                let mut c = s.config();
                c["rootfs"]["diff_ids"] = json!([]);
                s.set_config(&c);
            }),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "config with a wrong diff_id",
            Box::new(|s| {
                let mut c = s.config();
                c["rootfs"]["diff_ids"][0] = json!(sha(b"another layer"));
                s.set_config(&c);
            }),
            ErrorKind::DigestMismatch,
            "diff_id",
        ),
        (
            "config that is not JSON",
            Box::new(|s| s.set_config_bytes(b"not json at all")),
            ErrorKind::InvalidArchive,
            "",
        ),
        (
            "index manifests as an object",
            Box::new(|s| {
                let mut i = s.index();
                i["manifests"] = json!({"a": 1});
                fs::write(s.path().join("index.json"), i.to_string()).unwrap();
            }),
            ErrorKind::InvalidArchive,
            "index.json",
        ),
        (
            "index schemaVersion beyond u64",
            Box::new(|s| {
                let text = s.index().to_string().replacen(
                    "\"schemaVersion\":2",
                    "\"schemaVersion\":1e400",
                    1,
                );
                fs::write(s.path().join("index.json"), text).unwrap();
            }),
            ErrorKind::InvalidArchive,
            "index.json",
        ),
        (
            "index naming an invalid reference",
            Box::new(|s| {
                let mut i = s.index();
                i["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] =
                    json!("UPPER/Case:x");
                fs::write(s.path().join("index.json"), i.to_string()).unwrap();
            }),
            ErrorKind::InvalidArchive,
            "invalid reference",
        ),
        (
            "index entry with a wrong size",
            Box::new(|s| {
                let mut i = s.index();
                i["manifests"][0]["size"] = json!(3);
                fs::write(s.path().join("index.json"), i.to_string()).unwrap();
            }),
            ErrorKind::DigestMismatch,
            "",
        ),
        (
            "oci-layout of another version",
            Box::new(|s| {
                fs::write(
                    s.path().join("oci-layout"),
                    r#"{"imageLayoutVersion":"9.9.9"}"#,
                )
                .unwrap();
            }),
            ErrorKind::InvalidArchive,
            "imageLayoutVersion",
        ),
    ];
    let count = cases.len();
    for (what, mutate, kind, needle) in cases {
        let s = Source::new();
        mutate(&s);
        assert_load_refused(s.path(), &LoadOptions::default(), kind, needle, what);
    }
    assert!(count >= 20);
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    use flate2::write::GzEncoder;
    // A tar holding 64 MiB of zeros gzips to about 64 KiB.
    let s = Source::new();
    let mut tar = vec![0u8; 512];
    tar[..4].copy_from_slice(b"zero");
    let size = 64u64 << 20;
    let header = format!("{:011o}\0", size);
    tar[124..136].copy_from_slice(header.as_bytes());
    tar[156] = b'0';
    tar[257..263].copy_from_slice(b"ustar\0");
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    use sha2::Digest as _;
    let zeros = vec![0u8; 1 << 20];
    let mut hasher = sha2::Sha256::new();
    hasher.update(&tar);
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
        hasher.update(&zeros);
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    hasher.update([0u8; 1024]);
    let plain = microsandbox::Digest::from_hasher(hasher).to_string();
    let layer = gz.finish().unwrap();
    assert!(layer.len() < 1 << 20);
    let d = s.put(&layer);
    let mut m = s.manifest();
    m["layers"][0] = json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": d,
        "size": layer.len(),
    });
    let mut c = s.config();
    c["rootfs"]["diff_ids"][0] = json!(plain);
    let cbytes = c.to_string();
    let cd = s.put(cbytes.as_bytes());
    m["config"]["digest"] = json!(cd);
    m["config"]["size"] = json!(cbytes.len());
    s.set_manifest(&m);
    assert_load_refused(
        s.path(),
        &LoadOptions {
            max_layer_bytes: Some(8 << 20),
            ..Default::default()
        },
        ErrorKind::InvalidArchive,
        "decompresses to more than 8388608 bytes",
        "bomb",
    );
    // Under the default limit the same layer is just a layer.
    let h = home();
    h.backend
        .load_images(s.path(), &Default::default())
        .unwrap();
    h.assert_invariants();
}

#[test]
fn a_broken_cache_index_is_a_corrupt_cache_and_stays_as_it_is() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // (An index whose one entry has a bad digest is no longer broken as a
    // whole: that entry is set apart, see tests/security.rs.)
    let cases: [(&str, &[u8]); 5] = [
        ("garbage", b"\x00\x01garbage"),
        ("deep", deep.as_bytes()),
        (
            "manifests a number",
            br#"{"schemaVersion":2,"manifests":5}"#,
        ),
        (
            "huge schemaVersion",
            br#"{"schemaVersion":1e400,"manifests":[]}"#,
        ),
        (
            "truncated",
            br#"{"schemaVersion":2,"manifests":[{"mediaType":"#,
        ),
    ];
    for (what, bytes) in cases {
        let h = home();
        h.load("rich");
        fs::write(h.oci().join("index.json"), bytes).unwrap();
        let before = h.snapshot();
        for err in [
            h.backend.list_images().map(drop).unwrap_err(),
            h.backend.get_image("rich").map(drop).unwrap_err(),
            h.backend.prune_images().map(drop).unwrap_err(),
            h.backend.disk_usage().map(drop).unwrap_err(),
            h.backend
                .load_images(&fixtures().join("pair"), &Default::default())
                .map(drop)
                .unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::CorruptCache, "{what}: {err}");
        }
        assert_eq!(h.snapshot(), before, "{what}");
    }
}

/// A registry that answers every request from `answer(method, path)` with
/// (status, headers, body); one request per connection.
fn fake_registry(
    answer: impl Fn(&str) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for client in listener.incoming().take(500) {
            let Ok(mut client) = client else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let Some(text) = read_request_head(&mut client) else {
                    return;
                };
                let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (status, headers, body) = answer(&path);
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = client.write_all(out.as_bytes());
                let _ = client.write_all(&body);
            });
        }
    });
    addr
}

#[test]
fn hostile_registry_answers_are_refused_with_their_code() {
    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    let ok_config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let config_digest = sha(&ok_config);
    let manifest_with = |config: Value, layers: Value| {
        json!({"schemaVersion":2,"mediaType":manifest_type,"config":config,"layers":layers})
            .to_string()
            .into_bytes()
    };
    type Answer = Box<dyn Fn(&str) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync>;
    let ct = |t: &str| vec![("Content-Type".to_owned(), t.to_owned())];
    let cases: Vec<(&str, Answer, ErrorKind)> = vec![
        (
            "manifest that is not JSON",
            Box::new(move |_| (200, ct(manifest_type), b"<html>hello</html>".to_vec())),
            ErrorKind::InvalidArchive,
        ),
        (
            "manifest nested deep",
            Box::new(move |_| {
                let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
                (200, ct(manifest_type), deep.into_bytes())
            }),
            ErrorKind::InvalidArchive,
        ),
        (
            "manifest larger than the JSON limit",
            Box::new(move |_| (200, ct(manifest_type), vec![b' '; 17 << 20])),
            ErrorKind::RegistryError,
        ),
        (
            "config of another algorithm",
            {
                let m = manifest_with(
                    json!({"mediaType":"application/vnd.oci.image.config.v1+json","digest":format!("sha512:{}", "ab".repeat(64)),"size":10}),
                    json!([]),
                );
                Box::new(move |_| (200, ct(manifest_type), m.clone()))
            },
            ErrorKind::InvalidArchive,
        ),
        (
            "config that does not match its digest",
            {
                let m = manifest_with(
                    json!({"mediaType":"application/vnd.oci.image.config.v1+json","digest":config_digest,"size":ok_config.len()}),
                    json!([]),
                );
                let n = ok_config.len();
                Box::new(move |p: &str| {
                    if p.contains("/manifests/") {
                        (200, ct(manifest_type), m.clone())
                    } else {
                        (200, vec![], vec![b'x'; n])
                    }
                })
            },
            ErrorKind::DigestMismatch,
        ),
        (
            "401 without a challenge",
            Box::new(|_| (401, vec![], vec![])),
            ErrorKind::Unauthorized,
        ),
        (
            "a bearer challenge whose token answer is not JSON",
            Box::new(|p: &str| {
                if p.starts_with("/token") {
                    (200, vec![], b"not json".to_vec())
                } else {
                    (
                        401,
                        vec![(
                            "WWW-Authenticate".to_owned(),
                            "Bearer realm=\"http://127.0.0.1:1/token\"".to_owned(),
                        )],
                        vec![],
                    )
                }
            }),
            ErrorKind::RegistryError,
        ),
        (
            "a bearer challenge without a realm",
            Box::new(|_| {
                (
                    401,
                    vec![(
                        "WWW-Authenticate".to_owned(),
                        "Bearer service=\"x\"".to_owned(),
                    )],
                    vec![],
                )
            }),
            ErrorKind::RegistryError,
        ),
        (
            "an index with only other platforms",
            Box::new(move |_| {
                let index = json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":manifest_type,"digest":sha(b"m"),"size":1,"platform":{"architecture":"s390x","os":"linux"}}]});
                (
                    200,
                    ct("application/vnd.oci.image.index.v1+json"),
                    index.to_string().into_bytes(),
                )
            }),
            ErrorKind::PlatformNotFound,
        ),
        (
            "a layer digest that is a path",
            {
                let m = manifest_with(
                    json!({"mediaType":"application/vnd.oci.image.config.v1+json","digest":config_digest,"size":ok_config.len()}),
                    json!([{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:../../x","size":1}]),
                );
                Box::new(move |_| (200, ct(manifest_type), m.clone()))
            },
            ErrorKind::InvalidArchive,
        ),
    ];
    let count = cases.len();
    for (what, answer, kind) in cases {
        let addr = fake_registry(answer);
        let h = home();
        h.load("rich");
        let before = h.snapshot();
        let err = h
            .backend
            .pull_image(&format!("{addr}/evil/image:1"), &PullOptions::default())
            .map(drop)
            .expect_err(what);
        assert_eq!(err.kind(), kind, "{what}: {err}");
        h.assert_untouched(&before, what);
    }
    assert!(count >= 10);
}
