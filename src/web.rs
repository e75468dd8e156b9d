//! The box's HTTP listener: the server loop (header timeout, body limit, graceful shutdown) and the
//! routes that are not Twilio's: health and status for the LAN.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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
    /// Who speaks (and why not the configured Piper voice), when the assistant answers calls.
    pub voice: Option<crate::speech::tts::VoiceStatus>,
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    state: DeviceState,
    name: String,
    version: &'static str,
    uptime_seconds: u64,
    /// `downloading`, `loading`, `warming`, `ready`, `failed` or `off`.
    speech: &'static str,
    /// How far the model's download has come (percent), while the box downloads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    speech_download_percent: Option<u64>,
    /// The voice: `engine` (`piper` or `espeak`), `voice`, and `fallback` (why not the configured
    /// Piper voice, and how to install it).
    tts: Option<crate::speech::tts::VoiceStatus>,
    /// What the box is busy with, and how many missed calls and voicemails wait to be heard.
    activity: crate::events::Activity,
    waiting: u32,
    /// The public URL (while the tunnel is up), why the tunnel last went down, Twilio's API reachable.
    network: crate::events::Network,
    /// Something needing attention (e.g. an audio device is missing).
    fault: Option<String>,
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
    let snapshot = status.state.snapshot();
    Json(Health {
        status: "ok",
        state: snapshot.state,
        activity: snapshot.activity,
        waiting: snapshot.waiting,
        network: snapshot.network,
        fault: snapshot.fault,
        name: status.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: status.started.elapsed().as_secs(),
        // loading (no call can be heard yet), warming (calls heard; the pool still warming), ready.
        speech: status.speech.as_ref().map_or("off", |s| s.state().as_str()),
        speech_download_percent: status.speech.as_ref().and_then(|s| s.download_percent()),
        tts: status.voice.clone(),
        calls: status.registry.list(Instant::now()),
    })
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
        let service = TowerToHyperService::new(self.router.clone());
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
        server.serve_io(stream, peer.to_string());
    }
}
