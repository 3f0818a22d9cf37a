//! Node bindings of the `microsandbox` image cache: argument and result
//! conversion, error codes and the JS classes. No cache logic lives here;
//! every method runs one operation of the `microsandbox` crate.

#![deny(clippy::all)]

// Listing and inspecting a large cache build and drop many small strings;
// mimalloc serves them several times faster than glibc's malloc
// (bench/README.md, "Before and after (issue 24)").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod backend;
mod image;
mod ops;
mod push;
mod serve;
mod task;
mod types;
