//! The seal each VM artifact carries: the sha256 of its bytes with the
//! size and modification time it had when it was made, recorded by its
//! maker as the extended attribute `user.microsandbox.seal` before the
//! artifact is committed, so no artifact is ever in place without one.
//!
//! ```text
//! user.microsandbox.seal = sha256:<hex> <size> <mtime seconds>.<nanoseconds>
//! ```
//!
//! Two checks read it. [`check_quick`], made by materialize before it hands
//! an artifact out, costs one `fstat` and one `fgetxattr`: any write to the
//! file changes its modification time, so an edit is caught without
//! reading a byte (an edit that sets the time back is verify's to find).
//! [`check_full`], made by verify, hashes every byte against the seal. An
//! artifact without a seal (made by an older version, or its attribute
//! taken away) fails both and is made again. Where the file system keeps
//! no user attributes nothing can be sealed, and the checks fall back to
//! the artifact's structure alone (the kernel's own checks of an EROFS
//! image, the descriptor's extents).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{fgetxattr, fsetxattr, fstat, XattrFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::error::{IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;

/// The attribute's name.
pub const XATTR: &str = "user.microsandbox.seal";
/// The longest seal read (a digest, a size, a time and two spaces).
const MAX_LEN: usize = 128;
/// How much of an artifact is hashed per read.
const CHUNK: usize = 1 << 20;

/// What an artifact was when it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seal {
    /// The sha256 of its bytes.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its modification time, seconds and nanoseconds.
    pub mtime: (i64, i64),
}

impl Seal {
    fn text(&self) -> String {
        format!(
            "{} {} {}.{:09}",
            self.digest, self.size, self.mtime.0, self.mtime.1
        )
    }

    fn parse(text: &str) -> Option<Seal> {
        let mut parts = text.split(' ');
        let digest = parts.next()?.parse().ok()?;
        let size = parts.next()?.parse().ok()?;
        let (secs, nanos) = parts.next()?.split_once('.')?;
        if parts.next().is_some() || nanos.len() != 9 {
            return None;
        }
        Some(Seal {
            digest,
            size,
            mtime: (secs.parse().ok()?, nanos.parse().ok()?),
        })
    }
}

/// What a file's seal is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// A seal that reads.
    Sealed(Seal),
    /// None, or one that does not read.
    Unsealed,
    /// The file system keeps no user attributes.
    Unsupported,
}

/// The file's size and modification time now. (Not its number of names:
/// a maker killed between linking an artifact in and unlinking its claim
/// file leaves a sound artifact with a second name in `tmp/`, which prune
/// sweeps; a name elsewhere that writes to it changes its time.)
fn now(file: &File) -> Result<(u64, (i64, i64)), String> {
    let st = fstat(file).map_err(|e| format!("cannot stat it: {e}"))?;
    Ok((st.st_size as u64, (st.st_mtime, st.st_mtime_nsec as i64)))
}

/// The sha256 of every byte of `file`, and how many there were.
fn hash(file: &File) -> std::io::Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    loop {
        let n = match file.read_at(&mut buf, at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok((Digest::from_hasher(hasher), at))
}

/// Seals a finished artifact (its maker's, not yet committed): hashes it
/// and records the seal on it. `false` when the file system keeps no user
/// attributes, so nothing could be recorded.
///
/// # Errors
///
/// `Io` when the file cannot be read or the attribute set for another
/// reason.
pub fn seal(file: &File, path: &Path) -> MicrosandboxResult<bool> {
    let (digest, size) = hash(file).at("read", path)?;
    let (_, mtime) =
        now(file).map_err(|why| MicrosandboxError::io("stat", path, std::io::Error::other(why)))?;
    let seal = Seal {
        digest,
        size,
        mtime,
    };
    match fsetxattr(file, XATTR, seal.text().as_bytes(), XattrFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::NOTSUP) => Ok(false),
        Err(e) => Err(MicrosandboxError::io("seal", path, e.into())),
    }
}

/// The seal on `file`.
pub fn read(file: &File) -> Found {
    let mut buf = [0u8; MAX_LEN];
    match fgetxattr(file, XATTR, &mut buf[..]) {
        Ok(n) => std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(Seal::parse)
            .map_or(Found::Unsealed, Found::Sealed),
        Err(Errno::NOTSUP) => Found::Unsupported,
        // No attribute, one too long to be ours, or one that cannot be
        // read: no seal to trust.
        Err(_) => Found::Unsealed,
    }
}

/// The check before an artifact is handed out: a seal that matches the
/// file's size and modification time.
///
/// # Errors
///
/// What is wrong, for the report.
pub fn check_quick(file: &File) -> Result<(), String> {
    quick(file).map(drop)
}

fn quick(file: &File) -> Result<Option<Seal>, String> {
    let (size, mtime) = now(file)?;
    match read(file) {
        Found::Unsupported => Ok(None),
        Found::Unsealed => Err(
            "it carries no seal (not made by this version, or its seal was \
                                taken away)"
                .to_owned(),
        ),
        Found::Sealed(seal) if seal.size != size || seal.mtime != mtime => Err(format!(
            "it was changed after it was made ({size} bytes modified at {}.{:09}, sealed as \
             {} bytes at {}.{:09})",
            mtime.0, mtime.1, seal.size, seal.mtime.0, seal.mtime.1
        )),
        Found::Sealed(seal) => Ok(Some(seal)),
    }
}

/// Verify's check: [`check_quick`], then every byte hashed against the
/// seal. The bytes hashed.
///
/// # Errors
///
/// What is wrong, for the report.
pub fn check_full(file: &File) -> Result<u64, String> {
    let Some(seal) = quick(file)? else {
        return Ok(0);
    };
    let (digest, size) = hash(file).map_err(|e| format!("cannot read it: {e}"))?;
    if digest != seal.digest || size != seal.size {
        return Err(format!(
            "its bytes hash to {digest}, not to {} as when it was made",
            seal.digest
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sealed(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let mut f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.write_all(bytes).unwrap();
        assert!(
            seal(&f, &path).unwrap(),
            "this file system keeps user attributes"
        );
        (dir, f)
    }

    #[test]
    fn a_seal_reads_back_and_both_checks_pass() {
        let (_d, f) = sealed(b"an artifact");
        let Found::Sealed(s) = read(&f) else {
            panic!("no seal")
        };
        assert_eq!(s.digest, Digest::of(b"an artifact"));
        assert_eq!(s.size, 11);
        assert_eq!(Seal::parse(&s.text()), Some(s));
        check_quick(&f).unwrap();
        assert_eq!(check_full(&f).unwrap(), 11);
    }

    #[test]
    fn a_write_fails_the_quick_check_and_a_hidden_one_the_full_check() {
        let (dir, f) = sealed(b"an artifact");
        let path = dir.path().join("a");
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        f.write_at(b"AN", 0).unwrap();
        let err = check_quick(&f).unwrap_err();
        assert!(err.contains("changed after it was made"), "{err}");
        // The time put back: only the bytes tell.
        f.set_modified(before).unwrap();
        check_quick(&f).unwrap();
        let err = check_full(&f).unwrap_err();
        assert!(err.contains("hash to"), "{err}");
    }

    #[test]
    fn no_seal_and_a_forged_one_fail_and_a_second_name_does_not() {
        let (dir, f) = sealed(b"x");
        let path = dir.path().join("a");
        fsetxattr(&f, XATTR, b"sha256:zz 1 0.000000000", XattrFlags::empty()).unwrap();
        assert_eq!(read(&f), Found::Unsealed);
        assert!(check_quick(&f).unwrap_err().contains("no seal"));
        rustix::fs::fremovexattr(&f, XATTR).unwrap();
        assert!(check_full(&f).unwrap_err().contains("no seal"));
        seal(&f, &path).unwrap();
        // As a maker killed after linking it in leaves it.
        std::fs::hard_link(&path, dir.path().join("b")).unwrap();
        check_quick(&f).unwrap();
        assert_eq!(check_full(&f).unwrap(), 1);
    }
}
