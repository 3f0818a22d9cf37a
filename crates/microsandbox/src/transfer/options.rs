//! How to load: [`LoadOptions`], read by the planners and by the load.

use crate::oci::model::Platform;
use crate::oci::reference::Reference;
use crate::transfer::progress::ProgressFn;

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The platform to take from multi-platform indexes; the host's if unset.
    pub platform: Option<Platform>,
    /// The name to give the image of a single-image source, whatever (or
    /// whether) the source names it.
    pub reference: Option<Reference>,
    /// Where progress events go.
    pub progress: Option<ProgressFn>,
    /// The most bytes a gzip layer may decompress to (checked while its
    /// diff_id is computed); a larger one is refused as a decompression
    /// bomb. [`crate::DEFAULT_MAX_LAYER_BYTES`] if unset.
    pub max_layer_bytes: Option<u64>,
    /// Also make each loaded image's VM disk (see `Image::materialize`).
    pub materialize: bool,
}
