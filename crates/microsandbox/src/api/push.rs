//! Pushing a cached image to a registry: [`LocalBackend::push_image`].
//! The reference is resolved as every other call resolves it (any
//! equivalent form, or a digest prefix), under the shared cache lock the
//! push pins its content under; the upload runs without it.

use crate::api::backend::LocalBackend;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::store::catalog::check_target_text;
use crate::store::lock::Shared;
use crate::transfer::{PushOptions, PushReport};

impl LocalBackend {
    /// Pushes the image a reference names to `options.to` (its own
    /// reference if unset). Blocking.
    ///
    /// # Errors
    ///
    /// `ImageNotFound` when the cache lacks the reference, and what
    /// [`crate::transfer::push`] gives; the cache is unchanged in every case.
    pub fn push_image(
        &self,
        reference: &str,
        options: &PushOptions,
    ) -> MicrosandboxResult<PushReport> {
        check_target_text(reference)?;
        let missing = || MicrosandboxError::not_found(reference);
        let Some(layout) = self.existing_layout()? else {
            return Err(missing());
        };
        let guard = layout.lock::<Shared>()?;
        let catalog = self.catalog_cache().current(&layout)?;
        let target = catalog.target(reference)?;
        let found = catalog.entries_of(&target);
        let entry = found.first().ok_or_else(missing)?;
        crate::transfer::push(&layout, &entry.reference, &entry.descriptor, guard, options)
    }
}
