//! The `Image` class: static async methods on the default home, and
//! `*Local` twins that take a `LocalBackend` first. Each one checks its
//! arguments, then runs one blocking core operation as a [`CoreTask`].

use napi::bindgen_prelude::{AsyncTask, Unknown};
use napi_derive::napi;

use crate::ops::*;
use crate::task::CoreTask;
use crate::types::{
    DiskUsage, Handles, ImageDetail, ImageDisk, ImageHandle, ImageLease, ImagePruneReport,
    OrphanBlob, VerifyReport,
};

/// The image cache. Every method is static and async; the plain ones use
/// the default home (`MSB_HOME` at call time, else `~/.microsandbox`), the
/// `*Local` ones the `LocalBackend` given first. Rejections are `Error`s
/// with a stable `code` (see `ErrorCode`).
#[napi]
pub struct Image {}

#[napi]
impl Image {
    /// The handle of a cached reference (any equivalent form: `python`,
    /// `python:latest`, `docker.io/library/python:latest`).
    /// Rejects `ImageNotFound`, `InvalidReference`.
    #[napi(
        ts_args_type = "reference: string",
        ts_return_type = "Promise<ImageHandle>"
    )]
    pub fn get(reference: Unknown) -> AsyncTask<CoreTask<ImageHandle>> {
        get_with(ambient(), reference)
    }

    /// `Image.get` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, reference: string",
        ts_return_type = "Promise<ImageHandle>"
    )]
    pub fn get_local(backend: Unknown, reference: Unknown) -> AsyncTask<CoreTask<ImageHandle>> {
        get_with(local(backend), reference)
    }

    /// Every cached reference, newest first. Reads `index.json` only.
    #[napi(ts_return_type = "Promise<Array<ImageHandle>>")]
    pub fn list() -> AsyncTask<CoreTask<Handles>> {
        list_with(ambient())
    }

    /// `Image.list` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend",
        ts_return_type = "Promise<Array<ImageHandle>>"
    )]
    pub fn list_local(backend: Unknown) -> AsyncTask<CoreTask<Handles>> {
        list_with(local(backend))
    }

    /// The handle, config and layers of a cached reference.
    #[napi(
        ts_args_type = "reference: string",
        ts_return_type = "Promise<ImageDetail>"
    )]
    pub fn inspect(reference: Unknown) -> AsyncTask<CoreTask<ImageDetail>> {
        inspect_with(ambient(), reference)
    }

    /// `Image.inspect` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, reference: string",
        ts_return_type = "Promise<ImageDetail>"
    )]
    pub fn inspect_local(backend: Unknown, reference: Unknown) -> AsyncTask<CoreTask<ImageDetail>> {
        inspect_with(local(backend), reference)
    }

    /// Removes a reference. Without `force`, rejects `ImageInUse` (naming
    /// the holders) while a lease pins the image and no other reference
    /// keeps it; with `force` the reference goes and the content stays
    /// until the lease ends. Disk space comes back with `Image.prune()`.
    #[napi(
        ts_args_type = "reference: string, options?: { force?: boolean }",
        ts_return_type = "Promise<void>"
    )]
    pub fn remove(reference: Unknown, options: Unknown) -> AsyncTask<CoreTask<()>> {
        remove_with(ambient(), reference, options)
    }

    /// `Image.remove` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, reference: string, options?: { force?: boolean }",
        ts_return_type = "Promise<void>"
    )]
    pub fn remove_local(
        backend: Unknown,
        reference: Unknown,
        options: Unknown,
    ) -> AsyncTask<CoreTask<()>> {
        remove_with(local(backend), reference, options)
    }

    /// With no options: removes every reference no lease pins, then every
    /// blob nothing kept needs, stale temporary files and expired leases.
    /// `dangling: true` keeps every reference and takes only content
    /// nothing needs. `unusedFor` (seconds, or `'36h'`, `'7d'`) takes only
    /// references unused for that long. `maxBytes` (bytes, or `'20GB'`,
    /// `'512MiB'`) evicts unpinned references least recently used first
    /// until the blobs fit; `overBudgetBytes` says how far leases keep it
    /// above. `vmOnly: true` takes only VM artifacts (of images no lease
    /// pins; with `unusedFor` or `maxBytes`, by that policy) and keeps every
    /// reference and blob. `dryRun: true` returns the same report and
    /// deletes nothing.
    /// Leased images survive every policy. Sizes are allocated bytes.
    #[napi(
        ts_args_type = "options?: { dryRun?: boolean; dangling?: boolean; unusedFor?: number | string; maxBytes?: number | string; vmOnly?: boolean }",
        ts_return_type = "Promise<ImagePruneReport>"
    )]
    pub fn prune(options: Unknown) -> AsyncTask<CoreTask<ImagePruneReport>> {
        prune_with(ambient(), options)
    }

    /// `Image.prune` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, options?: { dryRun?: boolean; dangling?: boolean; unusedFor?: number | string; maxBytes?: number | string; vmOnly?: boolean }",
        ts_return_type = "Promise<ImagePruneReport>"
    )]
    pub fn prune_local(
        backend: Unknown,
        options: Unknown,
    ) -> AsyncTask<CoreTask<ImagePruneReport>> {
        prune_with(local(backend), options)
    }

    /// Re-hashes every blob and checks every invariant of the cache:
    /// `corruptBlobs`, `missingBlobs`, `danglingReferences`,
    /// `strayTmpFiles`, `badLeases`; `clean` when all are empty. With
    /// `repair: true`, corrupt blobs move to `cache/quarantine/` and the
    /// references that can no longer be served leave the index (listed in
    /// `quarantined` and `removedReferences`); a whole reference is never
    /// touched.
    #[napi(
        ts_args_type = "options?: { repair?: boolean }",
        ts_return_type = "Promise<VerifyReport>"
    )]
    pub fn verify(options: Unknown) -> AsyncTask<CoreTask<VerifyReport>> {
        verify_with(ambient(), options)
    }

    /// `Image.verify` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, options?: { repair?: boolean }",
        ts_return_type = "Promise<VerifyReport>"
    )]
    pub fn verify_local(backend: Unknown, options: Unknown) -> AsyncTask<CoreTask<VerifyReport>> {
        verify_with(local(backend), options)
    }

    /// The blobs no reference and no lease reaches, largest first, each with
    /// its kind, size and time: what a dangling prune takes.
    #[napi(ts_return_type = "Promise<Array<OrphanBlob>>")]
    pub fn orphans() -> AsyncTask<CoreTask<Vec<OrphanBlob>>> {
        orphans_with(ambient())
    }

    /// `Image.orphans` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend",
        ts_return_type = "Promise<Array<OrphanBlob>>"
    )]
    pub fn orphans_local(backend: Unknown) -> AsyncTask<CoreTask<Vec<OrphanBlob>>> {
        orphans_with(local(backend))
    }

    /// Removes every reference, blob, temporary and derived file, leaving an
    /// empty, valid layout. While a lease is live it rejects `ImageInUse`
    /// naming the holders; `force: true` ends the leases first.
    #[napi(
        ts_args_type = "options?: { force?: boolean }",
        ts_return_type = "Promise<ImagePruneReport>"
    )]
    pub fn purge(options: Unknown) -> AsyncTask<CoreTask<ImagePruneReport>> {
        purge_with(ambient(), options)
    }

    /// `Image.purge` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, options?: { force?: boolean }",
        ts_return_type = "Promise<ImagePruneReport>"
    )]
    pub fn purge_local(
        backend: Unknown,
        options: Unknown,
    ) -> AsyncTask<CoreTask<ImagePruneReport>> {
        purge_with(local(backend), options)
    }

    /// Makes whatever the image's VM disk lacks (an EROFS image per layer,
    /// made once for every image that shares the layer; the merged
    /// fsmeta; the VMDK descriptor) and resolves with the disk. A disk
    /// already made is checked and returned at once. Rejects
    /// `ImageNotFound`, `InvalidArchive` (a layer EROFS cannot hold, named),
    /// `DigestMismatch`, `Unsupported` (a compression this version cannot
    /// read), `CorruptCache`, `Busy`.
    #[napi(
        ts_args_type = "reference: string, options?: { maxLayerBytes?: number; onProgress?: (event: ProgressEvent) => void; onPullProgress?: (event: PullProgress) => void }",
        ts_return_type = "Promise<ImageDisk>"
    )]
    pub fn materialize(reference: Unknown, options: Unknown) -> AsyncTask<CoreTask<ImageDisk>> {
        materialize_with(ambient(), reference, options)
    }

    /// `Image.materialize` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, reference: string, options?: { maxLayerBytes?: number; onProgress?: (event: ProgressEvent) => void; onPullProgress?: (event: PullProgress) => void }",
        ts_return_type = "Promise<ImageDisk>"
    )]
    pub fn materialize_local(
        backend: Unknown,
        reference: Unknown,
        options: Unknown,
    ) -> AsyncTask<CoreTask<ImageDisk>> {
        materialize_with(local(backend), reference, options)
    }

    /// What the cache takes on disk, each blob counted once (allocated
    /// bytes, as `du` counts): totals, what `prune()` would free now, and
    /// per reference its size, shared and unique bytes.
    #[napi(ts_return_type = "Promise<DiskUsage>")]
    pub fn disk_usage() -> AsyncTask<CoreTask<DiskUsage>> {
        disk_usage_with(ambient())
    }

    /// `Image.diskUsage` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend",
        ts_return_type = "Promise<DiskUsage>"
    )]
    pub fn disk_usage_local(backend: Unknown) -> AsyncTask<CoreTask<DiskUsage>> {
        disk_usage_with(local(backend))
    }

    /// Loads every named image of an OCI image layout directory (as
    /// `skopeo copy ... oci:DIR:TAG` or umoci write it), an OCI archive (a
    /// tar of one, plain or gzip) or a docker-archive (as `docker save`
    /// writes it), told apart by content. Every blob is verified. Indexes
    /// resolve to the host platform, or `platform` (`linux/arm64`);
    /// `reference` names the image of a single-image source; `onProgress`
    /// receives `{ phase, digest, bytes, totalBytes }` events (`read` of an
    /// archive, `write` of each blob, `verify` of each gzip layer, `commit`) without ever blocking the
    /// load: the events arrive on the JS thread as it is free.
    /// Rejects `InvalidArchive`, `DigestMismatch`, `PlatformNotFound`; the
    /// cache is unchanged on any error.
    #[napi(
        ts_args_type = "path: string, options?: { platform?: string; reference?: string; tag?: string; maxLayerBytes?: number; materialize?: boolean; onProgress?: (event: ProgressEvent) => void }",
        ts_return_type = "Promise<Array<ImageHandle>>"
    )]
    pub fn load(path: Unknown, options: Unknown) -> AsyncTask<CoreTask<Handles>> {
        load_with(ambient(), path, options)
    }

    /// `Image.load` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, path: string, options?: { platform?: string; reference?: string; tag?: string; maxLayerBytes?: number; materialize?: boolean; onProgress?: (event: ProgressEvent) => void }",
        ts_return_type = "Promise<Array<ImageHandle>>"
    )]
    pub fn load_local(
        backend: Unknown,
        path: Unknown,
        options: Unknown,
    ) -> AsyncTask<CoreTask<Handles>> {
        load_with(local(backend), path, options)
    }

    /// Writes the images `references` name into one archive at `path`:
    /// an OCI archive (`format: 'oci'`, the default) whose index names each
    /// reference, or a docker-archive (`'docker'`) that `docker load`
    /// accepts. The same images give byte-identical archives. The archive
    /// is written beside `path` and renamed into place, so a failed save
    /// leaves nothing half-written there. `'minibox'` writes MiniBox's
    /// archive of one image (`meta.json` and `blobs/sha256/...`). A file
    /// already at `path` is replaced only with `overwrite: true` (else
    /// `InvalidArgument`, the file untouched); a link or anything but a
    /// regular file there never is.
    #[napi(
        ts_args_type = "references: string | Array<string>, path: string | { outputPath: string; format?: 'docker' | 'oci' | 'minibox'; overwrite?: boolean }, options?: { format?: 'docker' | 'oci' | 'minibox'; overwrite?: boolean }",
        ts_return_type = "Promise<void>"
    )]
    pub fn save(references: Unknown, path: Unknown, options: Unknown) -> AsyncTask<CoreTask<()>> {
        save_with(ambient(), references, path, options)
    }

    /// `Image.save` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, references: string | Array<string>, path: string | { outputPath: string; format?: 'docker' | 'oci' | 'minibox'; overwrite?: boolean }, options?: { format?: 'docker' | 'oci' | 'minibox'; overwrite?: boolean }",
        ts_return_type = "Promise<void>"
    )]
    pub fn save_local(
        backend: Unknown,
        references: Unknown,
        path: Unknown,
        options: Unknown,
    ) -> AsyncTask<CoreTask<()>> {
        save_with(local(backend), references, path, options)
    }

    /// Pulls an image from its registry (Docker Hub for `docker.io`).
    /// `policy`: `'missing'` (default: a cached reference is returned with
    /// no request), `'always'` (ask the registry; fetch only blobs not yet
    /// cached), `'never'` (`ImageNotFound` unless cached). Indexes resolve
    /// to the host or `platform`. Every blob is verified before it is
    /// committed. `insecure` speaks plain HTTP (loopback registries always
    /// do). Credentials come from the docker config (`dockerConfig`, a
    /// directory; else `DOCKER_CONFIG`, else `~/.docker`): `auths`,
    /// `credsStore`, `credHelpers`. `mirrors` maps registry hosts to
    /// pull-through caches tried in order before the origin (an entry
    /// replaces the one `$MSB_HOME/registries.json` has). Layers download
    /// six at a time; a blob another pull is fetching is waited for, not
    /// fetched twice; an interrupted pull resumes its partial blobs on the
    /// next try. Rejects `ImageNotFound`, `Unauthorized`, `RegistryError`,
    /// `DigestMismatch`, `PlatformNotFound`, `InvalidArgument` (a bad
    /// mirror or settings file).
    #[napi(
        ts_args_type = "reference: string, options?: { platform?: string; policy?: 'missing' | 'if-missing' | 'always' | 'never'; insecure?: boolean; dockerConfig?: string; mirrors?: Record<string, string[]>; maxLayerBytes?: number; materialize?: boolean; onProgress?: (event: ProgressEvent) => void; onPullProgress?: (event: PullProgress) => void }",
        ts_return_type = "Promise<ImageHandle>"
    )]
    pub fn pull(reference: Unknown, options: Unknown) -> AsyncTask<CoreTask<ImageHandle>> {
        pull_with(ambient(), reference, options)
    }

    /// `Image.pull` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, reference: string, options?: { platform?: string; policy?: 'missing' | 'if-missing' | 'always' | 'never'; insecure?: boolean; dockerConfig?: string; mirrors?: Record<string, string[]>; maxLayerBytes?: number; materialize?: boolean; onProgress?: (event: ProgressEvent) => void; onPullProgress?: (event: PullProgress) => void }",
        ts_return_type = "Promise<ImageHandle>"
    )]
    pub fn pull_local(
        backend: Unknown,
        reference: Unknown,
        options: Unknown,
    ) -> AsyncTask<CoreTask<ImageHandle>> {
        pull_with(local(backend), reference, options)
    }

    /// Pins the image a reference names (its manifest digest, not the
    /// name) and marks it used. `id` defaults to a random one; `kind` to
    /// `'sandbox'`; without `expiresInSeconds` it lasts until released.
    #[napi(
        ts_args_type = "reference: string, options?: { id?: string; kind?: 'sandbox' | 'snapshot'; expiresInSeconds?: number; materialize?: boolean }",
        ts_return_type = "Promise<ImageLease>"
    )]
    pub fn acquire(reference: Unknown, options: Unknown) -> AsyncTask<CoreTask<ImageLease>> {
        acquire_with(ambient(), reference, options)
    }

    /// `Image.acquire` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, reference: string, options?: { id?: string; kind?: 'sandbox' | 'snapshot'; expiresInSeconds?: number; materialize?: boolean }",
        ts_return_type = "Promise<ImageLease>"
    )]
    pub fn acquire_local(
        backend: Unknown,
        reference: Unknown,
        options: Unknown,
    ) -> AsyncTask<CoreTask<ImageLease>> {
        acquire_with(local(backend), reference, options)
    }

    /// Ends a lease; resolves false when there was none of that id.
    #[napi(ts_args_type = "id: string", ts_return_type = "Promise<boolean>")]
    pub fn release(id: Unknown) -> AsyncTask<CoreTask<bool>> {
        release_with(ambient(), id)
    }

    /// `Image.release` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, id: string",
        ts_return_type = "Promise<boolean>"
    )]
    pub fn release_local(backend: Unknown, id: Unknown) -> AsyncTask<CoreTask<bool>> {
        release_with(local(backend), id)
    }

    /// The unexpired leases, oldest first.
    #[napi(ts_return_type = "Promise<Array<ImageLease>>")]
    pub fn leases() -> AsyncTask<CoreTask<Vec<ImageLease>>> {
        leases_with(ambient())
    }

    /// `Image.leases` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend",
        ts_return_type = "Promise<Array<ImageLease>>"
    )]
    pub fn leases_local(backend: Unknown) -> AsyncTask<CoreTask<Vec<ImageLease>>> {
        leases_with(local(backend))
    }
}
