//! The server's life: checked settings, a bound socket, a runtime of its
//! own, connections accepted until [`Server::stop`], and a graceful stop
//! that lets every request in flight finish.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use microsandbox::{ErrorKind, LocalBackend, MicrosandboxError, MicrosandboxResult};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::app;
use crate::auth::{Auth, Token};
use crate::limits::{
    check_connections, check_pulls, Pulls, WriteDeadline, CONN_BUFFER, DEFAULT_CONNECTIONS,
    DEFAULT_PULLS, HEADER_TIMEOUT, WRITE_TIMEOUT,
};
use crate::listen::{bind, Bound, Listen, SocketName};
use crate::log::LogSink;
use crate::paths::Allowed;
use crate::state::App;

/// How long a stop waits for requests in flight (and pulls their clients
/// left) before it lets go.
const DRAIN: Duration = Duration::from_secs(600);

/// What to serve and how.
#[derive(Clone)]
pub struct Config {
    /// The cache.
    pub backend: LocalBackend,
    /// Where to listen; `$MSB_HOME/serve.sock` if unset.
    pub listen: Option<Listen>,
    /// The API token: required on TCP, optional on a unix socket.
    pub token: Option<Token>,
    /// Serve `/v2/` without a token (the management endpoints never).
    pub public_registry: bool,
    /// Pulls at once, from 1 to [`crate::MAX_PULLS`]; more are answered `503
    /// Busy`. Four unless set.
    pub max_concurrent_pulls: usize,
    /// Where the request log goes (one JSON line per request); none if unset.
    pub log: Option<LogSink>,
    /// Connections served at once, from 1 to [`crate::MAX_CONNECTIONS`]
    /// ([`crate::DEFAULT_CONNECTIONS`] unless set). The next ones wait in
    /// the listen backlog, unaccepted, until one ends: they cost the server
    /// nothing meanwhile.
    pub max_connections: usize,
    /// How long a write to a client may make no progress before the
    /// connection is closed ([`crate::WRITE_TIMEOUT`] unless set).
    pub write_timeout: Duration,
    /// The directories whose files a client may name to `load` and `save`
    /// (absolute paths of existing directories, opened once at start).
    /// None unless set: every request naming a host path is refused.
    pub allow_paths: Vec<PathBuf>,
}

impl Config {
    /// A unix socket in the backend's home, no token, four pulls at once,
    /// 1024 connections, no log, no host paths.
    pub fn new(backend: LocalBackend) -> Config {
        Config {
            backend,
            listen: None,
            token: None,
            public_registry: false,
            max_concurrent_pulls: DEFAULT_PULLS,
            log: None,
            max_connections: DEFAULT_CONNECTIONS,
            write_timeout: WRITE_TIMEOUT,
            allow_paths: Vec::new(),
        }
    }
}

/// A running server.
pub struct Server {
    address: String,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<watch::Sender<bool>>,
    done: Option<oneshot::Receiver<()>>,
    socket: Option<SocketName>,
}

impl Server {
    /// Checks the settings, binds, and starts serving on a runtime of the
    /// server's own. Blocking (briefly); call it outside an async context.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] for TCP without a token, a count out
    /// of range, or an allowed path that is not an absolute path of a
    /// directory; `Io` when the address cannot be bound.
    pub fn start(config: Config) -> MicrosandboxResult<Server> {
        let listen = match config.listen.clone() {
            Some(l) => l,
            None => {
                config.backend.ensure_home()?;
                Listen::default_for(config.backend.home())
            }
        };
        if matches!(listen, Listen::Tcp(_)) && config.token.is_none() {
            return Err(MicrosandboxError::new(
                ErrorKind::InvalidArgument,
                "listening on TCP needs an API token (--token-file, MSB_API_TOKEN or \
                 MINIBOX_API_TOKEN); without one, listen on a unix socket",
            ));
        }
        check_pulls(config.max_concurrent_pulls).map_err(|why| {
            MicrosandboxError::new(ErrorKind::InvalidArgument, format!("pulls at once {why}"))
        })?;
        check_connections(config.max_connections).map_err(|why| {
            MicrosandboxError::new(
                ErrorKind::InvalidArgument,
                format!("connections at once {why}"),
            )
        })?;
        if config.write_timeout.is_zero() {
            return Err(MicrosandboxError::new(
                ErrorKind::InvalidArgument,
                "the write timeout must be longer than zero",
            ));
        }
        let paths = Allowed::open(&config.allow_paths)?;
        let bound = bind(&listen)?;
        let address = bound.address();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
            .thread_name("msb-serve")
            .enable_all()
            .build()
            .map_err(|e| MicrosandboxError::new(ErrorKind::Io, format!("start the server: {e}")))?;
        let app = Arc::new(App {
            backend: config.backend,
            auth: Auth {
                token: config.token,
                public_registry: config.public_registry,
            },
            pulls: Pulls::new(config.max_concurrent_pulls),
            log: config.log,
            paths,
        });
        let limits = ConnLimits {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            write_timeout: config.write_timeout,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = oneshot::channel();
        let socket = {
            let _entered = runtime.enter();
            let (listener, socket) = Listener::from_bound(bound)?;
            runtime.spawn(async move {
                accept(listener, app, limits, stop_rx).await;
                let _ = done_tx.send(());
            });
            socket
        };
        Ok(Server {
            address,
            runtime: Some(runtime),
            stop: Some(stop_tx),
            done: Some(done_rx),
            socket,
        })
    }

    /// Where it listens: `unix:PATH` or `IP:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Stops accepting, lets every request in flight finish (a pull goes
    /// on to its commit), removes the socket, and returns. Blocking; call
    /// it outside an async context.
    pub fn stop(mut self) {
        self.shutdown(true);
    }

    fn shutdown(&mut self, wait: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(runtime) = self.runtime.take() {
            if wait {
                if let Some(done) = self.done.take() {
                    let _ = runtime.block_on(async { tokio::time::timeout(DRAIN, done).await });
                }
                runtime.shutdown_timeout(DRAIN);
            } else {
                runtime.shutdown_background();
            }
        }
        if let Some(socket) = self.socket.take() {
            socket.remove();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown(false);
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    fn from_bound(bound: Bound) -> MicrosandboxResult<(Listener, Option<SocketName>)> {
        let io = |e: std::io::Error| MicrosandboxError::new(ErrorKind::Io, format!("listen: {e}"));
        match bound {
            Bound::Tcp(l) => {
                l.set_nonblocking(true).map_err(io)?;
                Ok((
                    Listener::Tcp(tokio::net::TcpListener::from_std(l).map_err(io)?),
                    None,
                ))
            }
            Bound::Unix(l, name) => {
                l.set_nonblocking(true).map_err(io)?;
                Ok((
                    Listener::Unix(tokio::net::UnixListener::from_std(l).map_err(io)?),
                    Some(name),
                ))
            }
        }
    }
}

/// What bounds the connections.
struct ConnLimits {
    /// One permit per connection served.
    slots: Arc<Semaphore>,
    write_timeout: Duration,
}

async fn accept(
    listener: Listener,
    app: Arc<App>,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // What hyper buffers of an answer before it stops asking the body
        // for more: with a blob read one chunk at a time as it is asked
        // for, a connection whose client reads nothing pins about this
        // and one chunk (distribution.rs).
        .max_buf_size(CONN_BUFFER)
        .keep_alive(true);
    loop {
        // A place first, then a connection: past the limit, clients wait
        // in the kernel's listen backlog, unaccepted, until one ends (a
        // stalled one ends at the write timeout, an idle one at the header
        // timeout). Answering them `503` instead would mean accepting and
        // reading each, which is the cost the limit is there to refuse.
        let slot = tokio::select! {
            _ = stop.changed() => break,
            s = limits.slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = next(&listener) => a,
        };
        let timeout = limits.write_timeout;
        match accepted {
            Ok(Conn::Tcp(s, peer)) => {
                let _ = s.set_nodelay(true);
                let io = WriteDeadline::new(s, timeout);
                spawn_conn(&builder, &graceful, io, peer.into(), app.clone(), slot);
            }
            Ok(Conn::Unix(s)) => {
                let io = WriteDeadline::new(s, timeout);
                spawn_conn(&builder, &graceful, io, "unix".into(), app.clone(), slot);
            }
            // Out of descriptors, say: wait a little rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

enum Conn {
    Tcp(tokio::net::TcpStream, String),
    Unix(tokio::net::UnixStream),
}

async fn next(listener: &Listener) -> std::io::Result<Conn> {
    match listener {
        Listener::Tcp(l) => l
            .accept()
            .await
            .map(|(s, peer)| Conn::Tcp(s, peer.to_string())),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
    }
}

fn spawn_conn<I>(
    builder: &http1::Builder,
    graceful: &GracefulShutdown,
    io: I,
    peer: Arc<str>,
    app: Arc<App>,
    slot: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| app::handle(app.clone(), peer.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let watched = graceful.watch(conn);
    tokio::spawn(async move {
        let _ = watched.await;
        drop(slot);
    });
}
