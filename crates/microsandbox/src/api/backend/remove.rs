//! Removing a reference.

use super::{not_found, LocalBackend};
use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::catalog::{check_target_text, target_by_name, Target};
use crate::store::index::{self, IndexTxn};
use crate::store::lease;
use crate::store::lock::Exclusive;
use crate::util::time;

impl LocalBackend {
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
            None => self
                .inner
                .views
                .catalog
                .current(&layout)?
                .target(reference)?,
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
}
