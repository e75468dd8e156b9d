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
/// A connection's read buffer, at most (hyper's default is ~400 KB): headers beyond it get 431, so a
/// thousand connections cannot make the box hold hundreds of megabytes of headers.
const READ_BUFFER: usize = 64 * 1024;
/// LAN connections open at once, at most (also bounded by the file descriptors the process may
/// open, less [`FDS_KEPT`]). Beyond it a new connection is closed at once: a flood of idle
/// connections can delay the page, never starve the call log, voicemail files or audio devices of
/// descriptors.
const MAX_CONNECTIONS: usize = 1024;
/// Descriptors kept for everything but LAN connections.
const FDS_KEPT: usize = 256;

/// Who is on the other end of a request's connection: an address on the LAN, or the tunnel.
/// Login attempts are limited per peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer(pub String);

/// A request's whole body must arrive within this time of its headers: a body trickled in a byte
/// at a time cannot hold a connection (and a place among [`MAX_CONNECTIONS`]) for long.
const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Adds the limits every route shares.
pub fn finish(router: Router) -> Router {
    router.layer(DefaultBodyLimit::max(BODY_LIMIT)).layer(axum::middleware::from_fn(whole_body_in_time))
}

/// Whether reading a body failed because it is over [`BODY_LIMIT`].
fn over_the_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        // http-body-util's LengthLimitError, known by its message (it is not a dependency of ours).
        if c.to_string() == "length limit exceeded" {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Reads a request's body whole, within [`BODY_DEADLINE`] and [`BODY_LIMIT`], before any route
/// sees it. A late body gets 408 and the connection is closed; an oversized one 413.
async fn whole_body_in_time(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let refuse = |status: StatusCode, message: String| {
        debug!("{path}: {message}");
        (status, [(header::CONNECTION, "close")], format!("{message}\n")).into_response()
    };
    let bytes = match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if over_the_limit(&e) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over the length limit ({BODY_LIMIT} bytes)"),
            );
        }
        Ok(Err(e)) => return refuse(StatusCode::BAD_REQUEST, format!("the request body could not be read: {e}")),
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} s of its headers", BODY_DEADLINE.as_secs()),
            )
        }
    };
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// Serves HTTP (with WebSocket upgrades) on any byte stream: LAN TCP connections and the tunnel's
/// connections go through the same stack. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    builder: Arc<Builder<TokioExecutor>>,
    router: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// How long a connection may take to finish its request in progress once `shutdown` fires.
    grace: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// Connections are tracked by `tracker`; on `shutdown` each finishes its request in progress
    /// (at most `grace`) and closes.
    pub fn new(router: Router, shutdown: CancellationToken, tracker: TaskTracker, grace: Duration) -> Self {
        let mut builder = Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(READ_BUFFER);
        Self { builder: Arc::new(builder), router, shutdown, tracker, grace }
    }

    /// Serves one connection on a task of its own.
    pub fn serve_io<I>(&self, io: I, peer: String)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_holding(io, peer, ());
    }

    /// Serves one connection, holding `slot` until it closes.
    fn serve_holding<I, S>(&self, io: I, peer: String, slot: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Send + 'static,
    {
        let (builder, shutdown, grace) = (self.builder.clone(), self.shutdown.clone(), self.grace);
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
            let _slot = slot;
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(grace, connection).await {
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

/// Raises the soft limit on open files to the hard one (systemd's default soft limit is 1,024) and
/// returns how many LAN connections may be open at once.
fn connection_slots() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return MAX_CONNECTIONS / 4;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(FDS_KEPT).clamp(16, MAX_CONNECTIONS)
}

/// Accepts LAN connections on `listener` until shutdown.
pub async fn serve(listener: TcpListener, server: Server) {
    static FULL: crate::telemetry::Throttle = crate::telemetry::Throttle::new(Duration::from_secs(10));
    let slots = Arc::new(tokio::sync::Semaphore::new(connection_slots()));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(n) = FULL.check() {
                warn!(%peer, "too many connections open: closed a new one ({n} more since the last such line)");
            }
            continue;
        };
        server.serve_holding(stream, peer.ip().to_string(), slot);
    }
}
