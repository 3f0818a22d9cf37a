//! The cache on disk: one function per path, `index.json` reads and atomic
//! writes, and creation on first use.
//!
//! ```text
//! $MSB_HOME/cache/oci/{oci-layout,index.json,blobs/sha256/<hex>}
//! $MSB_HOME/cache/tmp/        in-flight writes
//! $MSB_HOME/cache/lock        the cache lock
//! $MSB_HOME/leases/<id>.json  pins
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::IndexFile;
use crate::store::fs::{create_dirs, read_bounded, write_atomic};
use crate::store::lock::{lock_file, LockGuard, LockMode};

/// The largest `index.json` read (about four million references).
const INDEX_LIMIT: u64 = 2 << 30;
/// The largest manifest, index or config blob read into memory.
pub const JSON_BLOB_LIMIT: u64 = 16 << 20;
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Paths of one cache home.
#[derive(Clone, Debug)]
pub struct Layout {
    home: PathBuf,
    cache: PathBuf,
    oci: PathBuf,
    blobs: PathBuf,
    index: PathBuf,
    tmp: PathBuf,
    lock: PathBuf,
    leases: PathBuf,
    lock_timeout: Duration,
}

impl Layout {
    /// The layout under `home`; nothing is created until [`Layout::ensure`].
    pub fn new(home: &Path, lock_timeout: Duration) -> Layout {
        let cache = home.join("cache");
        let oci = cache.join("oci");
        Layout {
            home: home.to_owned(),
            blobs: oci.join("blobs").join("sha256"),
            index: oci.join("index.json"),
            oci,
            tmp: cache.join("tmp"),
            lock: cache.join("lock"),
            cache,
            leases: home.join("leases"),
            lock_timeout,
        }
    }

    /// `$MSB_HOME`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `$MSB_HOME/cache`: the layout, `tmp/`, the lock.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// The OCI image layout directory.
    pub fn oci_dir(&self) -> &Path {
        &self.oci
    }

    /// `blobs/sha256/`.
    pub fn blobs_dir(&self) -> &Path {
        &self.blobs
    }

    /// `index.json`.
    pub fn index_path(&self) -> &Path {
        &self.index
    }

    /// `tmp/`, for in-flight writes.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// `leases/`.
    pub fn leases_dir(&self) -> &Path {
        &self.leases
    }

    /// The file of a blob. The digest type guarantees a plain file name.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Creates the layout if it is not there yet; cheap when it is.
    pub fn ensure(&self) -> MicrosandboxResult<()> {
        if self.index.is_file() && self.tmp.is_dir() && self.leases.is_dir() {
            return Ok(());
        }
        for dir in [&self.blobs, &self.tmp, &self.leases] {
            create_dirs(dir)?;
        }
        let _guard = self.lock(LockMode::Exclusive)?;
        if !self.oci.join("oci-layout").is_file() {
            write_atomic(&self.oci.join("oci-layout"), OCI_LAYOUT)?;
        }
        if !self.index.is_file() {
            self.write_index(&IndexFile::default())?;
        }
        Ok(())
    }

    /// Takes the cache lock, waiting at most the backend's bound.
    pub fn lock(&self, mode: LockMode) -> MicrosandboxResult<LockGuard> {
        lock_file(&self.lock, mode, self.lock_timeout)
    }

    /// Reads and parses `index.json`.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::CorruptCache`] when it does not parse or holds a
    /// bad digest.
    pub fn read_index(&self) -> MicrosandboxResult<IndexFile> {
        let bytes = read_bounded(&self.index, INDEX_LIMIT)?.ok_or_else(|| {
            MicrosandboxError::corrupt(format!("{} is missing", self.index.display()))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            MicrosandboxError::corrupt(format!("{} does not parse: {e}", self.index.display()))
        })
    }

    /// Replaces `index.json` atomically. The caller holds the exclusive lock.
    pub fn write_index(&self, index: &IndexFile) -> MicrosandboxResult<()> {
        let bytes = serde_json::to_vec(index).expect("an index always serializes");
        write_atomic(&self.index, &bytes)
    }

    /// Reads a JSON blob (manifest, index, config) of the cache.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::CorruptCache`] when it is missing or over the size
    /// limit.
    pub fn read_json_blob(&self, digest: &Digest) -> MicrosandboxResult<Vec<u8>> {
        let path = self.blob_path(digest);
        match read_bounded(&path, JSON_BLOB_LIMIT) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(MicrosandboxError::corrupt(format!(
                "blob {digest} is missing from the cache"
            ))),
            Err(e) => Err(e),
        }
    }

    /// How long a lock is waited for before `Busy`.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh, ready layout in a temporary home (1 s lock waits).
    pub(crate) fn temp() -> (tempfile::TempDir, Layout) {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::new(home.path(), Duration::from_secs(1));
        layout.ensure().unwrap();
        (home, layout)
    }

    #[test]
    fn ensure_creates_a_valid_empty_layout_once() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::new(home.path(), Duration::from_secs(1));
        layout.ensure().unwrap();
        let oci = home.path().join("cache/oci");
        assert_eq!(std::fs::read(oci.join("oci-layout")).unwrap(), OCI_LAYOUT);
        let index = layout.read_index().unwrap();
        assert!(index.manifests.is_empty());
        assert_eq!(index.schema_version, 2);
        assert!(home.path().join("cache/tmp").is_dir());
        assert!(home.path().join("leases").is_dir());
        // A second ensure keeps what is there.
        let mut index = index;
        index.annotations.insert("k".into(), "v".into());
        layout.write_index(&index).unwrap();
        layout.ensure().unwrap();
        assert_eq!(layout.read_index().unwrap(), index);
    }

    #[test]
    fn a_corrupt_index_is_reported_as_such() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::new(home.path(), Duration::from_secs(1));
        layout.ensure().unwrap();
        std::fs::write(layout.index_path(), b"{not json").unwrap();
        let err = layout.read_index().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::CorruptCache);
        assert!(err.to_string().contains("index.json"), "{err}");
    }
}
