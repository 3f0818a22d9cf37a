//! The `LocalBackend` class: a cache home for the `*Local` methods.

use std::time::Duration;

use microsandbox as core;
use napi::bindgen_prelude::Unknown;
use napi::Env;
use napi_derive::napi;

use crate::args;
use crate::task::js_error;

/// A cache home. `new LocalBackend({ home })`; `home` defaults to
/// `MSB_HOME`, else `~/.microsandbox`, read when the backend is made.
#[napi]
pub struct LocalBackend {
    pub(crate) inner: core::LocalBackend,
}

#[napi]
impl LocalBackend {
    /// Options: `home` (a directory; made absolute), `lockTimeoutMs` (how
    /// long an operation waits for the cache lock before `Busy`; 30000).
    #[napi(
        constructor,
        ts_args_type = "options?: { home?: string; lockTimeoutMs?: number }"
    )]
    pub fn new(env: Env, options: Unknown) -> napi::Result<Self> {
        let build = || {
            let opts = args::options(Some(options), "options")?;
            let mut builder = core::LocalBackend::builder();
            if let Some(home) = args::opt_string(&opts, "home")? {
                builder = builder.home(home);
            }
            if let Some(ms) = args::opt_number(&opts, "lockTimeoutMs")? {
                builder = builder.lock_timeout(Duration::from_millis(ms as u64));
            }
            builder.build_blocking()
        };
        build()
            .map(|inner| LocalBackend { inner })
            .map_err(|e| js_error(&env, e.code(), e.message()))
    }

    /// The absolute home directory.
    #[napi(getter)]
    pub fn home(&self) -> String {
        self.inner.home().display().to_string()
    }
}
