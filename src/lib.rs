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
