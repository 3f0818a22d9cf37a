//! JS shapes of the core's values: the `ImageHandle` and `ImageLease`
//! classes and the plain camelCase objects. Absent values are `null`,
//! times are `Date`, sizes are `number`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use microsandbox as core;
use napi::bindgen_prelude::AsyncTask;
use napi_derive::napi;

use crate::task::CoreTask;

mod disk;
mod handle;
mod handles;
mod lease;
mod progress;
mod reports;

pub use disk::*;
pub use handle::*;
pub use handles::*;
pub use lease::*;
pub use progress::*;
pub use reports::*;

fn num(n: u64) -> f64 {
    n as f64
}

fn inum(n: i64) -> f64 {
    n as f64
}

macro_rules! error_code_enum {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The stable `code` of every error this package rejects or throws with.
        #[napi(string_enum)]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
        }
    };
}

// One variant per core `ErrorKind`, from the core's own list.
microsandbox::with_error_kinds!(error_code_enum);
