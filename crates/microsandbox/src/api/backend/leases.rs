//! Leases: pinning an image while a sandbox runs.

use std::time::Duration;

use super::{not_found, LocalBackend};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::oci::model::ANN_LAST_USED;
use crate::oci::reference::Reference;
use crate::store::catalog::{check_target_text, target_by_name, Target};
use crate::store::index::{self, IndexTxn};
use crate::store::lease::{self, LeaseKind, LeaseRecord, Pins};
use crate::store::lock::Exclusive;
use crate::util::time;
use crate::values::ImageLease;
use crate::vm::materialize::MaterializeOptions;

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
    /// Pins the manifest a reference names and marks the image used. Blocking.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ImageNotFound`](crate::ErrorKind::ImageNotFound); [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a
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
                let catalog = self.inner.views.catalog.current(&layout)?;
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
                    .insert(ANN_LAST_USED, &stamp);
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
