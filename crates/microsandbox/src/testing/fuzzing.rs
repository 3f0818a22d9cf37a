//! The properties the fuzz targets (`fuzz/`) check, here so that the
//! inputs they found are replayed by `cargo test` (tests/fuzz_inputs.rs)
//! with the very same checks. Each function panics when a property fails.

use crate::error::ErrorKind;
use crate::oci::model::{IndexFile, ManifestDoc};
use crate::oci::reference::Reference;
use crate::LocalBackend;

/// Any string either fails with `InvalidReference` or parses to a
/// reference whose canonical and familiar forms parse back to the same
/// canonical form.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Reference::parse(text) {
        Ok(r) => {
            let canonical = r.canonical();
            let again = Reference::parse(&canonical).expect("a canonical form parses");
            assert_eq!(again.canonical(), canonical);
            let familiar = Reference::parse(&r.familiar()).expect("a familiar form parses");
            assert_eq!(familiar.canonical(), canonical);
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidReference),
    }
}

/// Any bytes either fail to parse as a manifest, an index or index.json,
/// or parse to documents whose parts can be asked for.
pub fn manifest(data: &[u8]) {
    if let Ok(doc) = ManifestDoc::parse(data) {
        doc.shape().expect("a parsed document has a shape");
    }
    if let Ok(index) = serde_json::from_slice::<IndexFile>(data) {
        for d in &index.manifests {
            let _ = d.ref_name();
            let _ = d.digest.hex();
        }
    }
}

/// Any bytes, as an archive file, either load or fail with a documented
/// code, and a failed load leaves the cache empty.
pub fn archive(data: &[u8]) {
    let dir = tempfile_dir();
    let file = dir.join("in.tar");
    std::fs::write(&file, data).expect("write the input");
    let b = LocalBackend::builder()
        .home(dir.join("home"))
        .build_blocking()
        .expect("a backend");
    if let Err(e) = b.load_images(&file, &Default::default()) {
        assert!(
            matches!(
                e.kind(),
                ErrorKind::InvalidArchive
                    | ErrorKind::DigestMismatch
                    | ErrorKind::PlatformNotFound
                    | ErrorKind::InvalidReference
                    | ErrorKind::Unsupported
            ),
            "{:?}: {e}",
            e.kind()
        );
        assert!(b.list_images().expect("list").is_empty());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("msb-fuzz-{}", crate::store::fs::random_hex(8)));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
