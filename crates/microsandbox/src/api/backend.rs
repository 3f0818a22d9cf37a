//! A cache home and the blocking operations on it.
//!
//! [`LocalBackend`] names a `$MSB_HOME`; every operation here blocks on
//! file I/O and locks, so the async [`crate::Image`] API runs them on
//! tokio's blocking pool. Clones share one in-memory view of `index.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::api::handle::{
    DiskUsage, ImageConfigDetail, ImageDetail, ImageHandle, ImageHistory, ImageLayerDetail,
    ImageLease, ImagePruneReport,
};
use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::gc;
use crate::gc::census::CensusCache;
use crate::gc::policy::PruneOptions;
use crate::oci::digest::Digest;
use crate::oci::model::{Platform, ANN_LAST_USED};
use crate::oci::platform;
use crate::oci::reference::Reference;
use crate::store::artifact::{self, ArtifactKind};
use crate::store::catalog::{check_target_text, target_by_name, CatalogCache, Entry, Target};
use crate::store::content;
use crate::store::index::{self, IndexTxn};
use crate::store::layout::{Home, Layout};
use crate::store::lease::{self, LeaseKind, LeaseRecord, Pins};
use crate::store::lock::{Exclusive, Shared};
use crate::transfer::registry::{PullOptions, PullPolicy};
use crate::transfer::{self, LoadOptions, SaveOptions};
use crate::util::time;
use crate::vm::materialize::MaterializeOptions;

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
    catalog: CatalogCache,
    census: CensusCache,
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
    /// [`ErrorKind::InvalidArgument`] for an empty home, [`ErrorKind::Io`]
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
                home: Home::new(home, timeout),
                catalog: CatalogCache::default(),
                census: CensusCache::default(),
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
/// [`ErrorKind::InvalidArgument`] when neither is set.
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

/// What a lease asks for.
#[derive(Clone, Debug, Default)]
pub struct LeaseOptions {
    /// The id; a random one if unset.
    pub id: Option<String>,
    /// `Sandbox` if unset.
    pub kind: Option<LeaseKind>,
    /// The lease ends this long after it is taken; never if unset.
    pub expires_in: Option<Duration>,
    /// Also make the image's VM disk (pinned by the lease), returned with
    /// the lease; if it cannot be made, the lease ends and the error is
    /// returned.
    pub materialize: bool,
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
        &self.inner.catalog
    }

    /// The backend's remembered blob graphs.
    pub(crate) fn census_cache(&self) -> &CensusCache {
        &self.inner.census
    }

    /// Every reference, newest first. Blocking.
    pub fn list_images(&self) -> MicrosandboxResult<Vec<ImageHandle>> {
        let Some(layout) = self.existing()? else {
            return Ok(Vec::new());
        };
        let _guard = layout.lock::<Shared>()?;
        let catalog = self.inner.catalog.current(&layout)?;
        let mut handles: Vec<ImageHandle> =
            catalog.entries().iter().map(|e| e.handle.clone()).collect();
        mark_disks(&layout, &mut handles)?;
        Ok(handles)
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
        let catalog = self.inner.catalog.current(&layout)?;
        let target = catalog.target(reference)?;
        let found = catalog.entries_of(&target);
        let entry = found.first().ok_or_else(|| not_found(reference))?;
        f(&layout, entry)
    }

    /// The handle of one reference. Blocking.
    pub fn get_image(&self, reference: &str) -> MicrosandboxResult<ImageHandle> {
        self.with_entry(reference, |layout, e| {
            let mut handle = [e.handle.clone()];
            mark_disks(layout, &mut handle)?;
            let [handle] = handle;
            Ok(handle)
        })
    }

    /// The handle, config and layers of one reference. Blocking.
    pub fn inspect_image(&self, reference: &str) -> MicrosandboxResult<ImageDetail> {
        self.with_entry(reference, |layout, e| {
            let mut detail = inspect_entry(layout, e)?;
            mark_disks(layout, std::slice::from_mut(&mut detail.handle))?;
            Ok(detail)
        })
    }

    /// Makes whatever the image's VM disk lacks and returns it. Blocking.
    ///
    /// # Errors
    ///
    /// `ImageNotFound`; `InvalidArchive` for a layer that cannot be made a
    /// VM image (naming the entry); `DigestMismatch` for a layer that does
    /// not decompress to its diff_id; `Unsupported` for a compression this
    /// version cannot read; `CorruptCache`; `Busy`; `Io`.
    pub fn materialize(
        &self,
        reference: &str,
        options: &crate::MaterializeOptions,
    ) -> MicrosandboxResult<crate::ImageDisk> {
        let plan = self.with_entry(reference, |layout, entry| {
            crate::vm::materialize::plan(
                layout,
                &entry.descriptor,
                entry.handle.reference().to_owned(),
            )
        })?;
        crate::vm::materialize::materialize_in(&self.inner.home, &plan, options)
    }

    /// Removes a reference (every spelling of it); its content stays until
    /// prune. Blocking.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ImageNotFound`]; [`ErrorKind::ImageInUse`], naming the
    /// holders, when `force` is false, an unexpired lease pins the manifest
    /// and no other reference keeps it.
    pub fn remove_image(&self, reference: &str, force: bool) -> MicrosandboxResult<()> {
        check_target_text(reference)?;
        let Some(layout) = self.existing()? else {
            return Err(not_found(reference));
        };
        let guard = layout.lock::<Exclusive>()?;
        let mut txn = IndexTxn::begin(&layout, &guard)?;
        let target = match target_by_name(&txn.index, reference) {
            Some(t) => t,
            None => self.inner.catalog.current(&layout)?.target(reference)?,
        };
        let shown = match &target {
            Target::Name(r) => r.familiar(),
            Target::Manifest(d) => d.to_string(),
        };
        let index = &mut txn.index;
        let positions: std::collections::HashSet<usize> = match &target {
            Target::Name(r) => index::spellings(index, r).into_iter().collect(),
            // A digest names the manifest: every name on it goes.
            Target::Manifest(d) => (0..index.manifests.len())
                .filter(|&i| {
                    &index.manifests[i].digest == d && index.manifests[i].ref_name().is_some()
                })
                .collect(),
        };
        if positions.is_empty() {
            return Err(not_found(reference));
        }
        if !force {
            let leases = lease::list(&layout)?;
            let now = time::now();
            let doomed: Vec<&Digest> = positions
                .iter()
                .map(|&i| &index.manifests[i].digest)
                .collect();
            let still_named = |d: &Digest| {
                index.manifests.iter().enumerate().any(|(i, m)| {
                    !positions.contains(&i) && &m.digest == d && m.ref_name().is_some()
                })
            };
            let holders: Vec<String> = leases
                .iter()
                .filter(|l| !l.is_expired(now))
                .filter(|l| {
                    l.manifest_digest
                        .as_ref()
                        .is_some_and(|d| doomed.contains(&d) && !still_named(d))
                })
                .map(|l| format!("{} {}", l.kind.as_str(), l.id))
                .collect();
            if !holders.is_empty() {
                return Err(MicrosandboxError::new(
                    ErrorKind::ImageInUse,
                    format!("image in use: {shown} is pinned by {}", holders.join(", ")),
                ));
            }
        }
        let mut i = 0;
        index.manifests.retain(|_| {
            let keep = !positions.contains(&i);
            i += 1;
            keep
        });
        txn.commit()
    }

    /// Runs the default prune. Blocking.
    pub fn prune_images(&self) -> MicrosandboxResult<ImagePruneReport> {
        self.prune_images_with(&PruneOptions::default())
    }

    /// Runs a prune with a policy, or its dry run. Blocking. A home that
    /// does not exist has nothing to prune, and is not made.
    pub fn prune_images_with(
        &self,
        options: &PruneOptions,
    ) -> MicrosandboxResult<ImagePruneReport> {
        options.check()?;
        let Some(layout) = self.existing()? else {
            return Ok(ImagePruneReport::measured(options.dry_run));
        };
        gc::prune(&layout, &self.inner.census, &self.inner.catalog, options)
    }

    /// The blobs no reference and no lease reaches (what a dangling prune
    /// takes), largest first. Blocking.
    pub fn orphans(&self) -> MicrosandboxResult<Vec<crate::gc::orphans::OrphanBlob>> {
        match self.existing()? {
            Some(layout) => {
                crate::gc::orphans::orphans(&layout, &self.inner.census, &self.inner.catalog)
            }
            None => Ok(Vec::new()),
        }
    }

    /// Removes every reference, blob, temporary and derived file, leaving an
    /// empty, valid layout. Blocking.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ImageInUse`] naming the holders while a lease is live,
    /// unless `options.force` ends the leases first.
    pub fn purge(
        &self,
        options: &crate::gc::purge::PurgeOptions,
    ) -> MicrosandboxResult<ImagePruneReport> {
        match self.existing()? {
            Some(layout) => {
                crate::gc::purge::purge(&layout, &self.inner.census, &self.inner.catalog, options)
            }
            None => Ok(ImagePruneReport::measured(false)),
        }
    }

    /// Re-hashes every blob and checks every invariant; repairs if asked.
    /// Blocking. A home that does not exist is clean, and is not made.
    pub fn verify(
        &self,
        options: &crate::VerifyOptions,
    ) -> MicrosandboxResult<crate::VerifyReport> {
        match self.existing()? {
            Some(layout) => crate::gc::verify::verify(&layout, options),
            None => Ok(Default::default()),
        }
    }

    /// Measures what the cache takes on disk. Blocking. A home that does
    /// not exist takes nothing, and is not made.
    pub fn disk_usage(&self) -> MicrosandboxResult<DiskUsage> {
        match self.existing()? {
            Some(layout) => {
                crate::gc::usage::disk_usage(&layout, &self.inner.census, &self.inner.catalog)
            }
            None => Ok(Default::default()),
        }
    }

    /// Loads every named image of an OCI layout directory, an OCI archive
    /// or a docker-archive. Blocking.
    pub fn load_images(
        &self,
        path: &Path,
        options: &LoadOptions,
    ) -> MicrosandboxResult<Vec<ImageHandle>> {
        let layout = self.layout()?;
        let sinks = options
            .materialize
            .then(|| crate::vm::layer::sinks(layout.clone()));
        let mut handles = transfer::load(&layout, path, options, sinks)?;
        if options.materialize {
            let vm = MaterializeOptions {
                progress: options.progress.clone(),
                pull_progress: None,
                max_layer_bytes: options.max_layer_bytes,
            };
            for h in &mut handles {
                self.materialize(h.reference(), &vm)?;
                h.disk_ready = true;
            }
        }
        Ok(handles)
    }

    /// Pulls a reference from its registry, as `options.policy` says.
    /// Blocking.
    ///
    /// # Errors
    ///
    /// `ImageNotFound` (from the registry, or from the cache with
    /// [`PullPolicy::Never`]), `Unauthorized`, `RegistryError`,
    /// `DigestMismatch`, `PlatformNotFound`.
    pub fn pull_image(
        &self,
        reference: &str,
        options: &PullOptions,
    ) -> MicrosandboxResult<ImageHandle> {
        let mut handle = self.pull_only(reference, options)?;
        if options.materialize {
            let vm = MaterializeOptions {
                progress: options.progress.clone(),
                pull_progress: options.pull_progress.clone(),
                max_layer_bytes: options.max_layer_bytes,
            };
            self.materialize(handle.reference(), &vm)?;
            handle.disk_ready = true;
        }
        Ok(handle)
    }

    fn pull_only(&self, reference: &str, options: &PullOptions) -> MicrosandboxResult<ImageHandle> {
        let r = Reference::parse(reference)?;
        let want = options.platform.clone().unwrap_or_else(platform::host);
        // A cached entry answers a pull only if it is for the platform asked.
        let cached = match self.with_entry(reference, |_, e| Ok(entry_platform(e))) {
            Ok(found) => Some(found),
            Err(e) if e.kind() == ErrorKind::ImageNotFound => None,
            Err(e) => return Err(e),
        };
        let fits = matches!(&cached, Some(Some(have)) if platform::matches(&want, have));
        match options.policy {
            PullPolicy::Missing if fits => return self.get_image(reference),
            PullPolicy::Missing => {}
            PullPolicy::Never => {
                return match cached {
                    None => Err(MicrosandboxError::not_found(&r.familiar())),
                    Some(_) if fits => self.get_image(reference),
                    Some(have) => Err(MicrosandboxError::new(
                        ErrorKind::PlatformNotFound,
                        format!(
                            "{} is cached for {}, not {} (and the policy is never)",
                            r.familiar(),
                            have.as_ref().map_or("an unknown platform".to_owned(), |p| {
                                platform::Display(p).to_string()
                            }),
                            platform::Display(&want)
                        ),
                    )),
                };
            }
            PullPolicy::Always => {}
        }
        let layout = self.layout()?;
        let sinks = options
            .materialize
            .then(|| crate::vm::layer::sinks(layout.clone()));
        transfer::pull(&layout, &r, options, sinks)
    }

    /// Writes the images `references` name into one archive at `path`.
    /// Blocking.
    pub fn save_images(
        &self,
        references: &[String],
        path: &Path,
        options: &SaveOptions,
    ) -> MicrosandboxResult<()> {
        for r in references {
            check_target_text(r)?;
        }
        let Some(layout) = self.existing()? else {
            let first = references.first().ok_or_else(|| {
                MicrosandboxError::invalid_argument("save needs at least one reference")
            })?;
            return Err(not_found(first));
        };
        // Digest prefixes become the names they stand for.
        let named = {
            let _shared = layout.lock::<Shared>()?;
            let catalog = self.inner.catalog.current(&layout)?;
            let mut named = Vec::with_capacity(references.len());
            for input in references {
                let target = catalog.target(input)?;
                named.push(match &target {
                    Target::Name(r) => r.canonical(),
                    Target::Manifest(_) => catalog
                        .entries_of(&target)
                        .first()
                        .map(|e| e.reference.canonical())
                        .ok_or_else(|| not_found(input))?,
                });
            }
            named
        };
        transfer::save(&layout, &named, path, options)
    }

    /// Pins the manifest a reference names and marks the image used. Blocking.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ImageNotFound`]; [`ErrorKind::InvalidArgument`] for a
    /// bad id, an expiry of zero, or an id that an unexpired lease on
    /// another manifest holds.
    pub fn acquire_lease(
        &self,
        reference: &str,
        options: &LeaseOptions,
    ) -> MicrosandboxResult<ImageLease> {
        let mut lease = self.take_lease(reference, options)?;
        if options.materialize {
            // The lease pins the manifest (and so its disk) before the disk
            // is made: no prune can take it between the two. A disk that
            // cannot be made ends the lease.
            let made = lease.manifest_digest.as_deref().map_or_else(
                || Err(not_found(reference)),
                |digest| self.materialize(digest, &MaterializeOptions::default()),
            );
            match made {
                Ok(disk) => lease.disk = Some(disk),
                Err(e) => {
                    let _ = self.release_lease(&lease.id);
                    return Err(e);
                }
            }
        }
        Ok(lease)
    }

    fn take_lease(
        &self,
        reference: &str,
        options: &LeaseOptions,
    ) -> MicrosandboxResult<ImageLease> {
        let id = match &options.id {
            Some(id) => id.clone(),
            None => format!("lease-{}", crate::store::fs::random_hex(8)),
        };
        lease::check_id(&id)?;
        if options.kind == Some(LeaseKind::Ingest) {
            return Err(MicrosandboxError::invalid_argument(
                "ingest leases are the cache's own (loads and pulls in flight); \
                 ask for a sandbox or a snapshot lease",
            ));
        }
        check_target_text(reference)?;
        let expires_at = match options.expires_in {
            None => None,
            Some(d) if d.is_zero() => {
                return Err(MicrosandboxError::invalid_argument(
                    "a lease that expires in 0 seconds would be over before it starts; \
                     give a positive expiry, or none for a lease that lasts until released",
                ))
            }
            Some(d) => Some(time::add(time::now(), d).ok_or_else(|| {
                MicrosandboxError::invalid_argument(format!(
                    "expiry of {} s is past the year 9999",
                    d.as_secs()
                ))
            })?),
        };
        let Some(layout) = self.existing()? else {
            return Err(not_found(reference));
        };
        let guard = layout.lock::<Exclusive>()?;
        // The lease pins what `get` answers with: the newest spelling (or
        // the manifest a digest prefix names).
        let mut txn = IndexTxn::begin(&layout, &guard)?;
        let r = match target_by_name(&txn.index, reference) {
            Some(Target::Name(r)) => r,
            _ => {
                let catalog = self.inner.catalog.current(&layout)?;
                let target = catalog.target(reference)?;
                match &target {
                    Target::Name(r) => r.clone(),
                    Target::Manifest(_) => catalog
                        .entries_of(&target)
                        .first()
                        .map(|e| e.reference.clone())
                        .ok_or_else(|| not_found(reference))?,
                }
            }
        };
        let Some(chosen) = index::resolve(&txn.index, &r) else {
            return Err(not_found(reference));
        };
        let positions = index::spellings(&txn.index, &r);
        let digest = txn.index.manifests[chosen].digest.clone();
        let now = time::now();
        let existing = lease::read(&layout, &id)?;
        if let Some(existing) = &existing {
            if !existing.is_expired(now) && existing.manifest_digest.as_ref() != Some(&digest) {
                return Err(MicrosandboxError::invalid_argument(format!(
                    "lease {id} already pins another image"
                )));
            }
        }
        let record = LeaseRecord {
            id,
            kind: options.kind.unwrap_or(LeaseKind::Sandbox),
            reference: Some(r.canonical()),
            manifest_digest: Some(digest.clone()),
            blobs: Vec::new(),
            created_at: time::format(now),
            expires_at: expires_at.map(time::format),
        };
        lease::write(&layout, &record)?;
        let stamp = time::format(now);
        for &i in &positions {
            if txn.index.manifests[i].digest == digest {
                txn.index.manifests[i]
                    .annotations
                    .insert(ANN_LAST_USED.into(), stamp.clone());
            }
        }
        let pinned = txn.index.manifests[chosen].clone();
        index::ensure_pin_record(&mut txn.index, &pinned);
        if let Err(e) = txn.commit() {
            // Without its lastUsedAt stamp the call failed: put the lease
            // files back as they were.
            let _ = match &existing {
                Some(previous) => lease::write(&layout, previous),
                None => lease::remove(&layout, &record.id).map(drop),
            };
            return Err(e);
        }
        Ok(lease_view(&record))
    }

    /// Ends a lease; false when there was none of that id. Blocking.
    ///
    /// The lease file goes first, then, when no other live lease pins the
    /// manifest, its pin record in `index.json` (a crash in between leaves
    /// a record that the next prune drops).
    pub fn release_lease(&self, id: &str) -> MicrosandboxResult<bool> {
        lease::check_id(id)?;
        let Some(layout) = self.existing()? else {
            return Ok(false);
        };
        let guard = layout.lock::<Exclusive>()?;
        if !lease::remove(&layout, id)? {
            return Ok(false);
        }
        let mut txn = IndexTxn::begin(&layout, &guard)?;
        let pins = Pins::of(&lease::scan(&layout)?.0, time::now());
        if index::drop_pin_records(&mut txn.index, &pins.manifests) {
            txn.commit()?;
        }
        Ok(true)
    }

    /// The unexpired leases, oldest first. Blocking. Lease files that cannot
    /// be read are left out (`verify` reports them).
    pub fn list_leases(&self) -> MicrosandboxResult<Vec<ImageLease>> {
        let Some(layout) = self.existing()? else {
            return Ok(Vec::new());
        };
        let now = time::now();
        Ok(lease::scan(&layout)?
            .0
            .iter()
            .filter(|l| !l.is_expired(now))
            .map(lease_view)
            .collect())
    }
}

/// Sets `disk_ready` on each handle whose manifest has a VMDK (one
/// listing of `cache/vm/vmdk/`, however many handles).
fn mark_disks(layout: &Layout, handles: &mut [ImageHandle]) -> MicrosandboxResult<()> {
    let dir = ArtifactKind::Vmdk.dir(layout);
    if handles.is_empty() || !dir.exists() {
        return Ok(());
    }
    let digest = |h: &ImageHandle| h.manifest_digest.parse::<crate::oci::digest::Digest>().ok();
    // One handle (get, inspect) asks for its own file; a list reads the
    // directory once.
    if let [h] = handles {
        h.disk_ready = match digest(h) {
            Some(d) => artifact::stat(layout, ArtifactKind::Vmdk, &d)?
                .is_some_and(|s| crate::store::fs::kind(&s) == rustix::fs::FileType::RegularFile),
            None => false,
        };
        return Ok(());
    }
    let made: std::collections::HashSet<crate::oci::digest::Digest> = dir
        .entries()?
        .into_iter()
        .filter_map(|e| ArtifactKind::Vmdk.key_of(&e.name))
        .collect();
    for h in handles {
        h.disk_ready = digest(h).is_some_and(|d| made.contains(&d));
    }
    Ok(())
}

/// The size of a layer's VM image, if it has one.
fn erofs_size(layout: &Layout, diff_id: &str) -> Option<i64> {
    let key = diff_id.parse::<crate::oci::digest::Digest>().ok()?;
    let stat = artifact::stat(layout, ArtifactKind::Layer, &key).ok()??;
    (crate::store::fs::kind(&stat) == rustix::fs::FileType::RegularFile).then_some(stat.st_size)
}

/// A declared size as the API gives sizes; past `i64` it is an error.
fn size_i64(size: u64, digest: &crate::oci::digest::Digest) -> MicrosandboxResult<i64> {
    i64::try_from(size).map_err(|_| {
        MicrosandboxError::corrupt(format!("blob {digest} declares {size} bytes, past 2^63"))
    })
}

/// `ImageNotFound` for what the caller typed, in its familiar form when it
/// is a reference.
fn not_found(input: &str) -> MicrosandboxError {
    match Reference::parse(input) {
        Ok(r) => MicrosandboxError::not_found(&r.familiar()),
        Err(_) => MicrosandboxError::not_found(input),
    }
}

/// The platform a cached entry is for: its descriptor's, else what its
/// config says.
fn entry_platform(e: &Entry) -> Option<Platform> {
    e.descriptor.platform.clone().or_else(|| {
        Some(Platform {
            os: e.handle.os()?.to_owned(),
            architecture: e.handle.architecture()?.to_owned(),
            ..Platform::default()
        })
    })
}

fn lease_view(l: &LeaseRecord) -> ImageLease {
    ImageLease {
        id: l.id.clone(),
        kind: l.kind,
        reference: l
            .reference
            .as_deref()
            .and_then(|r| Reference::parse(r).ok())
            .map(|r| r.familiar()),
        manifest_digest: l.manifest_digest.as_ref().map(|d| d.to_string()),
        created_at: time::utc(l.created()),
        expires_at: l.expires().map(time::utc),
        disk: None,
    }
}

/// The config and layers of an entry, read from its blobs.
fn inspect_entry(layout: &Layout, entry: &Entry) -> MicrosandboxResult<ImageDetail> {
    let content::ImageParts {
        config,
        cfg,
        layers,
        ..
    } = content::image_parts(layout, &entry.descriptor)?;
    let diff_ids = cfg.rootfs().diff_ids();
    let layers = layers
        .iter()
        .zip(diff_ids)
        .enumerate()
        .map(|(i, (l, diff_id))| {
            Ok(ImageLayerDetail {
                diff_id: diff_id.clone(),
                blob_digest: l.digest.to_string(),
                media_type: Some(l.media_type.clone()),
                compressed_size_bytes: Some(size_i64(l.size, &l.digest)?),
                erofs_size_bytes: erofs_size(layout, diff_id),
                position: i32::try_from(i).unwrap_or(i32::MAX),
            })
        })
        .collect::<MicrosandboxResult<Vec<_>>>()?;
    let config = cfg.config().as_ref().map(|c| ImageConfigDetail {
        digest: config.digest.to_string(),
        env: c.env().clone().unwrap_or_default(),
        cmd: c.cmd().clone(),
        entrypoint: c.entrypoint().clone(),
        working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
        labels: c
            .labels()
            .as_ref()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::json!(l)),
        stop_signal: c.stop_signal().clone().filter(|s| !s.is_empty()),
        exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
        volumes: c.volumes().clone().unwrap_or_default(),
    });
    let history = cfg
        .history()
        .iter()
        .flatten()
        .map(|h| ImageHistory {
            created: h.created().as_deref().and_then(time::parse_utc),
            created_by: h.created_by().clone(),
            author: h.author().clone(),
            comment: h.comment().clone(),
            empty_layer: h.empty_layer().unwrap_or(false),
        })
        .collect();
    Ok(ImageDetail {
        handle: entry.handle.clone(),
        config,
        layers,
        created: cfg.created().as_deref().and_then(time::parse_utc),
        author: cfg.author().clone(),
        history,
    })
}
