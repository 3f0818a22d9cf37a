//! Images in and out: load, pull, save, and the VM disk.

use std::path::Path;

use super::{not_found, LocalBackend};
use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::model::Platform;
use crate::oci::platform;
use crate::oci::reference::Reference;
use crate::store::catalog::{check_target_text, Entry, Target};
use crate::store::lock::Shared;
use crate::transfer::registry::{PullOptions, PullPolicy};
use crate::transfer::{self, LoadOptions, SaveOptions};
use crate::values::ImageHandle;
use crate::vm::materialize::MaterializeOptions;

impl LocalBackend {
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
            let catalog = self.inner.views.catalog.current(&layout)?;
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
}

/// The platform a cached entry is for: its descriptor's, else what its
/// config says.
fn entry_platform(e: &Entry) -> Option<Platform> {
    e.descriptor.platform.clone().or_else(|| {
        Some(Platform {
            os: e.handle.os()?.into(),
            architecture: e.handle.architecture()?.into(),
            ..Platform::default()
        })
    })
}
