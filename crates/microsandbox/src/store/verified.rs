//! What a verified write becomes: a [`VerifiedBlob`], the only thing that
//! can be committed, by a no-clobber move into `blobs/sha256/` under the
//! exclusive cache lock ([`VerifiedBlob::commit`], the caller fsyncing
//! `blobs/` once after a batch), or parked between its verification and
//! the commit ([`ParkedBlob`], see [`crate::store::partial`]).

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{ErrorKind, IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::blob::{names_file, ReadAt, TmpFile};
use crate::store::fs::Dir;
use crate::store::layout::Layout;
use crate::store::lock::{try_flock, unlock, ExclusiveGuard, LockMode};

/// A temporary whose digest and size matched, locked, ready to commit.
#[derive(Debug)]
pub struct VerifiedBlob {
    tmp: TmpFile,
    digest: Digest,
    size: u64,
    ino: u64,
    partial: bool,
    synced: AtomicBool,
}

impl VerifiedBlob {
    /// What [`crate::store::blob::BlobWriter::finish`] makes of a
    /// temporary whose size and digest matched.
    pub(crate) fn new(tmp: TmpFile, digest: Digest, size: u64, ino: u64, partial: bool) -> Self {
        VerifiedBlob {
            tmp,
            digest,
            size,
            ino,
            partial,
            synced: AtomicBool::new(false),
        }
    }

    /// The verified digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The open file, for positioned reads (never reopened by name).
    pub fn file(&self) -> &std::fs::File {
        &self.tmp.file
    }

    /// The file's path, for messages.
    pub fn path(&self) -> PathBuf {
        self.tmp.path()
    }

    /// Its bytes, read back from the open file (never through its name).
    pub fn reader(&self) -> ReadAt<'_> {
        ReadAt::new(&self.tmp.file)
    }

    /// Fsyncs the data: done for a batch before the commit takes the lock
    /// (see [`sync_all`]), and by [`VerifiedBlob::commit`] if not yet.
    pub fn sync(&self) -> MicrosandboxResult<()> {
        if !self.synced.load(Ordering::Acquire) {
            self.tmp.file.sync_all().at("fsync", &self.tmp.path())?;
            self.synced.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Renames the file into `blobs/sha256/` unless the blob is there
    /// already (then the temporary goes and the answer is false). The
    /// caller fsyncs the blobs directory once after a batch.
    pub fn commit(
        mut self,
        layout: &Layout,
        _exclusive: &ExclusiveGuard,
    ) -> MicrosandboxResult<bool> {
        self.sync()?;
        let moved = move_in(
            &self.tmp,
            layout.blobs_dir(),
            self.digest.hex(),
            "blob-before-rename",
        )?;
        if moved {
            self.tmp.unlink_on_drop = false;
        } else {
            self.tmp.unlink();
        }
        Ok(moved)
    }

    /// Fsyncs a verified partial and unlocks it, leaving it (open) for a
    /// commit, ours or another pull's: a parked file is always on disk.
    pub fn park(mut self) -> MicrosandboxResult<ParkedBlob> {
        debug_assert!(self.partial, "only partial downloads are parked");
        self.sync()?;
        self.tmp.unlink_on_drop = false;
        unlock(&self.tmp.file);
        Ok(ParkedBlob {
            tmp: self.tmp,
            digest: self.digest,
            size: self.size,
            ino: self.ino,
        })
    }
}

/// The commit's move into `blobs/` (or, for the VM artifacts, a directory
/// of `cache/vm/`): the verified file itself is linked there by its
/// descriptor (no clobbering), then its temporary name goes; a name
/// swapped in `tmp/` after the checks can never be committed. Crash points
/// around it. The one function that puts a file into `blobs/`.
pub(crate) fn move_in(
    tmp: &TmpFile,
    to: &Dir,
    to_name: &str,
    point: &str,
) -> MicrosandboxResult<bool> {
    crate::util::fault::point(point);
    let target = to.join(to_name);
    let moved = match to.link_open_file(&tmp.file, to_name) {
        Ok(linked) => {
            if linked && names_file(&tmp.dir, &tmp.name, &tmp.file)? {
                crate::util::fault::point("blob-linked-before-unlink");
                tmp.dir.remove(&tmp.name)?;
            }
            linked
        }
        // The file lost its last name (someone unlinked it in tmp/): it
        // cannot be linked, and nothing else may take its place.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MicrosandboxError::corrupt(format!(
                "{} was removed or replaced before its commit",
                tmp.path().display()
            )))
        }
        // No way to link a descriptor: the name, checked just before.
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            if !names_file(&tmp.dir, &tmp.name, &tmp.file)? {
                return Err(MicrosandboxError::corrupt(format!(
                    "{} was replaced before its commit",
                    tmp.path().display()
                )));
            }
            tmp.dir
                .rename_noreplace(&tmp.name, to, to_name)
                .at("commit to", &target)?
        }
        Err(e) => return Err(MicrosandboxError::io("commit to", &target, e)),
    };
    if moved {
        crate::util::fault::point("blob-after-rename");
    }
    Ok(moved)
}

/// Fsyncs a batch of verified blobs, several at once.
pub fn sync_all(blobs: &[VerifiedBlob]) -> MicrosandboxResult<()> {
    crate::util::par::in_parallel(blobs, VerifiedBlob::sync).map(drop)
}

/// A verified partial download, unlocked, waiting for the commit. It keeps
/// its file open: the inode cannot be freed and its number given to another
/// file, so "the name still points at this inode, at this size" proves the
/// bytes are the verified ones (nobody truncates a partial, and a writer
/// only appends to one shorter than its size).
#[derive(Debug)]
pub struct ParkedBlob {
    tmp: TmpFile,
    digest: Digest,
    size: u64,
    ino: u64,
}

impl ParkedBlob {
    /// The verified digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Takes the parked file for the commit: waits up to `timeout` for a
    /// pull that is rehashing it, then checks it is still this inode at
    /// this size. `Ok(false)`: the blob is in `blobs/` already (another
    /// pull committed it). The file stays locked until this value drops.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Busy`] when the file is gone or still held.
    pub fn hold(
        &self,
        layout: &Layout,
        _exclusive: &ExclusiveGuard,
        timeout: Duration,
    ) -> MicrosandboxResult<bool> {
        if layout.has_blob(&self.digest) {
            return Ok(false);
        }
        let gone = || {
            MicrosandboxError::new(
                ErrorKind::Busy,
                format!(
                    "the download of {} went away before its commit; pull again",
                    self.digest
                ),
            )
        };
        let path = self.tmp.path();
        let start = Instant::now();
        while !try_flock(&self.tmp.file, LockMode::Exclusive).at("lock", &path)? {
            if start.elapsed() >= timeout {
                return Err(gone());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let len = self.tmp.file.metadata().at("stat", &path)?.len();
        let named = self.tmp.dir.stat(&self.tmp.name)?.map(|s| s.st_ino);
        if named != Some(self.ino) || len != self.size {
            return Err(gone());
        }
        Ok(true)
    }

    /// Renames the held file into `blobs/sha256/` (see [`ParkedBlob::hold`]).
    /// The caller fsyncs the blobs directory after a batch.
    pub fn commit(&self, layout: &Layout, _exclusive: &ExclusiveGuard) -> MicrosandboxResult<()> {
        move_in(
            &self.tmp,
            layout.blobs_dir(),
            self.digest.hex(),
            "partial-before-rename",
        )?;
        Ok(())
    }
}
