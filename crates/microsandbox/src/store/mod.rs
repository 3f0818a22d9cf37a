//! The cache on disk: the home's directories (opened once, never through a
//! link), the lock, the one blob writer, the one index writer and the one
//! writer of VM artifacts, the parsed index, reading content, and leases.

pub mod artifact;
pub mod blob;
pub mod blob_seal;
pub mod catalog;
pub mod content;
pub mod diffid;
pub mod fs;
pub mod index;
pub mod layout;
pub mod lease;
pub mod lock;
pub mod partial;
pub mod verified;
