//! Tar stream reading, pushed in pieces of any size: ustar, GNU (long names
//! and link names, base-256 numbers, old sparse files) and PAX (local and
//! global headers, `SCHILY.xattr.*` and `LIBARCHIVE.xattr.*`, nanosecond
//! mtimes, sparse formats 0.0, 0.1 and 1.0).
//!
//! The parser hands each member to a [`Sink`] as an [`Entry`], then the
//! member's stored data bytes as they arrive (regular files only), then an
//! end mark. It keeps nothing of the data: memory is one header plus the
//! extension records of the member being read.
//!
//! From the bottom up: `entry` (what is handed out), `header` (a header
//! block's fields), `sparse` (sparse runs in every form), `pax` (extension
//! records), `parser` (the state machine over them all).

mod entry;
mod header;
mod parser;
mod pax;
mod sparse;

pub(crate) use entry::{Entry, Kind, Sink, MAX_SIZE};
pub(crate) use parser::Parser;
