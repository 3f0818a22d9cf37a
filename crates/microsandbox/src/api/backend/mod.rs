//! A cache home and the blocking operations on it.
//!
//! [`LocalBackend`] names a `$MSB_HOME`; every operation here blocks on
//! file I/O and locks, so the async [`crate::Image`] API runs them on
//! tokio's blocking pool. Every backend of one home in a process shares one
//! in-memory view of `index.json` and of the blobs (`views.rs`).
//!
//! One file per family of operations: `query.rs` (list, get, inspect),
//! `remove.rs`, `maintenance.rs` (prune, orphans, purge, verify, disk
//! usage), `transfer.rs` (load, pull, save, materialize), `leases.rs`.

mod leases;
mod maintenance;
mod query;
mod remove;
mod transfer;
mod views;

pub use leases::LeaseOptions;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::gc::census::CensusCache;
use crate::oci::reference::Reference;
use crate::store::catalog::{check_target_text, CatalogCache, Entry};
use crate::store::layout::{Home, Layout};
use crate::store::lock::Shared;

/// How long an operation waits for the cache lock before `Busy`.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// A local cache home (`$MSB_HOME`).
#[derive(Clone, Debug)]
pub struct LocalBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    home: Home,
    /// Shared with every backend of the same home (`views.rs`).
    views: Arc<views::Views>,
}

/// Builds a [`LocalBackend`].
#[derive(Clone, Debug, Default)]
pub struct LocalBackendBuilder {
    home: Option<PathBuf>,
    lock_timeout: Option<Duration>,
}

impl LocalBackendBuilder {
    /// The home directory; `$MSB_HOME`, else `~/.microsandbox`, if unset.
    pub fn home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = Some(home.into());
        self
    }

    /// How long to wait for the cache lock before failing with `Busy`.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// The backend. Nothing is created on disk until the first operation.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for an empty home, [`ErrorKind::Io`](crate::ErrorKind::Io)
    /// when a relative home cannot be made absolute.
    pub async fn build(self) -> MicrosandboxResult<LocalBackend> {
        self.build_blocking()
    }

    /// [`LocalBackendBuilder::build`] without a runtime.
    pub fn build_blocking(self) -> MicrosandboxResult<LocalBackend> {
        let home = match self.home {
            Some(h) => h,
            None => default_home()?,
        };
        if home.as_os_str().is_empty() {
            return Err(MicrosandboxError::invalid_argument(
                "home must not be empty",
            ));
        }
        let home = std::path::absolute(&home)
            .map_err(|e| MicrosandboxError::io("resolve home", &home, e))?;
        let timeout = self.lock_timeout.unwrap_or(DEFAULT_LOCK_TIMEOUT);
        raise_fd_limit();
        Ok(LocalBackend {
            inner: Arc::new(Inner {
                views: views::of(&home),
                home: Home::new(home, timeout),
            }),
        })
    }
}

/// Raises the soft limit of open files to the hard one, once per process,
/// as Node and Go do at startup: a load holds a locked temporary per layer
/// of an archive until its commit.
fn raise_fd_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain getrlimit/setrlimit on a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    });
}

/// `$MSB_HOME`, else `~/.microsandbox`, read now.
///
/// # Errors
///
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when neither is set.
pub fn default_home() -> MicrosandboxResult<PathBuf> {
    if let Some(h) = std::env::var_os("MSB_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".microsandbox")),
        None => Err(MicrosandboxError::invalid_argument(
            "neither MSB_HOME nor HOME is set",
        )),
    }
}

/// The backend of the default home, as it is now; one shared backend per
/// home, so repeated calls reuse its view of the index.
pub fn default_backend() -> MicrosandboxResult<LocalBackend> {
    static BACKENDS: OnceLock<Mutex<HashMap<PathBuf, LocalBackend>>> = OnceLock::new();
    let home = default_home()?;
    let mut map = BACKENDS
        .get_or_init(Default::default)
        .lock()
        .expect("backend table lock");
    if let Some(b) = map.get(&home) {
        return Ok(b.clone());
    }
    let backend = LocalBackend::builder().home(&home).build_blocking()?;
    map.insert(home, backend.clone());
    Ok(backend)
}

impl LocalBackend {
    /// A builder.
    pub fn builder() -> LocalBackendBuilder {
        LocalBackendBuilder::default()
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        self.inner.home.path()
    }

    /// Makes the home and its cache if they are not there yet, as every
    /// writing operation does (0700, whatever the umask; a link, a foreign
    /// owner or a group-writable home refused), for a caller that puts a
    /// file of its own there (the server's socket).
    ///
    /// # Errors
    ///
    /// `CorruptCache` or `Io` naming the path, as the writing operations.
    pub fn ensure_home(&self) -> MicrosandboxResult<()> {
        self.layout().map(drop)
    }

    /// The open cache, made on first use (for the crate's tests through
    /// `testing::layout`).
    pub(crate) fn layout(&self) -> MicrosandboxResult<Arc<Layout>> {
        self.inner.home.layout()
    }

    /// The open cache if it exists: read-only operations never make it.
    fn existing(&self) -> MicrosandboxResult<Option<Arc<Layout>>> {
        self.inner.home.existing()
    }

    /// [`LocalBackend::existing`], for the serving reads (`serving.rs`).
    pub(crate) fn existing_layout(&self) -> MicrosandboxResult<Option<Arc<Layout>>> {
        self.existing()
    }

    /// The backend's parsed view of `index.json`.
    pub(crate) fn catalog_cache(&self) -> &CatalogCache {
        &self.inner.views.catalog
    }

    /// The backend's remembered blob graphs.
    pub(crate) fn census_cache(&self) -> &CensusCache {
        &self.inner.views.census
    }

    /// Runs `f` on the entry a reference names, under the shared lock.
    /// A reference (or a digest prefix, as docker takes image IDs) runs
    /// `f` on the entry it names, under the shared lock.
    fn with_entry<T>(
        &self,
        reference: &str,
        f: impl FnOnce(&Layout, &Entry) -> MicrosandboxResult<T>,
    ) -> MicrosandboxResult<T> {
        check_target_text(reference)?;
        let Some(layout) = self.existing()? else {
            return Err(not_found(reference));
        };
        let _guard = layout.lock::<Shared>()?;
        let catalog = self.inner.views.catalog.current(&layout)?;
        let target = catalog.target(reference)?;
        let found = catalog.entries_of(&target);
        let entry = found.first().ok_or_else(|| not_found(reference))?;
        f(&layout, entry)
    }
}

/// `ImageNotFound` for what the caller typed, in its familiar form when it
/// is a reference.
fn not_found(input: &str) -> MicrosandboxError {
    match Reference::parse(input) {
        Ok(r) => MicrosandboxError::not_found(&r.familiar()),
        Err(_) => MicrosandboxError::not_found(input),
    }
}
