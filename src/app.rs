//! `voca run`: builds every subsystem from the configuration, serves until SIGTERM or SIGINT, then
//! shuts down in order within a deadline: stop accepting, end calls (logged as interrupted), drain
//! tasks, close the database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::audio::resample::Upsampler;
use crate::audio::wav;
use crate::call::registry::Registry;
use crate::call::responder::{Responder, ResponderFactory, ToneResponder};
use crate::call::session::SessionContext;
use crate::config::{Config, TunnelProvider};
use crate::events::{DeviceState, StateBus};
use crate::store::Store;
use crate::twilio::rest::RestClient;
use crate::twilio::webhook::{self, PhoneState};
use crate::web;

/// How long tasks get to finish after a shutdown signal before the process exits anyway.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Runs the box until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let running = start(config).await?;
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!("{name} received: shutting down");
    running.stop().await
}

/// A box that is up: its listener's address and the handle that stops it.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub state: StateBus,
    pub registry: Arc<Registry>,
    pub store: Store,
    shutdown: CancellationToken,
    done: JoinHandle<()>,
}

impl Running {
    /// Cancels everything and waits (at most [`SHUTDOWN_DEADLINE`]) for it to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.state.set(DeviceState::Stopping);
        self.shutdown.cancel();
        self.done.await.context("the box's main task failed")?;
        info!("stopped");
        Ok(())
    }
}

/// Loads the greeting WAV (`calls.greeting_wav`) as 16 kHz samples.
fn greeting(config: &Config) -> anyhow::Result<Option<Arc<Vec<i16>>>> {
    let Some(path) = &config.calls.greeting_wav else { return Ok(None) };
    let wav = wav::read(path).with_context(|| "`calls.greeting_wav`".to_string())?;
    let samples = match wav.rate {
        16000 => wav.samples,
        8000 => {
            let mut out = vec![0; wav.samples.len() * 2];
            Upsampler::default().process(&wav.samples, &mut out);
            out
        }
        rate => anyhow::bail!("`calls.greeting_wav`: {} is {rate} Hz: expected 8000 or 16000 Hz", path.display()),
    };
    Ok(Some(Arc::new(samples)))
}

/// Starts the box and returns once it is listening.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let state = StateBus::default();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    info!(
        config = %config.source,
        board = %config.device.board,
        tunnel = ?config.tunnel.provider,
        answer = ?config.calls.answer,
        model = %config.speech.model_path().display(),
        data = %config.device.data_dir.display(),
        "starting {}", config.device.name
    );
    if !config.twilio.validate_signatures {
        warn!("!!! twilio.validate_signatures = false: ANYONE can post fake calls to this box. Development only !!!");
    }

    let store = Store::open(&config.device.data_dir)?;
    if store.interrupted_at_start > 0 {
        warn!(
            "{} call(s) were in progress when the box last stopped: logged as interrupted",
            store.interrupted_at_start
        );
    }
    let registry = Arc::new(Registry::new(config.calls.clone()));
    let greeting = greeting(&config)?;
    let responders: ResponderFactory =
        Arc::new(move || Box::new(ToneResponder::new(greeting.clone())) as Box<dyn Responder>);
    let rest = if config.twilio.has_credentials() { RestClient::new(&config.twilio).ok() } else { None };

    let listener = TcpListener::bind(config.http.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (`http.listen`): is another voca running? choose a free address with VOCA_HTTP_LISTEN",
            config.http.listen
        )
    })?;
    let addr = listener.local_addr().context("listener has no local address")?;
    let public_base = match &config.twilio.public_url {
        Some(url) => url.clone(),
        None => url::Url::parse(&format!("http://{addr}")).context("listen address as URL")?,
    };
    let phone = PhoneState {
        public_base,
        auth_token: config.twilio.auth_token.clone(),
        validate_signatures: config.twilio.validate_signatures,
        sessions: SessionContext {
            registry: registry.clone(),
            store: store.clone(),
            responders,
            max_duration: config.calls.max_duration.into(),
            silence_timeout: config.calls.silence_timeout.into(),
            shutdown: shutdown.clone(),
            rest,
        },
        tracker: tracker.clone(),
    };
    let status = web::Status {
        name: config.device.name.clone(),
        state: state.clone(),
        started: Instant::now(),
        registry: registry.clone(),
    };
    let router = web::finish(web::router(status).merge(webhook::routes(phone)));
    tracker.spawn(web::serve(listener, router, shutdown.clone(), SHUTDOWN_DEADLINE));
    info!("listening on http://{addr} (health: http://{addr}/healthz); Ctrl-C stops the box");

    state.set(match config.tunnel.provider {
        TunnelProvider::None => DeviceState::Offline,
        TunnelProvider::Ngrok | TunnelProvider::External => DeviceState::Ready,
    });

    let done = {
        let (shutdown, store) = (shutdown.clone(), store.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tracker.close();
            if tokio::time::timeout(SHUTDOWN_DEADLINE, tracker.wait()).await.is_err() {
                warn!("tasks still running {}s after the shutdown signal: exiting anyway", SHUTDOWN_DEADLINE.as_secs());
            }
            drop(store);
        })
    };
    Ok(Running { addr, state, registry, store, shutdown, done })
}
