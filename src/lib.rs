//! Node bindings of the `microsandbox` image cache: argument and result
//! conversion, error codes and the JS classes. No cache logic lives here;
//! every method runs one operation of the `microsandbox` crate.

#![deny(clippy::all)]

mod args;
mod backend;
mod image;
mod ops;
mod push;
mod serve;
mod task;
mod types;

/// Large blocks go back to the kernel when freed (a list or disk usage on a
/// big cache leaves no resident heap behind).
#[global_allocator]
static ALLOCATOR: microsandbox::alloc::LargeInPages = microsandbox::alloc::LargeInPages;
