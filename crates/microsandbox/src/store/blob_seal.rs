//! What lets a reader send a blob without hashing it again: a seal this
//! process made after it hashed the blob in full, kept in memory and
//! checked against one `fstat` of the open file before every use.
//!
//! ```text
//! (device, inode) -> digest, size, mtime, ctime
//! ```
//!
//! A blob's bytes are trusted only while they still hash to its name
//! (DESIGN.md §10), and whoever may write the home may change them behind
//! the cache's back. Any write to a file moves its change time (`ctime`),
//! and so does every way of putting its modification time back; no
//! unprivileged process can set a `ctime`. So a blob hashed in full
//! whose `fstat` still shows the same inode, size, mtime and ctime has the
//! bytes it had when it was hashed. Two cases where the change time would
//! not move are excluded before a seal is made:
//!
//! - a write in the same clock tick as the change before the hash (file
//!   systems keep times at a granularity of up to a second or two): a blob
//!   changed less than [`SETTLED`] ago is hashed but not sealed;
//! - a write through a shared writable mapping made before the hash, to a
//!   page already dirty (the time moves only at the first write to a clean
//!   page): the blob's pages are written back before its stamp is taken,
//!   which write-protects every mapping of them, and only file systems
//!   whose mapped writes move the time are trusted (ext2/3/4, XFS, Btrfs,
//!   F2FS; never tmpfs, whose mapped writes move nothing).
//!
//! The seal lives in this process's memory, not on the file: an extended
//! attribute could be written by the same hand that edits the bytes, and
//! setting one moves the very change time it would have to record (the
//! VM artifacts' seal, `store/artifact/seal.rs`, records the mtime and
//! leaves an edit that puts it back to verify's full hash). So the first
//! whole read of a blob after a start hashes it, and each one after that
//! costs one `fstat`. A reader re-checks the stamp after its last read
//! and before it hands out the last bytes, so a write during the send
//! cuts the answer short.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{fstat, fstatfs};

use crate::oci::digest::Digest;

/// How long ago a blob's last change must be for its seal to be made.
pub const SETTLED: Duration = Duration::from_secs(2);
/// The most seals held; past it the table starts again (a seal costs
/// nothing to lose: the next read hashes).
const MAX_SEALS: usize = 16_384;

/// What a file is now, from one `fstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl BlobStamp {
    /// The stamp of `file`.
    ///
    /// # Errors
    ///
    /// When it cannot be stat'ed.
    pub fn of(file: &File) -> std::io::Result<BlobStamp> {
        let st = fstat(file)?;
        Ok(BlobStamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
        })
    }

    /// Its size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether `file` is still as stamped (`false` when it cannot tell).
    pub fn holds(&self, file: &File) -> bool {
        BlobStamp::of(file).is_ok_and(|now| now == *self)
    }

    /// Whether its last change is at least [`SETTLED`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let Ok(secs) = u64::try_from(self.ctime.0) else {
            return false;
        };
        let changed = UNIX_EPOCH
            + Duration::from_secs(secs)
            + Duration::from_nanos(self.ctime.1.clamp(0, 999_999_999) as u64);
        now.duration_since(changed).is_ok_and(|ago| ago >= SETTLED)
    }
}

/// Seals by device and inode: the digest hashed and the stamp then.
type Seals = HashMap<(u64, u64), (Digest, BlobStamp)>;

static SEALS: Mutex<Option<Seals>> = Mutex::new(None);

/// Whether the file system of `file` moves a file's times on every
/// write, mapped ones included.
fn trusted_fs(file: &File) -> bool {
    const EXT: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683E;
    const F2FS: i64 = 0xF2F5_2010;
    // `f_type`'s width differs between targets.
    #[allow(clippy::unnecessary_cast)]
    fstatfs(file).is_ok_and(|s| [EXT, XFS, BTRFS, F2FS].contains(&(s.f_type as i64)))
}

/// The stamp of `file` if this process sealed it as `digest` and it has
/// not changed since: its bytes may be sent without hashing them again.
pub fn sealed(file: &File, digest: &Digest) -> Option<BlobStamp> {
    let now = BlobStamp::of(file).ok()?;
    let seals = SEALS.lock().unwrap_or_else(|e| e.into_inner());
    match seals.as_ref()?.get(&(now.dev, now.ino)) {
        Some((d, stamp)) if d == digest && *stamp == now => Some(now),
        _ => None,
    }
}

/// Before a whole read that hashes `file`: its pages written back (so a
/// mapped write after this moves its time) and its stamp, to hand to
/// [`seal`] once the hash matched. `None` when it could not be sealed
/// anyway (changed too recently, a file system that does not tell every
/// write, or no stamp to be had): the read hashes without it.
pub fn before_hash(file: &File) -> Option<BlobStamp> {
    let first = BlobStamp::of(file).ok()?;
    if !first.settled(SystemTime::now()) || !trusted_fs(file) {
        return None;
    }
    // Best effort: should it fail, `seal` refuses what it left (the stamp
    // taken below would not be the one then).
    let _ = file.sync_data();
    BlobStamp::of(file).ok()
}

/// Records that `file`, stamped `stamp` before a whole read whose bytes
/// hashed to `digest`, is that blob, if it is still as stamped, changed
/// long enough ago and on a file system that tells every write. Whether
/// it was sealed.
pub fn seal(file: &File, digest: &Digest, stamp: BlobStamp) -> bool {
    if !stamp.holds(file) || !stamp.settled(SystemTime::now()) || !trusted_fs(file) {
        return false;
    }
    let mut seals = SEALS.lock().unwrap_or_else(|e| e.into_inner());
    let table = seals.get_or_insert_with(HashMap::new);
    if table.len() >= MAX_SEALS {
        table.clear();
    }
    table.insert((stamp.dev, stamp.ino), (digest.clone(), stamp));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    fn file(bytes: &[u8]) -> (tempfile::TempDir, File, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let mut f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("blob"))
            .unwrap();
        f.write_all(bytes).unwrap();
        (dir, f, Digest::of(bytes))
    }

    #[test]
    fn a_fresh_blob_is_not_sealed_a_settled_one_is_and_a_write_breaks_it() {
        let (dir, f, digest) = file(b"a blob's bytes");
        assert_eq!(before_hash(&f), None, "changed just now: not to be sealed");
        let stamp = BlobStamp::of(&f).unwrap();
        assert!(!seal(&f, &digest, stamp), "changed just now: not sealed");
        assert_eq!(sealed(&f, &digest), None);
        assert!(
            trusted_fs(&f),
            "the temp dir is on a file system whose writes move ctime (ext4 here)"
        );
        std::thread::sleep(SETTLED + Duration::from_millis(100));
        let stamp = before_hash(&f).unwrap();
        assert!(seal(&f, &digest, stamp));
        assert_eq!(sealed(&f, &digest), Some(stamp));
        assert_eq!(sealed(&f, &Digest::of(b"another")), None, "another name");
        // Same size, the modification time put back: the change time tells.
        let mtime = std::fs::metadata(dir.path().join("blob"))
            .unwrap()
            .modified()
            .unwrap();
        f.write_at(b"A", 0).unwrap();
        f.set_modified(mtime).unwrap();
        assert_eq!(BlobStamp::of(&f).unwrap().size(), stamp.size());
        assert_eq!(sealed(&f, &digest), None);
        assert!(!stamp.holds(&f));
    }
}
