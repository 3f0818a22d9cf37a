//! The cache on disk: the home's directories (opened once, never through a
//! link), the lock, the one blob writer and the one index writer, the
//! parsed index, reading content, and leases.

pub mod blob;
pub mod catalog;
pub mod content;
pub mod diffid;
pub mod fs;
pub mod index;
pub mod layout;
pub mod lease;
pub mod lock;
pub mod partial;
