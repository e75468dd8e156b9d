//! The box's HTTP listener: the server loop (header timeout, body limit, graceful shutdown), shared
//! by the LAN listener and the tunnel's connections. Each request carries its peer ([`Peer`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// A client must send a request's headers within this time (also closes idle keep-alive connections).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Twilio's webhooks are small forms; nothing the box accepts is larger.
const BODY_LIMIT: usize = 64 * 1024;

/// Who is on the other end of a request's connection: an address on the LAN, or the tunnel.
/// Login attempts are limited per peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer(pub String);

/// Adds the limits every route shares.
pub fn finish(router: Router) -> Router {
    router.layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Serves HTTP (with WebSocket upgrades) on any byte stream: LAN TCP connections and the tunnel's
/// connections go through the same stack. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    builder: Arc<Builder<TokioExecutor>>,
    router: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// Connections are tracked by `tracker`; on `shutdown` each finishes its request in progress
    /// (at most [`crate::app::SHUTDOWN_DEADLINE`]) and closes.
    pub fn new(router: Router, shutdown: CancellationToken, tracker: TaskTracker) -> Self {
        let mut builder = Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
        Self { builder: Arc::new(builder), router, shutdown, tracker }
    }

    /// Serves one connection on a task of its own.
    pub fn serve_io<I>(&self, io: I, peer: String)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (builder, shutdown) = (self.builder.clone(), self.shutdown.clone());
        let tagged = Peer(peer.clone());
        let router = self.router.clone();
        let service = TowerToHyperService::new(
            tower::ServiceBuilder::new()
                .map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(tagged.clone());
                    request
                })
                .service(router),
        );
        self.tracker.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(crate::app::SHUTDOWN_DEADLINE, connection).await {
                        Ok(result) => result,
                        Err(_) => {
                            warn!(%peer, "connection still busy at the shutdown deadline: closed");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// Accepts LAN connections on `listener` until shutdown.
pub async fn serve(listener: TcpListener, server: Server) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = server.shutdown.cancelled() => break,
        };
        // Media frames are small writes every 20 ms: Nagle's algorithm would hold them back.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, "cannot set TCP_NODELAY: {e}");
        }
        server.serve_io(stream, peer.ip().to_string());
    }
}
