//! The public API: a cache home ([`backend::LocalBackend`]) with its
//! blocking operations, the async [`image::Image`] calls, and the values
//! they hand out, and the read-only calls a registry serves from
//! (`serving.rs`).

pub mod backend;
pub mod handle;
pub mod image;
mod push;
pub mod serving;
