//! The server's life: checked settings, a bound socket, a runtime of its
//! own, connections accepted until [`Server::stop`], and a graceful stop
//! that lets every request in flight finish.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use microsandbox::{ErrorKind, LocalBackend, MicrosandboxError, MicrosandboxResult};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch};

use crate::app::{self, App};
use crate::auth::{Auth, Token};
use crate::limits::{check_pulls, Pulls, DEFAULT_PULLS, HEADER_TIMEOUT};
use crate::listen::{bind, Bound, Listen, SocketName};
use crate::log::LogSink;

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
}

impl Config {
    /// A unix socket in the backend's home, no token, four pulls at once,
    /// no log.
    pub fn new(backend: LocalBackend) -> Config {
        Config {
            backend,
            listen: None,
            token: None,
            public_registry: false,
            max_concurrent_pulls: DEFAULT_PULLS,
            log: None,
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
    /// [`ErrorKind::InvalidArgument`] for TCP without a token; `Io` when
    /// the address cannot be bound.
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
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = oneshot::channel();
        let socket = {
            let _entered = runtime.enter();
            let (listener, socket) = Listener::from_bound(bound)?;
            runtime.spawn(async move {
                accept(listener, app, stop_rx).await;
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

async fn accept(listener: Listener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = next(&listener) => a,
        };
        match accepted {
            Ok(Conn::Tcp(s, peer)) => {
                let _ = s.set_nodelay(true);
                spawn_conn(&builder, &graceful, s, peer.into(), app.clone());
            }
            Ok(Conn::Unix(s)) => spawn_conn(&builder, &graceful, s, "unix".into(), app.clone()),
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
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| app::handle(app.clone(), peer.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let watched = graceful.watch(conn);
    tokio::spawn(async move {
        let _ = watched.await;
    });
}
