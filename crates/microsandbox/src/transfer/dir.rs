//! An OCI image layout directory as the origin of a load.
//!
//! Every file is opened as a regular file: never through a symlink (a
//! symlinked blob is refused), never blocking on a FIFO or a device.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::Descriptor;
use crate::store::blob::{copy_verified, VerifiedBlob};
use crate::store::layout::Layout;
use crate::transfer::progress::{Phase, ProgressFn, ProgressReader};

/// A layout directory being read.
pub struct DirOrigin {
    root: PathBuf,
}

impl DirOrigin {
    pub fn new(root: &Path) -> DirOrigin {
        DirOrigin {
            root: root.to_owned(),
        }
    }

    fn invalid(&self, what: impl std::fmt::Display) -> MicrosandboxError {
        MicrosandboxError::new(
            ErrorKind::InvalidArchive,
            format!("{}: {what}", self.root.display()),
        )
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// `Ok(None)` when the file is not there.
    fn open_regular(&self, path: &Path, what: &str) -> MicrosandboxResult<Option<File>> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(self.invalid(format!("{what} is a symlink")))
            }
            Err(e) => return Err(MicrosandboxError::io("open", path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| MicrosandboxError::io("stat", path, e))?;
        if !meta.is_file() {
            return Err(self.invalid(format!("{what} is not a regular file")));
        }
        Ok(Some(file))
    }

    fn open_blob(&self, digest: &Digest, what: &str) -> MicrosandboxResult<File> {
        let what = format!("{what}: blob {digest}");
        self.open_regular(&self.blob_path(digest), &what)?
            .ok_or_else(|| self.invalid(format!("{what} is missing")))
    }

    /// The size of a blob; `None` if it is not there.
    pub fn blob_size(&self, digest: &Digest) -> MicrosandboxResult<Option<u64>> {
        let path = self.blob_path(digest);
        match self.open_regular(&path, &format!("blob {digest}"))? {
            None => Ok(None),
            Some(f) => Ok(Some(
                f.metadata()
                    .map_err(|e| MicrosandboxError::io("stat", &path, e))?
                    .len(),
            )),
        }
    }

    /// A top-level file, at most `limit + 1` bytes of it; `None` if absent.
    pub fn top(&self, name: &str, limit: u64) -> MicrosandboxResult<Option<Vec<u8>>> {
        let path = self.root.join(name);
        let Some(file) = self.open_regular(&path, name)? else {
            return Ok(None);
        };
        read_at_most(file, limit, &path).map(Some)
    }

    /// At most `limit` bytes of a blob.
    pub fn read(&self, digest: &Digest, limit: u64, what: &str) -> MicrosandboxResult<Vec<u8>> {
        read_at_most(
            self.open_blob(digest, what)?,
            limit,
            &self.blob_path(digest),
        )
    }

    /// Copies a blob into `tmp/`, verified against its descriptor.
    pub fn stage(
        &self,
        layout: &Layout,
        d: &Descriptor,
        what: &str,
        progress: Option<ProgressFn>,
    ) -> MicrosandboxResult<VerifiedBlob> {
        let file = self.open_blob(&d.digest, what)?;
        let file = ProgressReader::new(
            file,
            progress,
            Phase::Write,
            Some(d.digest.to_string()),
            Some(d.size),
        );
        let path = self.blob_path(&d.digest);
        copy_verified(
            layout,
            file,
            &d.digest,
            d.size,
            &format!("{}: {what}", self.root.display()),
            |e| MicrosandboxError::io("read", &path, e),
        )
    }
}

fn read_at_most(file: File, limit: u64, path: &Path) -> MicrosandboxResult<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| MicrosandboxError::io("read", path, e))?;
    Ok(bytes)
}
