//! `voca run`: builds every subsystem from the configuration, serves until SIGTERM or SIGINT, then
//! shuts down in order within a deadline: stop accepting, end calls (logged as interrupted), drain
//! tasks, close the database.

mod answer;
mod network;
mod speech;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::appliance::{Appliance, LocalSpeech};
use crate::call::conversation::SpeechKit;
use crate::call::registry::Registry;
use crate::call::session::SessionContext;
use crate::call::webhook::{self, PhoneState};
use crate::config::settings::{Live, Settings};
use crate::config::Config;
use crate::events::{DeviceState, StateBus};
use crate::speech::stt::Stt;
use crate::store::{Folder, Store};
use crate::twilio::rest::RestClient;
use crate::{net, web};
use answer::responder_factory;
use network::start_network;
use speech::{greeting, speech_kit};

/// How long tasks get to finish after a shutdown signal before the process exits anyway.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// How long a restart for new settings waits for the calls in progress to end.
const RESTART_WAITS_FOR_CALLS: Duration = Duration::from_secs(30 * 60);

/// Runs the box until SIGTERM or SIGINT. Settings from the LAN page that cannot apply live
/// (credentials, tunnel, speech) restart the box's engine in this process, once no call is in
/// progress; the page's logins survive it.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let settings = Settings::open(config);
    let auth = web::auth::Auth::open(&settings.live().get());
    let mut restarts = settings.restarts();
    loop {
        let running = start_with(settings.clone(), auth.clone()).await?;
        let health = crate::service::Health { store: running.store.clone(), speech: running.speech.clone() };
        // READY=1 again after a restart is harmless; the watchdog follows the new engine's parts.
        let service = crate::service::Service::ready(health, running.state.clone());
        restarts.borrow_and_update();
        let stop = tokio::select! {
            _ = term.recv() => Some("SIGTERM"),
            _ = int.recv() => Some("SIGINT"),
            _ = restarts.changed() => None,
        };
        if let Some(name) = stop {
            info!("{name} received: shutting down");
            service.stopping();
            return running.stop().await;
        }
        let deadline = tokio::time::Instant::now() + RESTART_WAITS_FOR_CALLS;
        if !running.registry.is_empty() {
            info!("new settings apply once the calls in progress have ended");
        }
        while !running.registry.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = term.recv() => return running.stop().await,
                _ = int.recv() => return running.stop().await,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        info!("restarting with the new settings");
        running.stop().await?;
    }
}

/// A box that is up: its listener's address and the handle that stops it.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub state: StateBus,
    pub registry: Arc<Registry>,
    pub store: Store,
    /// Speech recognition, when the assistant answers calls.
    pub speech: Option<Stt>,
    /// Places (or queues) calls to contacts.
    pub callout: crate::call::callout::CallOut,
    /// The panel, speaker and microphone.
    pub appliance: Appliance,
    /// What the tunnel's connections are served by (Twilio's routes alone), for tests to reach.
    pub tunnel: net::Server,
    /// The LAN page's settings (what Home Assistant and the page change).
    pub settings: Settings,
    shutdown: CancellationToken,
    done: JoinHandle<()>,
}

impl Running {
    /// Cancels everything and waits (at most [`SHUTDOWN_DEADLINE`]) for it to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.state.set(DeviceState::Stopping);
        self.shutdown.cancel();
        self.appliance.shutdown();
        if tokio::time::timeout(SHUTDOWN_DEADLINE, self.appliance.stopped()).await.is_err() {
            warn!("the audio devices did not close within {}s", SHUTDOWN_DEADLINE.as_secs());
        }
        self.done.await.context("the box's main task failed")?;
        if let Some(stt) = self.speech.clone() {
            // No recognizer may still be decoding when the process exits.
            if let Err(e) = tokio::task::spawn_blocking(move || stt.shutdown()).await {
                warn!("the speech recognizers did not stop cleanly: {e}");
            }
        }
        info!("stopped");
        Ok(())
    }
}

/// Follows the LAN page's changes the assistant uses: the greeting (re-rendered) and the
/// contacts' names.
async fn follow_settings(settings: Live, kit: SpeechKit, shutdown: CancellationToken) {
    let mut watch = settings.watch();
    let mut text = watch.borrow_and_update().assistant.greeting.clone();
    loop {
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        let config = watch.borrow_and_update().clone();
        kit.assistant.set_contacts(config.contacts.iter().map(|c| c.name.clone()).collect());
        let now = config.assistant.greeting.clone();
        if now != text {
            let spoken = if now.trim().is_empty() { kit.assistant.language.greeting.to_owned() } else { now.clone() };
            kit.prompts.greeting.set(Arc::new(kit.tts.prompt(&spoken).await));
            info!("the greeting changed: callers hear the new one from their next call");
            text = now;
        }
    }
}

/// Starts the box with `config` and the settings the LAN page saved in its data folder, and
/// returns once it is listening.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let settings = Settings::open(config);
    let auth = web::auth::Auth::open(&settings.live().get());
    start_with(settings, auth).await
}

/// Starts the box with the configuration `settings` has in effect; `auth` keeps the LAN page's
/// password and logins.
pub async fn start_with(settings: Settings, auth: web::auth::Auth) -> anyhow::Result<Running> {
    let live = settings.live().clone();
    let config = (*live.get()).clone();
    let state = StateBus::default();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    info!(
        config = %config.source,
        board = %config.device.board,
        tunnel = ?config.tunnel.provider,
        answer = ?config.calls.answer,
        model = %crate::speech::models::model_path(&config.speech).display(),
        data = %config.device.data_dir.display(),
        "starting {}", config.device.name
    );
    if !config.twilio.validate_signatures {
        warn!("!!! twilio.validate_signatures = false: ANYONE can post fake calls to this box. Development only !!!");
    }

    let data_dir = config.device.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data_dir)).await??;
    if let Some(aside) = &store.damaged_moved_to {
        // Shown (LEDs, /healthz) until the box restarts: someone should know the old log is aside.
        let fault = format!("the call log was damaged: kept as {}, a new one started", aside.display());
        state.set_fault_of(crate::events::Part::Store, Some(fault));
    }
    let voicemail =
        Folder::new(&config.device.data_dir).limited_to(u64::from(config.calls.voicemail_folder_mb) * 1_000_000);
    match store.reconcile_voicemail(&voicemail).await {
        Ok(check) if check != crate::store::VoicemailCheck::default() => warn!(
            "voicemail folder and call log reconciled after an abrupt stop: {} message(s) attached to their call, \
             {} row(s) named a missing file, {} partial write(s) removed, {} file(s) of unknown calls kept in {}",
            check.files_attached,
            check.rows_cleared,
            check.partial_removed,
            check.files_unknown,
            voicemail.path().display()
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot check the voicemail folder against the call log: {e}"),
    }
    if store.interrupted_at_start > 0 {
        warn!(
            "{} call(s) were in progress when the box last stopped: logged as interrupted",
            store.interrupted_at_start
        );
    }
    if let Some(e) = &config.settings_error {
        state.set_fault_of(
            crate::events::Part::Settings,
            Some(format!("the settings saved from the page are not applied: {e}")),
        );
    }
    crate::clock::begin().await;
    tracker.spawn(store.clone().follow_clock(shutdown.clone()));
    let registry = Arc::new(Registry::live(live.clone()));
    let greeting = greeting(&config)?;
    let rest = if config.twilio.has_credentials() { RestClient::new(&config.twilio).ok() } else { None };
    let rest_for_setup = rest.clone();
    let kit = speech_kit(&config, &live, &store, &voicemail, rest.clone()).await;
    let speech = kit.as_ref().map(|k| k.stt.clone());
    if let Some(stt) = speech.clone() {
        tokio::spawn(stt.publish_download(state.clone(), shutdown.clone()));
    }

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
    let public = crate::twilio::PublicUrl::new(public_base);
    let callout = crate::call::callout::CallOut::new(
        rest_for_setup.clone(),
        config.twilio.phone_number.clone(),
        public.clone(),
        store.clone(),
        state.clone(),
        crate::call::callout::Policy::from_config(&config.calls),
    );
    let crate::panel::Opened { panel, sim: sim_panel } = match crate::panel::open(&config.device.board) {
        Ok(opened) => opened,
        Err(e) => {
            let fault = format!("the board \"{}\" could not be opened: {e:#}", config.device.board);
            error!("{fault}; the box answers calls without its LEDs and buttons (`voca check` says more)");
            state.set_fault_of(crate::events::Part::Panel, Some(fault));
            crate::panel::absent()
        }
    };
    let language = kit
        .as_ref()
        .map_or_else(|| crate::speech::prompts::language(&config.speech.language), |k| k.assistant.language);
    let appliance = Appliance::start(
        crate::appliance::Parts {
            panel,
            bus: state.clone(),
            capture: config.device.capture.clone(),
            playback: config.device.playback.clone(),
            sample_rate: config.device.sample_rate,
            callout: callout.clone(),
            settings: live.clone(),
            speech: kit.as_ref().map(|k| LocalSpeech {
                stt: k.stt.clone(),
                tts: k.tts.clone(),
                assistant: k.assistant.clone(),
            }),
            language,
            store: store.clone(),
            voicemail: voicemail.clone(),
            registry: registry.clone(),
            rest: rest.clone(),
        },
        &shutdown,
        &tracker,
    );
    let voice = kit.as_ref().map(|k| k.tts.voice.clone());
    let turns = kit.as_ref().map(|k| k.turns.turns.clone());
    if let Some(kit) = kit.clone() {
        tracker.spawn(follow_settings(live.clone(), kit, shutdown.clone()));
    }
    let responders = responder_factory(live.clone(), kit, appliance.clone(), greeting);
    let phone = PhoneState {
        callout: callout.clone(),
        public_base: public.clone(),
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
        speech: speech.clone(),
        voice,
        turns,
    };
    tracker.spawn(crate::home::run(
        crate::home::Parts {
            settings: settings.clone(),
            bus: state.clone(),
            store: store.clone(),
            registry: registry.clone(),
            appliance: appliance.clone(),
        },
        shutdown.clone(),
    ));
    let lan = web::Lan {
        status,
        settings: settings.clone(),
        auth,
        store: store.clone(),
        appliance: appliance.clone(),
        voicemail: voicemail.clone(),
        shutdown: shutdown.clone(),
    };
    let twilio_routes = webhook::routes(phone);
    let sim_routes = sim_panel.map(|sim| {
        info!("sim panel: press buttons with POST /sim/buttons/{{call|call2|talk}}, see LEDs at GET /sim/leds");
        crate::panel::sim::routes(sim)
    });
    let router = web::router(lan, sim_routes).merge(twilio_routes.clone());
    let server = net::Server::new(net::finish(router), shutdown.clone(), tracker.clone(), SHUTDOWN_DEADLINE);
    tracker.spawn(net::serve(listener, server));
    info!("listening on http://{addr} (the box's page: http://{addr}/, health: /healthz); Ctrl-C stops the box");
    // The internet reaches the box through its tunnel: there, only Twilio's (signed) routes exist.
    let tunnel_server =
        net::Server::new(net::finish(twilio_routes), shutdown.clone(), tracker.clone(), SHUTDOWN_DEADLINE);

    start_network(&config, &state, rest_for_setup.clone(), &public, tunnel_server.clone(), &shutdown, &tracker);
    tracker.spawn(callout.clone().run(shutdown.clone()));
    if let (Some(rest), Some(number)) = (rest_for_setup, config.twilio.phone_number.clone()) {
        tracker.spawn(crate::call::sync::run(rest, number, store.clone(), voicemail, state.clone(), shutdown.clone()));
    }

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
    Ok(Running {
        addr,
        state,
        registry,
        store,
        speech,
        callout,
        appliance,
        tunnel: tunnel_server,
        settings,
        shutdown,
        done,
    })
}
