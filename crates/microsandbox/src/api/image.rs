//! The public async API: `Image::get`, `list`, `inspect`, `remove`,
//! `prune`, `load`, and leases, on the default home or on a
//! [`LocalBackend`].
//!
//! Each call runs the blocking operation of [`LocalBackend`] on tokio's
//! blocking pool, so no runtime worker ever waits on a disk or a lock.
//! The calls without `_local` use the default home: `$MSB_HOME`, else
//! `~/.microsandbox`, read at call time.

use std::path::{Path, PathBuf};

use crate::api::backend::{default_backend, LeaseOptions, LocalBackend};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::gc::policy::PruneOptions;
use crate::transfer::registry::PullOptions;
use crate::transfer::{LoadOptions, PushOptions, PushReport, SaveOptions};
use crate::values::{DiskUsage, ImageDetail, ImageHandle, ImageLease, ImagePruneReport};

/// The image cache's operations.
pub struct Image;

async fn run<T, F>(backend: LocalBackend, op: F) -> MicrosandboxResult<T>
where
    T: Send + 'static,
    F: FnOnce(&LocalBackend) -> MicrosandboxResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || op(&backend))
        .await
        .map_err(|e| {
            MicrosandboxError::new(crate::ErrorKind::Io, format!("cache task failed: {e}"))
        })?
}

async fn ambient() -> MicrosandboxResult<LocalBackend> {
    default_backend()
}

impl Image {
    /// The handle of a cached reference (any equivalent form).
    ///
    /// # Errors
    ///
    /// `InvalidReference`, `ImageNotFound`, `Busy`, `CorruptCache`, `Io`.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn f() -> microsandbox::MicrosandboxResult<()> {
    /// let image = microsandbox::Image::get("python:3.12").await?;
    /// println!("{} {:?}", image.reference(), image.size_bytes());
    /// # Ok(()) }
    /// ```
    pub async fn get(reference: &str) -> MicrosandboxResult<ImageHandle> {
        Self::get_local(&ambient().await?, reference).await
    }

    /// [`Image::get`] on `backend`.
    pub async fn get_local(
        backend: &LocalBackend,
        reference: &str,
    ) -> MicrosandboxResult<ImageHandle> {
        let reference = reference.to_owned();
        run(backend.clone(), move |b| b.get_image(&reference)).await
    }

    /// Every cached reference, newest first. Reads `index.json` only.
    pub async fn list() -> MicrosandboxResult<Vec<ImageHandle>> {
        Self::list_local(&ambient().await?).await
    }

    /// [`Image::list`] on `backend`.
    pub async fn list_local(backend: &LocalBackend) -> MicrosandboxResult<Vec<ImageHandle>> {
        run(backend.clone(), |b| b.list_images()).await
    }

    /// The handle, config and layers of a cached reference.
    ///
    /// # Errors
    ///
    /// As [`Image::get`].
    pub async fn inspect(reference: &str) -> MicrosandboxResult<ImageDetail> {
        Self::inspect_local(&ambient().await?, reference).await
    }

    /// [`Image::inspect`] on `backend`.
    pub async fn inspect_local(
        backend: &LocalBackend,
        reference: &str,
    ) -> MicrosandboxResult<ImageDetail> {
        let reference = reference.to_owned();
        run(backend.clone(), move |b| b.inspect_image(&reference)).await
    }

    /// Removes a reference. Without `force`, fails `ImageInUse` when a lease
    /// pins the image; with it, the reference goes and the content stays
    /// until the lease ends. Space comes back with [`Image::prune`].
    pub async fn remove(reference: &str, force: bool) -> MicrosandboxResult<()> {
        Self::remove_local(&ambient().await?, reference, force).await
    }

    /// [`Image::remove`] on `backend`.
    pub async fn remove_local(
        backend: &LocalBackend,
        reference: &str,
        force: bool,
    ) -> MicrosandboxResult<()> {
        let reference = reference.to_owned();
        run(backend.clone(), move |b| b.remove_image(&reference, force)).await
    }

    /// Removes every reference no lease pins, then every blob nothing kept
    /// needs, stale temporaries and expired leases.
    pub async fn prune() -> MicrosandboxResult<ImagePruneReport> {
        Self::prune_local(&ambient().await?).await
    }

    /// [`Image::prune`] on `backend`.
    pub async fn prune_local(backend: &LocalBackend) -> MicrosandboxResult<ImagePruneReport> {
        run(backend.clone(), |b| b.prune_images()).await
    }

    /// A prune with a policy (`dangling`, `unused_for`, `max_bytes`), or
    /// the dry run of one (`dry_run`): see [`PruneOptions`].
    pub async fn prune_with(options: PruneOptions) -> MicrosandboxResult<ImagePruneReport> {
        Self::prune_with_local(&ambient().await?, options).await
    }

    /// [`Image::prune_with`] on `backend`.
    pub async fn prune_with_local(
        backend: &LocalBackend,
        options: PruneOptions,
    ) -> MicrosandboxResult<ImagePruneReport> {
        run(backend.clone(), move |b| b.prune_images_with(&options)).await
    }

    /// Re-hashes every blob and checks every invariant of the cache; with
    /// `repair`, moves corrupt blobs aside and removes the references that
    /// can no longer be served (never a whole one).
    pub async fn verify(options: crate::VerifyOptions) -> MicrosandboxResult<crate::VerifyReport> {
        Self::verify_local(&ambient().await?, options).await
    }

    /// [`Image::verify`] on `backend`.
    pub async fn verify_local(
        backend: &LocalBackend,
        options: crate::VerifyOptions,
    ) -> MicrosandboxResult<crate::VerifyReport> {
        run(backend.clone(), move |b| b.verify(&options)).await
    }

    /// The blobs no reference and no lease reaches, largest first: what a
    /// dangling prune (`image gc`) takes.
    pub async fn orphans() -> MicrosandboxResult<Vec<crate::OrphanBlob>> {
        Self::orphans_local(&ambient().await?).await
    }

    /// [`Image::orphans`] on `backend`.
    pub async fn orphans_local(
        backend: &LocalBackend,
    ) -> MicrosandboxResult<Vec<crate::OrphanBlob>> {
        run(backend.clone(), |b| b.orphans()).await
    }

    /// Makes whatever the image's VM disk lacks (a layer image per layer,
    /// shared by every image that has the layer; the merged fsmeta; the
    /// VMDK) and returns the disk. Artifacts already made are checked and
    /// handed out at once.
    pub async fn materialize(
        reference: &str,
        options: crate::MaterializeOptions,
    ) -> MicrosandboxResult<crate::ImageDisk> {
        Self::materialize_local(&ambient().await?, reference, options).await
    }

    /// [`Image::materialize`] on `backend`.
    pub async fn materialize_local(
        backend: &LocalBackend,
        reference: &str,
        options: crate::MaterializeOptions,
    ) -> MicrosandboxResult<crate::ImageDisk> {
        let reference = reference.to_owned();
        run(backend.clone(), move |b| {
            b.materialize(&reference, &options)
        })
        .await
    }

    /// Removes every reference, blob, temporary and derived file, leaving an
    /// empty, valid layout. While a lease is live it fails `ImageInUse`
    /// naming the holders; `force` ends the leases first.
    pub async fn purge(options: crate::PurgeOptions) -> MicrosandboxResult<ImagePruneReport> {
        Self::purge_local(&ambient().await?, options).await
    }

    /// [`Image::purge`] on `backend`.
    pub async fn purge_local(
        backend: &LocalBackend,
        options: crate::PurgeOptions,
    ) -> MicrosandboxResult<ImagePruneReport> {
        run(backend.clone(), move |b| b.purge(&options)).await
    }

    /// What the cache takes on disk, each blob counted once, with each
    /// reference's shared and unique bytes.
    pub async fn disk_usage() -> MicrosandboxResult<DiskUsage> {
        Self::disk_usage_local(&ambient().await?).await
    }

    /// [`Image::disk_usage`] on `backend`.
    pub async fn disk_usage_local(backend: &LocalBackend) -> MicrosandboxResult<DiskUsage> {
        run(backend.clone(), |b| b.disk_usage()).await
    }

    /// Loads every named image of an OCI image layout directory, an OCI
    /// archive (plain or gzip) or a docker-archive, verifying every blob;
    /// returns the handles it added.
    ///
    /// # Errors
    ///
    /// `InvalidArchive`, `DigestMismatch`, `PlatformNotFound`,
    /// `InvalidReference`; the cache is unchanged on any error.
    pub async fn load(path: impl AsRef<Path>) -> MicrosandboxResult<Vec<ImageHandle>> {
        Self::load_local(&ambient().await?, path, LoadOptions::default()).await
    }

    /// [`Image::load`] on `backend`, with options.
    pub async fn load_local(
        backend: &LocalBackend,
        path: impl AsRef<Path>,
        options: LoadOptions,
    ) -> MicrosandboxResult<Vec<ImageHandle>> {
        let path: PathBuf = path.as_ref().to_owned();
        run(backend.clone(), move |b| b.load_images(&path, &options)).await
    }

    /// Writes the images `references` name into one archive at `path`: an
    /// OCI archive, or a docker-archive with [`crate::SaveFormat::Docker`].
    /// Deterministic; written to a temporary file and renamed into place.
    pub async fn save(
        references: &[&str],
        path: impl AsRef<Path>,
        options: SaveOptions,
    ) -> MicrosandboxResult<()> {
        Self::save_local(&ambient().await?, references, path, options).await
    }

    /// [`Image::save`] on `backend`.
    pub async fn save_local(
        backend: &LocalBackend,
        references: &[&str],
        path: impl AsRef<Path>,
        options: SaveOptions,
    ) -> MicrosandboxResult<()> {
        let references: Vec<String> = references.iter().map(|r| (*r).to_owned()).collect();
        let path: PathBuf = path.as_ref().to_owned();
        run(backend.clone(), move |b| {
            b.save_images(&references, &path, &options)
        })
        .await
    }

    /// Pulls an image from its registry, as `options.policy` says.
    pub async fn pull(reference: &str, options: PullOptions) -> MicrosandboxResult<ImageHandle> {
        Self::pull_local(&ambient().await?, reference, options).await
    }

    /// [`Image::pull`] on `backend`.
    pub async fn pull_local(
        backend: &LocalBackend,
        reference: &str,
        options: PullOptions,
    ) -> MicrosandboxResult<ImageHandle> {
        let reference = reference.to_owned();
        run(backend.clone(), move |b| b.pull_image(&reference, &options)).await
    }

    /// Pushes a cached image to a registry: to `options.to`, else to its
    /// own reference. Blobs the registry has are skipped, blobs of another
    /// repository of the same registry mounted, the rest uploaded six at a
    /// time (in resumable chunks when large), then the manifest (and for an
    /// index, its manifests, then the index). The cache is never changed.
    ///
    /// # Errors
    ///
    /// `ImageNotFound`, `InvalidReference`, `Unauthorized`, `Unsupported`
    /// (a registry that takes no pushes), `DigestMismatch`,
    /// `RegistryError`, `CorruptCache`.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn f() -> microsandbox::MicrosandboxResult<()> {
    /// use microsandbox::{Image, PushOptions};
    /// let report = Image::push(
    ///     "python:3.12",
    ///     PushOptions {
    ///         to: Some("registry.example.com/base/python:3.12".into()),
    ///         ..Default::default()
    ///     },
    /// )
    /// .await?;
    /// println!("{} {}", report.reference, report.manifest_digest);
    /// # Ok(()) }
    /// ```
    pub async fn push(reference: &str, options: PushOptions) -> MicrosandboxResult<PushReport> {
        Self::push_local(&ambient().await?, reference, options).await
    }

    /// [`Image::push`] on `backend`.
    pub async fn push_local(
        backend: &LocalBackend,
        reference: &str,
        options: PushOptions,
    ) -> MicrosandboxResult<PushReport> {
        let reference = reference.to_owned();
        run(backend.clone(), move |b| b.push_image(&reference, &options)).await
    }

    /// Pins the image a reference names and marks it used.
    pub async fn acquire(reference: &str, options: LeaseOptions) -> MicrosandboxResult<ImageLease> {
        Self::acquire_local(&ambient().await?, reference, options).await
    }

    /// [`Image::acquire`] on `backend`.
    pub async fn acquire_local(
        backend: &LocalBackend,
        reference: &str,
        options: LeaseOptions,
    ) -> MicrosandboxResult<ImageLease> {
        let reference = reference.to_owned();
        run(backend.clone(), move |b| {
            b.acquire_lease(&reference, &options)
        })
        .await
    }

    /// Ends a lease; false when there was none of that id.
    pub async fn release(id: &str) -> MicrosandboxResult<bool> {
        Self::release_local(&ambient().await?, id).await
    }

    /// [`Image::release`] on `backend`.
    pub async fn release_local(backend: &LocalBackend, id: &str) -> MicrosandboxResult<bool> {
        let id = id.to_owned();
        run(backend.clone(), move |b| b.release_lease(&id)).await
    }

    /// The unexpired leases, oldest first.
    pub async fn leases() -> MicrosandboxResult<Vec<ImageLease>> {
        Self::leases_local(&ambient().await?).await
    }

    /// [`Image::leases`] on `backend`.
    pub async fn leases_local(backend: &LocalBackend) -> MicrosandboxResult<Vec<ImageLease>> {
        run(backend.clone(), |b| b.list_leases()).await
    }
}
