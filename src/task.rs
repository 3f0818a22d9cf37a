//! Every async method is one [`CoreTask`]: the core's blocking operation
//! runs on libuv's thread pool, and its error becomes a JS `Error` whose
//! `code` is the core's stable code (`ImageNotFound`, ...).
//!
//! napi-rs futures reject with a `Status` code only; a task's `resolve`
//! runs on the JS thread with an `Env`, so it can build the error object
//! itself and hand it back as the rejection.

use microsandbox::MicrosandboxError;
use napi::bindgen_prelude::{FromNapiValue, ToNapiValue, TypeName, Unknown};
use napi::{Env, JsError, Task};

type Op<J> = Box<dyn FnOnce() -> Result<J, MicrosandboxError> + Send>;

/// A core operation waiting to run off the JS thread.
pub struct CoreTask<J> {
    op: Option<Op<J>>,
}

impl<J> CoreTask<J> {
    /// Wraps an operation.
    pub fn new(op: impl FnOnce() -> Result<J, MicrosandboxError> + Send + 'static) -> Self {
        CoreTask {
            op: Some(Box::new(op)),
        }
    }

    /// A task that fails at once with `err`: argument errors reject the
    /// promise like every other error instead of throwing synchronously.
    pub fn fail(err: MicrosandboxError) -> Self {
        Self::new(move || Err(err))
    }
}

impl<J: ToNapiValue + TypeName + Send + 'static> Task for CoreTask<J> {
    type Output = Result<J, MicrosandboxError>;
    type JsValue = J;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let op = self.op.take().expect("a task runs once");
        let started = std::time::Instant::now();
        // A panic must not take the Node process down with it.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)).unwrap_or_else(|_| {
                Err(MicrosandboxError::new(
                    microsandbox::ErrorKind::Io,
                    "internal error: the cache operation panicked",
                ))
            });
        microsandbox::alloc::after_operation(started.elapsed());
        Ok(result)
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<J> {
        output.map_err(|e| js_error(&env, e.code(), e.message()))
    }
}

/// A JS `Error` with `code` set, as a napi error that rejects or throws
/// that very object.
pub fn js_error(env: &Env, code: &str, message: &str) -> napi::Error {
    let error = napi::Error::new(code.to_owned(), message.to_owned());
    // SAFETY: `env` is the live environment of the JS thread we run on.
    let raw = unsafe { JsError::from(error).into_value(env.raw()) };
    match unsafe { Unknown::from_napi_value(env.raw(), raw) } {
        Ok(value) => napi::Error::from(value),
        Err(e) => e,
    }
}
