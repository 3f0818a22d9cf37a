//! `serve()` and the `Server` class: the options checked and turned into
//! the server crate's `Config`; starting and stopping run off the JS
//! thread, as every other call does.

use std::sync::{Arc, Mutex};

use microsandbox as core;
use microsandbox_serve as http;
use napi::bindgen_prelude::{AsyncTask, Unknown};
use napi_derive::napi;

use crate::args;
use crate::task::CoreTask;

/// A running server: `address` (`unix:PATH` or `IP:PORT`) and `close()`.
/// It does not keep the Node process alive by itself.
#[napi]
pub struct Server {
    address: String,
    inner: Arc<Mutex<Option<http::Server>>>,
}

#[napi]
impl Server {
    /// Where it listens: `unix:PATH`, or `IP:PORT` with the port it got.
    #[napi(getter)]
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Stops accepting, lets the requests in flight finish (a pull goes on
    /// to its commit), removes its socket. Closing twice is a no-op.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close(&self) -> AsyncTask<CoreTask<()>> {
        let inner = self.inner.clone();
        AsyncTask::new(CoreTask::new(move || {
            let server = inner.lock().ok().and_then(|mut s| s.take());
            if let Some(server) = server {
                server.stop();
            }
            Ok(())
        }))
    }
}

fn config(options: Unknown) -> core::MicrosandboxResult<http::Config> {
    let opts = args::options(Some(options), "options")?;
    let mut builder = core::LocalBackend::builder();
    if let Some(home) = args::opt_string(&opts, "home")? {
        builder = builder.home(home);
    }
    let mut config = http::Config::new(builder.build_blocking()?);
    config.listen = args::opt_string(&opts, "listen")?
        .map(|l| http::Listen::parse(&l))
        .transpose()?;
    let token = args::opt_string(&opts, "token")?;
    let file = args::opt_string(&opts, "tokenFile")?;
    config.token = http::resolve_token(token.as_deref(), file.as_deref().map(AsRef::as_ref))?;
    config.public_registry = args::opt_bool(&opts, "publicRegistry")?.unwrap_or(false);
    if let Some(n) = args::opt_number(&opts, "maxConcurrentPulls")? {
        // The range is the server's rule (http::check_pulls).
        let whole = n >= 0.0 && n.fract() == 0.0 && n <= u32::MAX as f64;
        let why = if whole {
            http::check_pulls(n as usize).err()
        } else {
            Some(format!("must be a whole number, got {n}"))
        };
        if let Some(why) = why {
            return Err(core::MicrosandboxError::new(
                core::ErrorKind::InvalidArgument,
                format!("maxConcurrentPulls {why}"),
            ));
        }
        config.max_concurrent_pulls = n as usize;
    }
    if let Some(n) = args::opt_number(&opts, "maxConnections")? {
        // The range is the server's rule (http::check_connections).
        let whole = n >= 0.0 && n.fract() == 0.0 && n <= u32::MAX as f64;
        let why = if whole {
            http::check_connections(n as usize).err()
        } else {
            Some(format!("must be a whole number, got {n}"))
        };
        if let Some(why) = why {
            return Err(core::MicrosandboxError::new(
                core::ErrorKind::InvalidArgument,
                format!("maxConnections {why}"),
            ));
        }
        config.max_connections = n as usize;
    }
    if let Some(dirs) = args::opt_strings(&opts, "allowPaths")? {
        config.allow_paths = dirs.into_iter().map(Into::into).collect();
    }
    if args::opt_bool(&opts, "log")?.unwrap_or(false) {
        config.log = Some(http::log_to_stderr());
    }
    Ok(config)
}

/// Serves the cache over HTTP: MiniBox's image endpoints, `/v1/` JSON for
/// every `Image` call, and a read-only registry at `/v2/`. `listen`:
/// `unix:PATH` (default `$MSB_HOME/serve.sock`, mode 0600) or `HOST:PORT`
/// (needs a token). `token`, else `tokenFile`, else `MSB_API_TOKEN` or
/// `MINIBOX_API_TOKEN`. `publicRegistry` serves `/v2/` without the token.
/// `maxConcurrentPulls` (4). `maxConnections` (1024) connections are
/// served at once; the next wait unaccepted until one ends. `allowPaths`:
/// the directories whose files clients may name to load and save (none
/// unless given: every request naming a host path is refused). `log`
/// writes one JSON line per request to stderr. Rejects `InvalidArgument`
/// (TCP without a token, a bad option, an allowed path that is not an
/// absolute path of a directory), `Io` (the address cannot be bound).
#[napi(
    ts_args_type = "options?: { listen?: string; token?: string; tokenFile?: string; home?: string; publicRegistry?: boolean; maxConcurrentPulls?: number; maxConnections?: number; allowPaths?: string | Array<string>; log?: boolean }",
    ts_return_type = "Promise<Server>"
)]
// Called from JS only: #[napi] registers it, Rust never calls it.
#[allow(dead_code)]
pub fn serve(options: Unknown) -> AsyncTask<CoreTask<Server>> {
    let task = match config(options) {
        Ok(config) => CoreTask::new(move || {
            let server = http::Server::start(config)?;
            Ok(Server {
                address: server.address().to_owned(),
                inner: Arc::new(Mutex::new(Some(server))),
            })
        }),
        Err(e) => CoreTask::fail(e),
    };
    AsyncTask::new(task)
}
