//! The cache's upkeep: prune, orphans, purge, verify, disk usage.

use super::LocalBackend;
use crate::error::MicrosandboxResult;
use crate::gc;
use crate::gc::policy::PruneOptions;
use crate::values::{DiskUsage, ImagePruneReport};

impl LocalBackend {
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
        gc::prune(
            &layout,
            &self.inner.views.census,
            &self.inner.views.catalog,
            options,
        )
    }

    /// The blobs no reference and no lease reaches (what a dangling prune
    /// takes), largest first. Blocking.
    pub fn orphans(&self) -> MicrosandboxResult<Vec<crate::gc::orphans::OrphanBlob>> {
        match self.existing()? {
            Some(layout) => crate::gc::orphans::orphans(
                &layout,
                &self.inner.views.census,
                &self.inner.views.catalog,
            ),
            None => Ok(Vec::new()),
        }
    }

    /// Removes every reference, blob, temporary and derived file, leaving an
    /// empty, valid layout. Blocking.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ImageInUse`](crate::ErrorKind::ImageInUse) naming the holders while a lease is live,
    /// unless `options.force` ends the leases first.
    pub fn purge(
        &self,
        options: &crate::gc::purge::PurgeOptions,
    ) -> MicrosandboxResult<ImagePruneReport> {
        match self.existing()? {
            Some(layout) => crate::gc::purge::purge(
                &layout,
                &self.inner.views.census,
                &self.inner.views.catalog,
                options,
            ),
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
            Some(layout) => crate::gc::usage::disk_usage(
                &layout,
                &self.inner.views.census,
                &self.inner.views.catalog,
            ),
            None => Ok(Default::default()),
        }
    }
}
