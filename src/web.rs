//! The box's HTTP listener: the server loop (header timeout, body limit, graceful shutdown) and the
//! routes that are not Twilio's: health and status for the LAN.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::call::registry::{CallSummary, Registry};
use crate::events::{DeviceState, StateBus};

/// A client must send a request's headers within this time (also closes idle keep-alive connections).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Twilio's webhooks are small forms; nothing the box accepts is larger.
const BODY_LIMIT: usize = 64 * 1024;

/// What the status routes read.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub state: StateBus,
    pub started: Instant,
    pub registry: Arc<Registry>,
    /// The speech model's state, when the assistant answers calls.
    pub speech: Option<crate::speech::stt::Stt>,
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    state: DeviceState,
    name: String,
    version: &'static str,
    uptime_seconds: u64,
    /// `loading`, `ready`, `failed` or `off`.
    speech: &'static str,
    calls: Vec<CallSummary>,
}

pub fn router(status: Status) -> Router {
    Router::new().route("/healthz", get(healthz)).with_state(status)
}

/// Adds the limits every route shares.
pub fn finish(router: Router) -> Router {
    router.layer(DefaultBodyLimit::max(BODY_LIMIT))
}

async fn healthz(State(status): State<Status>) -> Json<Health> {
    Json(Health {
        status: "ok",
        state: status.state.current(),
        name: status.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: status.started.elapsed().as_secs(),
        speech: match status.speech.as_ref().map(crate::speech::stt::Stt::state) {
            None => "off",
            Some(crate::speech::stt::ModelState::Loading) => "loading",
            Some(crate::speech::stt::ModelState::Ready) => "ready",
            Some(crate::speech::stt::ModelState::Failed(_)) => "failed",
        },
        calls: status.registry.list(Instant::now()),
    })
}

/// Serves `router` on `listener` until `shutdown`, then lets open requests finish (up to `deadline`).
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken, deadline: Duration) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let graceful = GracefulShutdown::new();
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
            () = shutdown.cancelled() => break,
        };
        // Media frames are small writes every 20 ms: Nagle's algorithm would hold them back.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, "cannot set TCP_NODELAY: {e}");
        }
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(deadline, graceful.shutdown()).await.is_err() {
        warn!("HTTP connections still open {}s after shutdown: closing them", deadline.as_secs());
    }
}
