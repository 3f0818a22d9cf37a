//! Cross-process locks: the cache lock and the per-writer locks in `tmp/`.
//!
//! `flock(2)` locks belong to an open file description, so every operation
//! opens its own descriptor and many operations of one process exclude each
//! other exactly as operations of different processes do. Waits are
//! bounded: past the bound the caller gets [`ErrorKind::Busy`] saying how
//! long it waited. A lock is released when its guard drops or its process
//! dies, so a killed process never leaves the cache locked.
//!
//! The mode is in the guard's type: what changes `index.json` or deletes
//! blobs asks for a [`LockGuard<Exclusive>`], and cannot be called without
//! one.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{ErrorKind, IoContext, MicrosandboxError, MicrosandboxResult};
use crate::store::fs::Dir;

/// Shared or exclusive, as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Readers and lease creation.
    Shared,
    /// Whatever changes `index.json` or deletes blobs.
    Exclusive,
}

/// The shared mode, as a type.
#[derive(Debug)]
pub enum Shared {}

/// The exclusive mode, as a type.
#[derive(Debug)]
pub enum Exclusive {}

/// A lock mode as a type parameter of [`LockGuard`].
pub trait Mode {
    /// The mode.
    const MODE: LockMode;
}

impl Mode for Shared {
    const MODE: LockMode = LockMode::Shared;
}

impl Mode for Exclusive {
    const MODE: LockMode = LockMode::Exclusive;
}

/// A held lock of mode `M`; dropping it releases the lock.
#[derive(Debug)]
pub struct LockGuard<M> {
    _file: File,
    _mode: PhantomData<M>,
}

/// The exclusive cache lock, held.
pub type ExclusiveGuard = LockGuard<Exclusive>;

/// Takes mode `M` on `name` in `dir` (created if missing, never through a
/// link), waiting at most `timeout`.
///
/// # Errors
///
/// [`ErrorKind::Busy`] when the wait runs out; [`ErrorKind::CorruptCache`]
/// when the lock file is a link or not a regular file; [`ErrorKind::Io`]
/// when it cannot be opened.
pub fn lock_in<M: Mode>(
    dir: &Dir,
    name: &str,
    timeout: Duration,
) -> MicrosandboxResult<LockGuard<M>> {
    let file = dir.open_or_create(name)?;
    wait_for(file, &dir.join(name), M::MODE, timeout).map(|file| LockGuard {
        _file: file,
        _mode: PhantomData,
    })
}

/// Takes `mode` on the file at `path` (created if missing), following
/// links: for tests and tools that hold a cache's lock from outside, never
/// used by the cache itself.
#[cfg(feature = "testing")]
pub fn lock_file(path: &Path, mode: LockMode, timeout: Duration) -> MicrosandboxResult<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at("open lock file", path)?;
    wait_for(file, path, mode, timeout)
}

fn wait_for(
    file: File,
    path: &Path,
    mode: LockMode,
    timeout: Duration,
) -> MicrosandboxResult<File> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        if try_flock(&file, mode).at("lock", path)? {
            return Ok(file);
        }
        let waited = start.elapsed();
        if waited >= timeout {
            let what = match mode {
                LockMode::Shared => "shared",
                LockMode::Exclusive => "exclusive",
            };
            return Err(MicrosandboxError::new(
                ErrorKind::Busy,
                format!(
                    "cache busy: could not take the {what} lock on {} within {} ms",
                    path.display(),
                    waited.as_millis()
                ),
            ));
        }
        thread::sleep(pause.min(timeout.saturating_sub(waited)));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Tries to lock an open file without waiting: `Ok(false)` when another
/// descriptor holds a conflicting lock.
pub fn try_flock(file: &File, mode: LockMode) -> io::Result<bool> {
    let op = match mode {
        LockMode::Shared => libc::LOCK_SH,
        LockMode::Exclusive => libc::LOCK_EX,
    } | libc::LOCK_NB;
    loop {
        // SAFETY: flock on a descriptor this File owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

/// Releases a file's flock, keeping the file open.
pub fn unlock(file: &File) {
    // SAFETY: an flock call on a descriptor this File owns.
    unsafe {
        libc::flock(file.as_raw_fd(), libc::LOCK_UN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::open_path(t.path()).unwrap();
        let short = Duration::from_millis(30);
        let a = lock_in::<Shared>(&dir, "lock", short).unwrap();
        let b = lock_in::<Shared>(&dir, "lock", short).unwrap();
        let err = lock_in::<Exclusive>(&dir, "lock", short).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy);
        assert!(err.to_string().contains("exclusive lock"), "{err}");
        drop(a);
        drop(b);
        let _c = lock_in::<Exclusive>(&dir, "lock", short).unwrap();
        assert_eq!(
            lock_in::<Shared>(&dir, "lock", short).unwrap_err().kind(),
            ErrorKind::Busy
        );
    }

    #[test]
    fn a_waiter_gets_the_lock_when_it_is_released_in_time() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("lock");
        let held = lock_file(&path, LockMode::Exclusive, Duration::from_secs(1)).unwrap();
        let waiter = thread::spawn(move || {
            let dir = Dir::open_path(t.path()).unwrap();
            lock_in::<Exclusive>(&dir, "lock", Duration::from_secs(5)).map(drop)
        });
        thread::sleep(Duration::from_millis(50));
        drop(held);
        assert!(waiter.join().unwrap().is_ok());
    }

    #[test]
    fn a_lock_file_that_is_a_link_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("planted"), t.path().join("lock")).unwrap();
        let dir = Dir::open_path(t.path()).unwrap();
        let err = lock_in::<Shared>(&dir, "lock", Duration::from_millis(10)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CorruptCache);
        assert!(!outside.path().join("planted").exists());
    }
}
