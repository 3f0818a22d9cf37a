//! Small file-system helpers: atomic replacement, directory fsync, bounded reads.
//!
//! An atomic write goes to a temporary file in the target's own directory
//! (`.<name>.tmp-<random>`, same file system), is fsynced, renamed over the
//! target, and the directory is fsynced, so a reader sees the old file or
//! the new one and a crash keeps one of them. A temporary left by a crash
//! carries the [`ATOMIC_TMP_MARK`] in its name and is swept by prune.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::{IoContext, MicrosandboxError, MicrosandboxResult};

/// The part of a name that marks an atomic write's temporary file.
pub const ATOMIC_TMP_MARK: &str = ".tmp-";

/// Random hex for unique names.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> MicrosandboxResult<()> {
    let dir = parent(path)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}{ATOMIC_TMP_MARK}{}", random_hex(8)));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .at("create", &tmp)?;
        file.write_all(bytes).at("write", &tmp)?;
        file.sync_all().at("fsync", &tmp)?;
        crate::util::fault::point("atomic-before-rename");
        fs::rename(&tmp, path).at("rename into place", path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    crate::util::fault::point("atomic-after-rename");
    sync_dir(dir)
}

/// Fsyncs a directory so renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> MicrosandboxResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("fsync directory", dir)
}

fn parent(path: &Path) -> MicrosandboxResult<&Path> {
    path.parent().ok_or_else(|| {
        MicrosandboxError::io(
            "find the directory of",
            path,
            io::Error::from(io::ErrorKind::InvalidInput),
        )
    })
}

/// Reads a whole file, refusing files larger than `limit` bytes.
/// `Ok(None)` when the file does not exist.
pub fn read_bounded(path: &Path, limit: u64) -> MicrosandboxResult<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MicrosandboxError::io("open", path, e)),
    };
    // Sized from the file, so a small file takes one read (and one more
    // that finds its end) rather than a series of growing ones.
    let hint = file.metadata().map_or(0, |m| m.len()).min(limit) as usize;
    let mut buf = Vec::with_capacity(hint + 1);
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .at("read", path)?;
    if buf.len() as u64 > limit {
        return Err(MicrosandboxError::io(
            &format!("read (larger than the {limit}-byte limit)"),
            path,
            io::Error::from(io::ErrorKind::InvalidData),
        ));
    }
    Ok(Some(buf))
}

/// Creates `dir` and its parents.
pub fn create_dirs(dir: &Path) -> MicrosandboxResult<()> {
    fs::create_dir_all(dir).at("create directory", dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn failed_atomic_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        write_atomic(&path, b"old").unwrap();
        // A directory in the way of the rename makes it fail.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn bounded_read_refuses_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![b'x'; 100]).unwrap();
        assert!(read_bounded(&path, 99).is_err());
        assert_eq!(read_bounded(&path, 100).unwrap().unwrap().len(), 100);
        assert!(read_bounded(&dir.path().join("nope"), 1).unwrap().is_none());
    }
}
