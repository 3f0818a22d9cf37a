//! The seal each VM artifact carries: the sha256 of its bytes with the
//! size and modification time it had when it was made, recorded by its
//! maker as the extended attribute `user.microsandbox.seal` before the
//! artifact is committed, so no artifact is ever in place without one.
//!
//! ```text
//! user.microsandbox.seal = split sha256:<hex> <size> <mtime seconds>.<nanoseconds>
//! ```
//!
//! The digest is of the bytes on disk, in two parts: `sha256(sha256(head)
//! || sha256(rest))`, where the head is the first 4 KiB (an EROFS image's
//! block 0, which its writer fills last) and the rest is everything after
//! it. So the maker hashes the rest as it writes it, in order
//! ([`Stream`]), and reads back only the head when it seals; a maker whose
//! writes did not come in order reads the whole file back instead. A seal
//! of three fields (`sha256:<hex> <size> <time>`, by an older version) is
//! the digest of the whole file, and is checked as such.
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
/// The head of a split digest: what is hashed apart, and read back at the
/// seal (an EROFS image's block 0).
pub const HEAD: u64 = 4096;

/// How a seal's digest is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// The sha256 of the whole file (seals of older versions).
    Whole,
    /// `sha256(sha256(head) || sha256(rest))`, the head the first
    /// [`HEAD`] bytes.
    Split,
}

/// What an artifact was when it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seal {
    /// How its digest is made.
    pub scheme: Scheme,
    /// The digest of its bytes.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its modification time, seconds and nanoseconds.
    pub mtime: (i64, i64),
}

impl Seal {
    fn text(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Whole => "",
            Scheme::Split => "split ",
        };
        format!(
            "{scheme}{} {} {}.{:09}",
            self.digest, self.size, self.mtime.0, self.mtime.1
        )
    }

    fn parse(text: &str) -> Option<Seal> {
        let (scheme, text) = match text.strip_prefix("split ") {
            Some(rest) => (Scheme::Split, rest),
            None => (Scheme::Whole, text),
        };
        let mut parts = text.split(' ');
        let digest = parts.next()?.parse().ok()?;
        let size = parts.next()?.parse().ok()?;
        let (secs, nanos) = parts.next()?.split_once('.')?;
        if parts.next().is_some() || nanos.len() != 9 {
            return None;
        }
        Some(Seal {
            scheme,
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

/// The sha256 of `file`'s bytes from `at` to its end, and that end.
fn hash_from(file: &File, mut at: u64, mut hasher: Sha256) -> std::io::Result<(Sha256, u64)> {
    let mut buf = vec![0u8; CHUNK];
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
    Ok((hasher, at))
}

/// The sha256 of `file`'s first `len` bytes (fewer if it is shorter), and
/// how many there were.
fn hash_head(file: &File, len: u64) -> std::io::Result<(Sha256, u64)> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok((Sha256::new_with_prefix(&buf[..got]), got as u64))
}

/// The split digest of a head's and a rest's hashers.
fn split_digest(head: Sha256, rest: Sha256) -> Digest {
    let mut h = Sha256::new();
    h.update(head.finalize());
    h.update(rest.finalize());
    Digest::from_hasher(h)
}

/// The digest of every byte of `file` by `scheme`, and how many there were.
fn hash(file: &File, scheme: Scheme) -> std::io::Result<(Digest, u64)> {
    match scheme {
        Scheme::Whole => {
            let (h, len) = hash_from(file, 0, Sha256::new())?;
            Ok((Digest::from_hasher(h), len))
        }
        Scheme::Split => {
            let (head, got) = hash_head(file, HEAD)?;
            let (rest, end) = hash_from(file, HEAD, Sha256::new())?;
            Ok((split_digest(head, rest), if got < HEAD { got } else { end }))
        }
    }
}

/// The hash of an artifact's bytes past its head as its maker writes them
/// ([`Stream::wrote`]): in order, each write starting where the last one
/// past the head ended (or after it: what lies between is never written,
/// so it reads as zeros). A write anywhere else past the head breaks it,
/// and the seal reads the whole file back.
#[derive(Clone, Debug)]
pub struct Stream {
    rest: Sha256,
    /// The end of what is hashed (from [`HEAD`]).
    next: u64,
    broken: bool,
}

impl Default for Stream {
    fn default() -> Stream {
        Stream {
            rest: Sha256::new(),
            next: HEAD,
            broken: false,
        }
    }
}

impl Stream {
    /// `bytes` were written at `at`.
    pub fn wrote(&mut self, at: u64, bytes: &[u8]) {
        let end = at + bytes.len() as u64;
        if self.broken || end <= HEAD {
            return;
        }
        let (at, bytes) = if at < HEAD {
            (HEAD, &bytes[(HEAD - at) as usize..])
        } else {
            (at, bytes)
        };
        if at < self.next {
            self.broken = true;
            return;
        }
        let zeros = [0u8; 4096];
        let mut gap = at - self.next;
        while gap > 0 {
            let n = gap.min(zeros.len() as u64);
            self.rest.update(&zeros[..n as usize]);
            gap -= n;
        }
        self.rest.update(bytes);
        self.next = end;
    }

    /// The split digest of a file of `size` bytes whose head `head` is,
    /// when every byte past the head was hashed here.
    fn digest(self, size: u64, head: Sha256) -> Option<Digest> {
        let whole = !self.broken && self.next == size.max(HEAD);
        whole.then(|| split_digest(head, self.rest))
    }
}

/// Seals a finished artifact (its maker's, not yet committed): hashes it,
/// by what `stream` hashed as it was written and its head read back (or,
/// without a whole stream, every byte read back), and records the seal on
/// it. `false` when the file system keeps no user attributes, so nothing
/// could be recorded.
///
/// # Errors
///
/// `Io` when the file cannot be read or the attribute set for another
/// reason.
pub fn seal(file: &File, path: &Path, stream: Option<Stream>) -> MicrosandboxResult<bool> {
    let (size, mtime) =
        now(file).map_err(|why| MicrosandboxError::io("stat", path, std::io::Error::other(why)))?;
    let streamed = match stream {
        Some(s) => s.digest(size, hash_head(file, HEAD).at("read", path)?.0),
        None => None,
    };
    let digest = match streamed {
        Some(d) => d,
        None => hash(file, Scheme::Split).at("read", path)?.0,
    };
    let seal = Seal {
        scheme: Scheme::Split,
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
    let (digest, size) = hash(file, seal.scheme).map_err(|e| format!("cannot read it: {e}"))?;
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
            seal(&f, &path, None).unwrap(),
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
        assert_eq!(s.scheme, Scheme::Split);
        assert_eq!(
            s.digest,
            split_digest(Sha256::new_with_prefix(b"an artifact"), Sha256::new())
        );
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
        seal(&f, &path, None).unwrap();
        // As a maker killed after linking it in leaves it.
        std::fs::hard_link(&path, dir.path().join("b")).unwrap();
        check_quick(&f).unwrap();
        assert_eq!(check_full(&f).unwrap(), 1);
    }

    /// Writes `parts` (offset, bytes) to a new file through a [`Stream`]
    /// and seals it with the stream; the seal and the file.
    fn streamed(parts: &[(u64, Vec<u8>)]) -> (tempfile::TempDir, File, Seal) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut stream = Stream::default();
        for (at, bytes) in parts {
            f.write_all_at(bytes, *at).unwrap();
            stream.wrote(*at, bytes);
        }
        assert!(seal(&f, &path, Some(stream)).unwrap());
        let Found::Sealed(s) = read(&f) else {
            panic!("no seal")
        };
        (dir, f, s)
    }

    #[test]
    fn a_streamed_seal_is_the_digest_of_the_bytes_on_disk() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        // As an EROFS writer: the data from block 1, a jump over bytes
        // never written, the metadata, then block 0 last.
        let parts = [
            (HEAD, data[..9000].to_vec()),
            (HEAD + 9000, data[9000..].to_vec()),
            (HEAD + 30_000, b"metadata".to_vec()),
            (100, b"superblock".to_vec()),
        ];
        let (_d, f, s) = streamed(&parts);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &f, &mut bytes).unwrap();
        let want = split_digest(
            Sha256::new_with_prefix(&bytes[..HEAD as usize]),
            Sha256::new_with_prefix(&bytes[HEAD as usize..]),
        );
        assert_eq!(s.digest, want);
        assert_eq!(s.size, bytes.len() as u64);
        assert_eq!(check_full(&f).unwrap(), bytes.len() as u64);
        // Writes behind the stream, or a file smaller than the head: the
        // same digest as the bytes on disk, read back.
        let (_d, f, _) = streamed(&[
            (HEAD, data.clone()),
            (HEAD + 10, b"over".to_vec()),
            (0, b"head".to_vec()),
        ]);
        check_full(&f).unwrap();
        let (_d, f, s) = streamed(&[(0, b"a descriptor".to_vec())]);
        assert_eq!(s.size, 12);
        check_full(&f).unwrap();
    }

    #[test]
    fn an_older_whole_file_seal_is_checked_as_one() {
        let (_d, f) = sealed(b"an artifact");
        let (size, mtime) = now(&f).unwrap();
        let old = format!(
            "{} {size} {}.{:09}",
            Digest::of(b"an artifact"),
            mtime.0,
            mtime.1
        );
        fsetxattr(&f, XATTR, old.as_bytes(), XattrFlags::empty()).unwrap();
        let Found::Sealed(s) = read(&f) else {
            panic!("no seal")
        };
        assert_eq!(s.scheme, Scheme::Whole);
        assert_eq!(check_full(&f).unwrap(), 11);
        let wrong = format!(
            "{} {size} {}.{:09}",
            Digest::of(b"another"),
            mtime.0,
            mtime.1
        );
        fsetxattr(&f, XATTR, wrong.as_bytes(), XattrFlags::empty()).unwrap();
        assert!(check_full(&f).unwrap_err().contains("hash to"));
    }
}
