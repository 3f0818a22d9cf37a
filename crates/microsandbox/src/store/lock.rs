//! Cross-process locks: the cache lock and the per-writer locks in `tmp/`.
//!
//! `flock(2)` locks belong to an open file description, so every operation
//! opens its own descriptor and many operations of one process exclude each
//! other exactly as operations of different processes do. Waits are
//! bounded: past the bound the caller gets [`ErrorKind::Busy`] saying how
//! long it waited. A lock is released when its guard drops or its process
//! dies, so a killed process never leaves the cache locked.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{ErrorKind, IoContext, MicrosandboxError, MicrosandboxResult};

/// Shared or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Readers and lease creation.
    Shared,
    /// Whatever changes `index.json` or deletes blobs.
    Exclusive,
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// Takes `mode` on the file at `path` (created if missing), waiting at most `timeout`.
///
/// # Errors
///
/// [`ErrorKind::Busy`] when the wait runs out; [`ErrorKind::Io`] when the
/// file cannot be opened.
pub fn lock_file(path: &Path, mode: LockMode, timeout: Duration) -> MicrosandboxResult<LockGuard> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at("open lock file", path)?;
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        if try_flock(&file, mode).at("lock", path)? {
            return Ok(LockGuard { _file: file });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let short = Duration::from_millis(30);
        let a = lock_file(&path, LockMode::Shared, short).unwrap();
        let _b = lock_file(&path, LockMode::Shared, short).unwrap();
        let err = lock_file(&path, LockMode::Exclusive, short).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy);
        assert!(err.to_string().contains("exclusive lock"), "{err}");
        drop(a);
        drop(_b);
        let _c = lock_file(&path, LockMode::Exclusive, short).unwrap();
        assert_eq!(
            lock_file(&path, LockMode::Shared, short)
                .unwrap_err()
                .kind(),
            ErrorKind::Busy
        );
    }

    #[test]
    fn a_waiter_gets_the_lock_when_it_is_released_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = lock_file(&path, LockMode::Exclusive, Duration::from_secs(1)).unwrap();
        let p = path.clone();
        let waiter =
            thread::spawn(move || lock_file(&p, LockMode::Exclusive, Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(50));
        drop(held);
        assert!(waiter.join().unwrap().is_ok());
    }
}
