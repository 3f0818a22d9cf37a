//! What planning a load or a pull yields: [`Planned`] references and the
//! [`PlannedImage`] each names (manifest, config, layers and diff_ids read
//! and checked, waiting for the layers), shared by the planners of every
//! source format, by the commit, and the bounds one source must keep.

use std::collections::HashSet;
use std::sync::Arc;

use super::source::Source;
use crate::error::MicrosandboxResult;
use crate::oci::digest::Digest;
use crate::oci::model::{Descriptor, Platform};
use crate::oci::reference::Reference;

/// The most references one source may name.
pub(super) const MAX_REFERENCES: usize = 100_000;
/// The most layers one source's distinct images may list in all.
pub(super) const MAX_LAYER_NAMES: usize = 100_000;

/// One reference of the source and the image it names.
#[derive(Clone)]
pub(super) struct Planned {
    pub(super) reference: Reference,
    pub(super) image: Arc<PlannedImage>,
}

impl std::ops::Deref for Planned {
    type Target = PlannedImage;

    fn deref(&self) -> &PlannedImage {
        &self.image
    }
}

/// One image of the source, read and checked, waiting for its layers;
/// shared by every reference that names it.
pub(super) struct PlannedImage {
    pub(super) manifest: Descriptor,
    pub(super) manifest_bytes: Arc<[u8]>,
    pub(super) config: Descriptor,
    pub(super) config_bytes: Arc<[u8]>,
    pub(super) layers: Vec<Descriptor>,
    /// The config's `rootfs.diff_ids`, one per layer.
    pub(super) diff_ids: Vec<Digest>,
    /// The digest the source named: the manifest's, or its index's.
    pub(super) top: Digest,
    pub(super) platform: Platform,
    /// The config's `created`, as it says it.
    pub(super) created: Option<String>,
}

impl PlannedImage {
    pub(super) fn size(&self) -> u64 {
        self.layers.iter().fold(
            self.manifest.size.saturating_add(self.config.size),
            |a, l| a.saturating_add(l.size),
        )
    }

    pub(super) fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest.digest, &self.config.digest]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

/// Each distinct image of a plan once, whatever the number of its names.
pub(super) fn distinct(planned: &[Planned]) -> impl Iterator<Item = &Planned> {
    let mut seen: HashSet<&Digest> = HashSet::new();
    planned
        .iter()
        .filter(move |p| seen.insert(&p.manifest.digest))
}

/// A config's `diff_ids`, each a valid digest.
pub(super) fn parse_diff_ids(
    source: &Source,
    diff_ids: &[String],
    what: &str,
) -> MicrosandboxResult<Vec<Digest>> {
    diff_ids
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|e| source.invalid(format!("{what}: diff_id: {e}")))
        })
        .collect()
}
