//! What every route shares: the [`App`] (the cache, the token rule, the
//! pulls allowed at once, the log, the allowed paths) and running the
//! cache's blocking calls off the async threads.

use microsandbox::{ErrorKind, LocalBackend, MicrosandboxError, MicrosandboxResult};

use crate::auth::Auth;
use crate::limits::Pulls;
use crate::log::LogSink;

/// What every request shares.
pub struct App {
    /// The cache.
    pub backend: LocalBackend,
    /// The token rule.
    pub auth: Auth,
    /// The pulls allowed at once.
    pub pulls: Pulls,
    /// Where log lines go.
    pub log: Option<LogSink>,
    /// The directories a client's `load` and `save` paths may be in.
    pub paths: crate::paths::Allowed,
}

/// Runs `op` on tokio's blocking pool: the cache's calls block on disks
/// and locks.
pub async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> MicrosandboxResult<T> + Send + 'static,
) -> MicrosandboxResult<T> {
    tokio::task::spawn_blocking(op).await.unwrap_or_else(|e| {
        Err(MicrosandboxError::new(
            ErrorKind::Io,
            format!("internal error: the cache operation failed: {e}"),
        ))
    })
}
