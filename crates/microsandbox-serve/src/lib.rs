//! `microsandbox serve`: the image cache over HTTP.
//!
//! Three faces on one socket:
//!
//! - MiniBox's image endpoints, field for field (`GET /images`,
//!   `POST /images/pull|save|load|remove`, `POST /system/prune`,
//!   `GET /ping`): see [`minibox`](crate#minibox).
//! - `/v1/`: JSON for every `Image` call, errors as `{ code, message }`,
//!   documented by `openapi.yaml` (served at `/openapi.yaml`).
//! - `/v2/`: a read-only OCI Distribution API over what the cache keeps,
//!   so other hosts pull through this one as a registry mirror.
//!
//! ```no_run
//! use microsandbox::LocalBackend;
//! use microsandbox_serve::{Config, Listen, Server, Token};
//!
//! # fn main() -> microsandbox::MicrosandboxResult<()> {
//! let backend = LocalBackend::builder().home("/var/lib/msb").build_blocking()?;
//! let mut config = Config::new(backend);
//! config.listen = Some(Listen::parse("127.0.0.1:8080")?);
//! config.token = Some(Token::new("0123456789abcdef0123456789abcdef")?);
//! let server = Server::start(config)?;
//! println!("serving on {}", server.address());
//! // ... until SIGTERM ...
//! server.stop();
//! # Ok(()) }
//! ```
//!
//! Modules, one job each: `listen` (the socket), `auth` (the token),
//! `limits` (bounded bodies, time limits, pulls and connections at once),
//! `paths` (the host paths a client may name), `log` (a JSON
//! line per request), `reply` (bodies and the status of each error code),
//! `json` (the cache's values as JSON), `app` (one request, start to end),
//! `minibox`, `v1`, `distribution`, `openapi` (the endpoints), `server`
//! (the runtime, connections, graceful stop).

#![deny(missing_docs)]
// An early answer (`Err(Reply)`) is made at most once per request.
#![allow(clippy::result_large_err)]

mod app;
mod auth;
mod blob_body;
mod distribution;
mod json;
mod limits;
mod listen;
mod log;
mod minibox;
mod openapi;
mod paths;
mod reply;
mod server;
mod state;
mod v1;

pub use auth::{resolve as resolve_token, Token, MIN_TOKEN_LEN};
pub use limits::{
    check_connections, check_pulls, DEFAULT_CONNECTIONS, DEFAULT_PULLS, MAX_CONNECTIONS, MAX_PULLS,
    WRITE_TIMEOUT,
};
pub use listen::Listen;
pub use log::{stderr as log_to_stderr, LogSink};
pub use openapi::DOCUMENT as OPENAPI;
pub use server::{Config, Server};
