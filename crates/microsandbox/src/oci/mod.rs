//! The OCI side of things, with no knowledge of the cache: references,
//! digests, platforms, and the descriptor, index and manifest models.

pub mod annotations;
pub mod digest;
pub mod listed;
pub mod model;
pub mod platform;
pub mod reference;
pub mod word;
