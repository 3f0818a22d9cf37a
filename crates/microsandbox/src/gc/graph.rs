//! A root's graph: the blobs a manifest or index needs, each with what it
//! is. The census builds graphs; prune, disk usage and the VM artifacts
//! read them.

use std::sync::Arc;

use crate::oci::digest::Digest;

/// What a blob is, as far as the graph tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A manifest or an index.
    Manifest,
    /// An image config.
    Config,
    /// A layer.
    Layer,
}

/// The blobs one root needs, itself first.
pub type Graph = Arc<[(Digest, Kind)]>;
