//! `voca run`: builds every subsystem from the configuration, serves until SIGTERM or SIGINT, then
//! shuts down in order within a deadline.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, TunnelProvider};
use crate::events::{DeviceState, StateBus};
use crate::web;

/// How long tasks get to finish after a shutdown signal before the process exits anyway.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Runs the box until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals = {
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            info!("{name} received: shutting down");
            shutdown.cancel();
        })
    };
    let result = run_until(config, shutdown).await;
    signals.abort();
    result
}

/// Runs the box until `shutdown` is cancelled.
pub async fn run_until(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let state = StateBus::default();
    let tracker = TaskTracker::new();
    info!(
        config = %config.source,
        board = %config.device.board,
        tunnel = ?config.tunnel.provider,
        answer = ?config.calls.answer,
        model = %config.speech.model_path().display(),
        "starting {}", config.device.name
    );

    let listener = TcpListener::bind(config.http.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (`http.listen`): is another voca running? choose a free address with VOCA_HTTP_LISTEN",
            config.http.listen
        )
    })?;
    let addr = listener.local_addr().context("listener has no local address")?;
    let router =
        web::router(web::Status { name: config.device.name.clone(), state: state.clone(), started: Instant::now() });
    let http_shutdown = shutdown.clone();
    tracker.spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(http_shutdown.cancelled_owned()).await;
        if let Err(e) = served {
            warn!("HTTP listener stopped with an error: {e}");
        }
    });
    info!("listening on http://{addr} (health: http://{addr}/healthz); Ctrl-C stops the box");

    state.set(match config.tunnel.provider {
        TunnelProvider::None => DeviceState::Offline,
        TunnelProvider::Ngrok | TunnelProvider::External => DeviceState::Ready,
    });

    shutdown.cancelled().await;
    state.set(DeviceState::Stopping);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, tracker.wait()).await.is_err() {
        warn!("tasks still running {}s after the shutdown signal: exiting anyway", SHUTDOWN_DEADLINE.as_secs());
    }
    info!("stopped");
    Ok(())
}
