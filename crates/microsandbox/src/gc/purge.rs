//! Purge: everything goes (brood-box's `cache purge`, the nuclear option),
//! leaving an empty, valid OCI layout that skopeo and umoci still open.
//!
//! Under the exclusive lock: a live lease stops it (`ImageInUse`, naming
//! the holders) unless `force`, which ends every lease first; then every
//! reference (entries this cache cannot parse included), every blob, the
//! files of dead writers in `tmp/`, the quarantine and every derived file
//! go, through the one prune that knows how to take them. A transfer
//! running meanwhile keeps its locked temporaries and fails at its commit.

use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::gc::census::CensusCache;
use crate::gc::policy::PruneOptions;
use crate::gc::prune_locked;
use crate::gc::verify::QUARANTINE;
use crate::store::catalog::CatalogCache;
use crate::store::fs::allocated;
use crate::store::index::IndexTxn;
use crate::store::layout::Layout;
use crate::store::lease;
use crate::store::lock::Exclusive;
use crate::util::time;
use crate::values::ImagePruneReport;

/// How to purge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeOptions {
    /// End every lease first instead of refusing while one is live.
    pub force: bool,
}

/// Removes everything the cache holds.
///
/// # Errors
///
/// [`ErrorKind::ImageInUse`] naming the holders while a lease is live and
/// `force` is not set; `Busy`; `Io`.
pub fn purge(
    layout: &Layout,
    census: &CensusCache,
    catalog: &CatalogCache,
    options: &PurgeOptions,
) -> MicrosandboxResult<ImagePruneReport> {
    let exclusive = layout.lock::<Exclusive>()?;
    let now = time::now();
    let (leases, bad) = lease::scan(layout)?;
    let live: Vec<String> = leases
        .iter()
        .filter(|l| !l.is_expired(now))
        .map(|l| format!("{} {}", l.kind.as_str(), l.id))
        .collect();
    if !options.force && (!live.is_empty() || bad.iter().any(|b| b.blocking)) {
        let mut holders = live;
        holders.extend(
            bad.iter()
                .filter(|b| b.blocking)
                .map(|b| format!("unreadable {}", b.name)),
        );
        return Err(MicrosandboxError::new(
            ErrorKind::ImageInUse,
            format!(
                "the cache is in use: {} (purge --force ends the leases first)",
                holders.join(", ")
            ),
        ));
    }
    let mut ended = 0u32;
    if options.force {
        let dir = layout.leases_dir();
        for entry in dir.entries()? {
            if entry.name.ends_with(".json")
                && !entry.name.starts_with('.')
                && dir.remove(&entry.name)?
            {
                ended += 1;
            }
        }
        dir.sync()?;
    }
    // What this cache cannot parse goes too: purge leaves nothing named.
    let mut txn = IndexTxn::begin(layout, &exclusive)?;
    let foreign = txn.index.manifests.unreadable.len();
    if foreign > 0 {
        txn.index.manifests.unreadable.clear();
        txn.commit()?;
    }
    let mut report = prune_locked(
        layout,
        &exclusive,
        census,
        catalog,
        &PruneOptions::default(),
    )?;
    report.image_refs_removed = report
        .image_refs_removed
        .saturating_add(u32::try_from(foreign).unwrap_or(u32::MAX));
    report.expired_leases_removed = report.expired_leases_removed.saturating_add(ended);
    // The quarantine, if verify --repair made one.
    if let Some(aside) = layout.cache_dir().open_dir(QUARANTINE, None)? {
        for entry in aside.entries()? {
            let stat = aside.stat(&entry.name)?;
            if aside.remove(&entry.name)? {
                report.reclaim(stat.map_or(0, |s| allocated(&s)));
            }
        }
        aside.sync()?;
    }
    Ok(report)
}
