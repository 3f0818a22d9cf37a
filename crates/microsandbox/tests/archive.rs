//! Archives made by skopeo load with skopeo's digests; hostile archives
//! are refused and leave the cache as it was.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use microsandbox::ErrorKind;

/// `skopeo copy oci:<fixture> <transport>:<dir>/<file>:<tag>`.
fn skopeo_archive(dir: &Path, transport: &str, file: &str, tag: &str, from: &str) -> PathBuf {
    let out = dir.join(file);
    skopeo(&[
        "copy",
        "--insecure-policy",
        &format!("oci:{}", fixtures().join(from).display()),
        &format!("{transport}:{}:{tag}", out.display()),
    ]);
    out
}

fn gzip(path: &Path) -> PathBuf {
    let status = Command::new("gzip").arg("-kf").arg(path).status().unwrap();
    assert!(status.success());
    path.with_extension("tar.gz")
}

#[test]
fn oci_archives_from_skopeo_load_plain_and_gzipped() {
    let work = tempfile::tempdir().unwrap();
    // skopeo's oci-archive names the image by the tag alone: `rich`.
    let tar = skopeo_archive(work.path(), "oci-archive", "rich.tar", "rich", "rich:rich");
    for path in [tar.clone(), gzip(&tar)] {
        let h = home();
        let loaded = h.backend.load_images(&path, &Default::default()).unwrap();
        assert_eq!(loaded.len(), 1, "{}", path.display());
        assert_eq!(loaded[0].manifest_digest().unwrap(), digest_of("rich"));
        assert_eq!(loaded[0].size_bytes().unwrap() as u64, total_size("rich"));
        let d = h.backend.inspect_image("rich").unwrap();
        assert_eq!(
            d.config.as_ref().unwrap().stop_signal.as_deref(),
            Some("SIGQUIT")
        );
        h.assert_invariants();
        assert!(h.tmp_names().is_empty());
    }
}

#[test]
fn docker_archives_from_skopeo_load_with_their_tags_and_digests() {
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("rich-docker.tar");
    skopeo(&[
        "copy",
        "--insecure-policy",
        "--additional-tag",
        "localhost:5000/team/rich:2",
        &format!("oci:{}:rich", fixtures().join("rich").display()),
        &format!("docker-archive:{}:example.com/rich:1", tar.display()),
    ]);
    let h = home();
    let loaded = h.backend.load_images(&tar, &Default::default()).unwrap();
    let mut refs: Vec<&str> = loaded.iter().map(|i| i.reference()).collect();
    refs.sort();
    assert_eq!(refs, ["example.com/rich:1", "localhost:5000/team/rich:2"]);
    let exp = expected();
    let d = h.backend.inspect_image("example.com/rich:1").unwrap();
    // The config keeps its digest; each layer is stored uncompressed, so
    // its digest is its diff_id.
    assert_eq!(
        d.config.as_ref().unwrap().digest,
        exp["rich"]["configDigest"].as_str().unwrap()
    );
    for layer in &d.layers {
        assert_eq!(layer.blob_digest, layer.diff_id);
        assert_eq!(
            layer.media_type.as_deref(),
            Some("application/vnd.oci.image.layer.v1.tar")
        );
    }
    assert_eq!(
        d.config.as_ref().unwrap().entrypoint,
        Some(vec!["/app/bin/run.sh".to_owned()])
    );
    assert_eq!(d.handle.architecture(), Some("amd64"));
    // Both tags share one manifest, written by the cache deterministically.
    let other = h.backend.get_image("localhost:5000/team/rich:2").unwrap();
    assert_eq!(
        other.manifest_digest().unwrap(),
        d.handle.manifest_digest().unwrap()
    );
    let again = home();
    let twice = again
        .backend
        .load_images(&tar, &Default::default())
        .unwrap();
    assert_eq!(
        twice[0].manifest_digest().unwrap(),
        loaded[0].manifest_digest().unwrap()
    );
    h.assert_invariants();
    // What we made of it is an image skopeo can copy back out.
    let out = work.path().join("out");
    skopeo(&[
        "copy",
        "--insecure-policy",
        &format!("oci:{}:example.com/rich:1", h.oci().display()),
        &format!("oci:{}:x", out.display()),
    ]);
    assert!(h.tmp_names().is_empty());
}

/// One entry of a hand-made tar; names and link targets are written raw,
/// as a hostile archive would.
#[derive(Clone)]
enum E {
    File(String, Vec<u8>),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String),
    CharDevice(String),
    /// An entry of any type byte, with data.
    Typed(String, u8, Vec<u8>),
}

fn raw_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        // Long-name and PAX records are GNU and ustar extensions.
        let mut h = if matches!(e, E::Typed(..)) {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_old()
        };
        let (name, data, kind, link): (&str, &[u8], tar::EntryType, Option<&str>) = match e {
            E::File(n, d) => (n, d, tar::EntryType::Regular, None),
            E::Symlink(n, t) => (n, &[], tar::EntryType::Symlink, Some(t)),
            E::Hardlink(n, t) => (n, &[], tar::EntryType::Link, Some(t)),
            E::Fifo(n) => (n, &[], tar::EntryType::Fifo, None),
            E::CharDevice(n) => (n, &[], tar::EntryType::Char, None),
            E::Typed(n, t, d) => (n, d, tar::EntryType::new(*t), None),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            old.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// The files of an OCI layout directory, as archive entries.
fn layout_entries(dir: &Path) -> Vec<E> {
    let mut out = vec![
        E::File(
            "oci-layout".into(),
            fs::read(dir.join("oci-layout")).unwrap(),
        ),
        E::File(
            "index.json".into(),
            fs::read(dir.join("index.json")).unwrap(),
        ),
    ];
    let mut blobs: Vec<_> = fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    blobs.sort();
    for hex in blobs {
        out.push(E::File(
            format!("blobs/sha256/{hex}"),
            fs::read(dir.join("blobs/sha256").join(&hex)).unwrap(),
        ));
    }
    out
}

fn replace(entries: &mut [E], name: &str, with: E) {
    let at = entries
        .iter()
        .position(|e| matches!(e, E::File(n, _) if n == name))
        .unwrap();
    entries[at] = with;
}

#[test]
fn a_hand_made_valid_archive_loads() {
    // The corpus below is this archive with one thing wrong each time.
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("ok.tar");
    fs::write(&path, raw_tar(&layout_entries(&fixtures().join("pair")))).unwrap();
    let h = home();
    assert_eq!(
        h.backend
            .load_images(&path, &Default::default())
            .unwrap()
            .len(),
        2
    );
}

#[test]
#[allow(clippy::vec_init_then_push)]
fn hostile_archives_are_refused_and_leave_the_cache_as_it_was() {
    let exp = expected();
    let pair = fixtures().join("pair");
    let layer = exp["pair/app"]["layers"][1]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let layer_name = format!("blobs/sha256/{layer}");
    let base = || layout_entries(&pair);
    let with = |extra: E| {
        let mut v = base();
        v.push(extra);
        v
    };
    let mut cases: Vec<(&str, Vec<u8>, ErrorKind, &str)> = Vec::new();
    cases.push((
        "dot-dot",
        raw_tar(&with(E::File("../evil".into(), b"x".to_vec()))),
        ErrorKind::InvalidArchive,
        "unsafe path",
    ));
    cases.push((
        "nested dot-dot",
        raw_tar(&with(E::File("blobs/../../evil".into(), b"x".to_vec()))),
        ErrorKind::InvalidArchive,
        "unsafe path",
    ));
    cases.push((
        "absolute",
        raw_tar(&with(E::File("/etc/evil".into(), b"x".to_vec()))),
        ErrorKind::InvalidArchive,
        "unsafe path",
    ));
    cases.push((
        "symlink out",
        raw_tar(&with(E::Symlink(
            "blobs/sha256/x".into(),
            "../../../../etc/passwd".into(),
        ))),
        ErrorKind::InvalidArchive,
        "outside",
    ));
    cases.push((
        "absolute symlink",
        raw_tar(&with(E::Symlink("evil".into(), "/etc/passwd".into()))),
        ErrorKind::InvalidArchive,
        "outside",
    ));
    cases.push((
        "hardlink out",
        raw_tar(&with(E::Hardlink("evil".into(), "/etc/passwd".into()))),
        ErrorKind::InvalidArchive,
        "outside",
    ));
    cases.push((
        "dangling symlink",
        raw_tar(&with(E::Symlink("evil".into(), "nothing-here".into()))),
        ErrorKind::InvalidArchive,
        "does not lead",
    ));
    let mut looped = base();
    looped.push(E::Symlink("a".into(), "b".into()));
    looped.push(E::Symlink("b".into(), "a".into()));
    cases.push((
        "symlink loop",
        raw_tar(&looped),
        ErrorKind::InvalidArchive,
        "does not lead",
    ));
    cases.push((
        "fifo",
        raw_tar(&with(E::Fifo("pipe".into()))),
        ErrorKind::InvalidArchive,
        "not allowed",
    ));
    cases.push((
        "device",
        raw_tar(&with(E::CharDevice("dev".into()))),
        ErrorKind::InvalidArchive,
        "not allowed",
    ));
    cases.push((
        "duplicate name",
        raw_tar(&with(E::File("index.json".into(), b"{}".to_vec()))),
        ErrorKind::InvalidArchive,
        "twice",
    ));
    let mut link_and_file = base();
    link_and_file.push(E::Symlink("dup".into(), "oci-layout".into()));
    link_and_file.push(E::File("dup".into(), b"x".to_vec()));
    cases.push((
        "link and file",
        raw_tar(&link_and_file),
        ErrorKind::InvalidArchive,
        "both a link and a file",
    ));
    let mut wrong = base();
    replace(
        &mut wrong,
        &layer_name,
        E::File(layer_name.clone(), b"not the layer".to_vec()),
    );
    cases.push((
        "blob not matching its name",
        raw_tar(&wrong),
        ErrorKind::DigestMismatch,
        layer,
    ));
    let mut missing = base();
    missing.retain(|e| !matches!(e, E::File(n, _) if *n == layer_name));
    cases.push((
        "missing blob",
        raw_tar(&missing),
        ErrorKind::InvalidArchive,
        "missing",
    ));
    let mut bad_index = base();
    replace(
        &mut bad_index,
        "index.json",
        E::File("index.json".into(), b"{\"manifests\": [".to_vec()),
    );
    cases.push((
        "malformed index.json",
        raw_tar(&bad_index),
        ErrorKind::InvalidArchive,
        "index.json",
    ));
    let mut not_json = base();
    replace(
        &mut not_json,
        "index.json",
        E::File("index.json".into(), b"[1, 2, 3]".to_vec()),
    );
    cases.push((
        "index.json of the wrong shape",
        raw_tar(&not_json),
        ErrorKind::InvalidArchive,
        "index.json",
    ));
    let mut no_marker = base();
    no_marker.remove(0);
    cases.push((
        "neither layout nor docker",
        raw_tar(&no_marker),
        ErrorKind::InvalidArchive,
        "not an OCI archive",
    ));
    let full = raw_tar(&base());
    cases.push((
        "truncated tar",
        full[..full.len() / 2].to_vec(),
        ErrorKind::InvalidArchive,
        "",
    ));
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&full).unwrap();
        e.finish().unwrap()
    };
    cases.push((
        "truncated gzip",
        gz[..gz.len() / 2].to_vec(),
        ErrorKind::InvalidArchive,
        "unreadable",
    ));
    let mut flipped = gz.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    // Where the flipped byte lands decides which check sees it first: the
    // blob's digest or gzip's own CRC. Either is a refusal naming the entry.
    cases.push(("corrupt gzip", flipped, ErrorKind::DigestMismatch, "entry"));
    cases.push(("empty file", Vec::new(), ErrorKind::InvalidArchive, ""));
    cases.push((
        "garbage",
        b"this is not an archive at all".repeat(40),
        ErrorKind::InvalidArchive,
        "",
    ));

    // docker-archive cases, built from a docker-archive skopeo made.
    let work = tempfile::tempdir().unwrap();
    let docker = skopeo_archive(
        work.path(),
        "docker-archive",
        "d.tar",
        "example.com/d:1",
        "pair:app",
    );
    let docker_entries = entries_of(&docker);
    let manifest: serde_json::Value = docker_entries
        .iter()
        .find_map(|e| match e {
            E::File(n, d) if n == "manifest.json" => Some(serde_json::from_slice(d).unwrap()),
            _ => None,
        })
        .unwrap();
    let first_layer = manifest[0]["Layers"][0].as_str().unwrap().to_owned();
    let mut docker_missing = docker_entries.clone();
    docker_missing.retain(|e| !matches!(e, E::File(n, _) if *n == first_layer));
    cases.push((
        "docker: missing layer",
        raw_tar(&docker_missing),
        ErrorKind::InvalidArchive,
        "does not lead",
    ));
    let mut docker_wrong = docker_entries.clone();
    replace(
        &mut docker_wrong,
        &first_layer,
        E::File(first_layer.clone(), b"not the layer".to_vec()),
    );
    cases.push((
        "docker: layer not matching its diff_id",
        raw_tar(&docker_wrong),
        ErrorKind::DigestMismatch,
        "diff_id",
    ));
    let mut docker_bad = docker_entries.clone();
    replace(
        &mut docker_bad,
        "manifest.json",
        E::File("manifest.json".into(), b"{oops".to_vec()),
    );
    cases.push((
        "docker: malformed manifest.json",
        raw_tar(&docker_bad),
        ErrorKind::InvalidArchive,
        "manifest.json",
    ));
    let mut docker_badref = docker_entries.clone();
    let text = serde_json::to_vec(&serde_json::json!([{
        "Config": manifest[0]["Config"], "RepoTags": ["UPPER/Case:1"], "Layers": manifest[0]["Layers"]
    }]))
    .unwrap();
    replace(
        &mut docker_badref,
        "manifest.json",
        E::File("manifest.json".into(), text),
    );
    cases.push((
        "docker: invalid tag",
        raw_tar(&docker_badref),
        ErrorKind::InvalidArchive,
        "invalid reference",
    ));

    let mut docker_lacking = docker_entries.clone();
    let text = serde_json::to_vec(&serde_json::json!([{
        "Config": manifest[0]["Config"], "RepoTags": ["example.com/d:1"], "Layers": ["nope.tar", manifest[0]["Layers"][1]]
    }]))
    .unwrap();
    replace(
        &mut docker_lacking,
        "manifest.json",
        E::File("manifest.json".into(), text),
    );
    cases.push((
        "docker: manifest.json names an absent layer",
        raw_tar(&docker_lacking),
        ErrorKind::InvalidArchive,
        "lacks",
    ));

    let mut mini_bad = minibox_entries("rich:1");
    mini_bad[0] = E::File("meta.json".into(), b"{\"image\": 7}".to_vec());
    cases.push((
        "minibox: malformed meta.json",
        raw_tar(&mini_bad),
        ErrorKind::InvalidArchive,
        "meta.json",
    ));
    let mut mini_missing = minibox_entries("rich:1");
    let manifest_blob = format!(
        "blobs/sha256/{}",
        digest_of("rich").trim_start_matches("sha256:")
    );
    mini_missing.retain(|e| !matches!(e, E::File(n, _) if *n == manifest_blob));
    cases.push((
        "minibox: manifest missing",
        raw_tar(&mini_missing),
        ErrorKind::InvalidArchive,
        "missing",
    ));

    // A GNU long name of 2 MiB: the tar reader would buffer it whole.
    let mut long_name = vec![E::Typed("././@LongLink".into(), b'L', vec![b'a'; 2 << 20])];
    long_name.push(E::File("x".into(), b"x".to_vec()));
    cases.push((
        "2 MiB long name",
        raw_tar(&long_name),
        ErrorKind::InvalidArchive,
        "larger than 1 MiB",
    ));
    let mut docker_pinned = docker_entries.clone();
    let text = serde_json::to_vec(&serde_json::json!([{
        "Config": manifest[0]["Config"],
        "RepoTags": [format!("example.com/d@{}", digest_of("rich"))],
        "Layers": manifest[0]["Layers"]
    }]))
    .unwrap();
    replace(
        &mut docker_pinned,
        "manifest.json",
        E::File("manifest.json".into(), text),
    );
    cases.push((
        "docker: a tag pinning another digest",
        raw_tar(&docker_pinned),
        ErrorKind::InvalidArchive,
        "pins digest",
    ));

    assert!(cases.len() >= 20, "the corpus keeps at least twenty cases");
    for (what, bytes, kind, needle) in cases {
        let path = work
            .path()
            .join(format!("{}.tar", what.replace([' ', ':'], "-")));
        fs::write(&path, &bytes).unwrap();
        assert_load_refused(&path, &Default::default(), kind, needle, what);
    }
}

/// A MiniBox archive of the `rich` fixture: meta.json and its blobs.
fn minibox_entries(image: &str) -> Vec<E> {
    let rich = fixtures().join("rich");
    let meta = serde_json::json!({ "image": image, "manifest_digest": digest_of("rich") });
    let mut out = vec![E::File(
        "meta.json".into(),
        serde_json::to_vec(&meta).unwrap(),
    )];
    out.extend(
        layout_entries(&rich)
            .into_iter()
            .filter(|e| matches!(e, E::File(n, _) if n.starts_with("blobs/"))),
    );
    out
}

#[test]
fn loads_report_progress_ending_with_the_commit() {
    use std::sync::{Arc, Mutex};
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let options = microsandbox::LoadOptions {
        progress: Some(microsandbox::ProgressFn::new(move |e| {
            sink.lock().unwrap().push(e.clone())
        })),
        ..Default::default()
    };
    let h = home();
    h.backend
        .load_images(&fixtures().join("rich"), &options)
        .unwrap();
    let seen = std::mem::take(&mut *events.lock().unwrap());
    let exp = expected();
    let writes: Vec<&microsandbox::Progress> = seen
        .iter()
        .filter(|e| e.phase == microsandbox::Phase::Write)
        .collect();
    // One final event per layer copied, at its full size.
    for (i, layer) in exp["rich"]["layers"].as_array().unwrap().iter().enumerate() {
        let size = exp["rich"]["layerSizes"][i].as_u64().unwrap();
        assert!(
            writes
                .iter()
                .any(|e| e.digest.as_deref() == layer.as_str() && e.bytes == size),
            "{seen:?}"
        );
    }
    let last = seen.last().unwrap();
    assert_eq!(last.phase, microsandbox::Phase::Commit);
    assert_eq!(last.bytes, total_size("rich"));

    // An archive reports reading it, up to its size.
    let work = tempfile::tempdir().unwrap();
    let tar = skopeo_archive(work.path(), "oci-archive", "p.tar", "p", "pair:app");
    let other = home();
    other.backend.load_images(&tar, &options).unwrap();
    let seen = events.lock().unwrap();
    let size = fs::metadata(&tar).unwrap().len();
    assert!(
        seen.iter().any(|e| e.phase == microsandbox::Phase::Read
            && e.bytes == size
            && e.total_bytes == Some(size)),
        "{seen:?}"
    );
}

/// The entries of a tar file, as hand-made entries to edit.
fn entries_of(path: &Path) -> Vec<E> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .unwrap()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push(E::Symlink(name, target));
        } else {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            out.push(E::File(name, data));
        }
    }
    out
}

#[test]
fn an_image_named_thousands_of_times_loads_every_name() {
    let mut entries = layout_entries(&fixtures().join("rich"));
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(fixtures().join("rich/index.json")).unwrap()).unwrap();
    let one = index["manifests"][0].clone();
    let many: Vec<serde_json::Value> = (0..5000)
        .map(|i| {
            let mut d = one.clone();
            d["annotations"]["org.opencontainers.image.ref.name"] =
                format!("example.com/many:{i}").into();
            d
        })
        .collect();
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": many });
    replace(
        &mut entries,
        "index.json",
        E::File("index.json".into(), serde_json::to_vec(&index).unwrap()),
    );
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("many.tar");
    fs::write(&tar, raw_tar(&entries)).unwrap();
    let h = home();
    assert_eq!(
        h.backend
            .load_images(&tar, &Default::default())
            .unwrap()
            .len(),
        5000
    );
    assert_eq!(h.backend.list_images().unwrap().len(), 5000);
    assert_eq!(
        h.blob_names().len(),
        5,
        "one manifest, one config, three layers"
    );
}

#[path = "archive/minibox.rs"]
mod minibox;

#[path = "archive/saved.rs"]
mod saved;
use saved::save;

#[path = "archive/foreign.rs"]
mod foreign;
