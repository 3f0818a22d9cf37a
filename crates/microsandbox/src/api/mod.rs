//! The public API: a cache home ([`backend::LocalBackend`]) with its
//! blocking operations, the async [`image::Image`] calls, and the read-only
//! calls a registry serves from (`serving.rs`). The values they hand out
//! are in `values.rs`, below every folder that builds them.

pub mod backend;
pub mod image;
mod push;
pub mod serving;
