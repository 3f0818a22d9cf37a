//! Where a save may write: a new file, or an existing regular file only
//! when told to replace it; never a link (nor through one), a directory or
//! anything but a regular file, whatever `overwrite` says. A refused save
//! leaves the path, and whatever it points to, as it was.

mod common;

use std::fs;
use std::path::Path;

use common::{home, Home};
use microsandbox::{ErrorKind, LoadOptions, SaveFormat, SaveOptions};

fn save(h: &Home, path: &Path, overwrite: bool) -> microsandbox::MicrosandboxResult<()> {
    h.backend.save_images(
        &["rich".to_owned()],
        path,
        &SaveOptions {
            format: SaveFormat::Oci,
            overwrite,
        },
    )
}

/// The names in `dir`, sorted: a refused save leaves no temporary behind.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn an_existing_file_is_replaced_only_with_overwrite() {
    let h = home();
    h.load("rich");
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("rich.tar");

    save(&h, &archive, false).unwrap();
    let first = fs::read(&archive).unwrap();
    assert!(!first.is_empty());

    // Once there, a second save without overwrite is refused, the file kept.
    let keys = out.path().join("authorized_keys");
    fs::write(&keys, b"ssh-ed25519 AAAA owner\n").unwrap();
    for p in [&archive, &keys] {
        let e = save(&h, p, false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains("exists"), "{e}");
        assert!(e.message().contains("overwrite"), "{e}");
    }
    assert_eq!(fs::read(&keys).unwrap(), b"ssh-ed25519 AAAA owner\n");
    assert_eq!(fs::read(&archive).unwrap(), first);
    assert_eq!(names(out.path()), ["authorized_keys", "rich.tar"]);

    // With it, the file is replaced by the archive, keeping its mode.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o640)).unwrap();
    save(&h, &keys, true).unwrap();
    assert_eq!(
        fs::read(&keys).unwrap(),
        first,
        "the same images, the same bytes"
    );
    assert_eq!(
        fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let loaded = home();
    let handles = loaded
        .backend
        .load_images(&keys, &LoadOptions::default())
        .unwrap();
    assert_eq!(handles.len(), 1);
}

#[test]
fn links_and_non_files_are_never_replaced_nor_written_through() {
    let h = home();
    h.load("rich");
    let top = tempfile::tempdir().unwrap();
    let out = top.path().join("out");
    fs::create_dir(&out).unwrap();
    let victim = top.path().join("victim");
    fs::write(&victim, b"keep me\n").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("link")).unwrap();
    std::os::unix::fs::symlink(top.path().join("absent"), out.join("dangling")).unwrap();
    fs::create_dir(out.join("dir")).unwrap();
    let before = names(&out);

    for name in ["link", "dangling", "dir"] {
        for overwrite in [false, true] {
            let e = save(&h, &out.join(name), overwrite).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{name}: {e}");
        }
    }
    assert_eq!(fs::read(&victim).unwrap(), b"keep me\n");
    assert!(
        !top.path().join("absent").exists(),
        "nothing made through a dangling link"
    );
    assert!(fs::symlink_metadata(out.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(names(&out), before);
    assert_eq!(names(top.path()), ["out", "victim"]);
}
