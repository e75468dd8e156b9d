//! The box itself: what its buttons do, what its LEDs show, and what plays on its speaker.
//!
//! - LEDs follow the state bus (one mapping: [`crate::panel::patterns`]).
//! - Call button: short press calls the contact bound to its slot (or answers a ringing call, or
//!   hangs up the call in progress); long press starts the emergency chain; double press plays
//!   waiting messages.
//! - Talk button: hold to talk to the assistant, offline (VOSK, the same assistant, espeak-ng on the
//!   speaker); a short press answers a ringing call or plays waiting messages.
//! - Calls on the box (intercom, ringing) reach it through [`crate::appliance::intercom`].

mod dialling;
pub mod intercom;
mod messages;
pub mod ringing;
mod talk;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::assistant::Assistant;
use crate::audio::device::{FaultReporter, Microphone, Role, Speaker};
use crate::call::callout::CallOut;
use crate::call::registry::Registry;
use crate::config::settings::Live;
use crate::config::Contact;
use crate::events::{Activity, StateBus};
use crate::panel::{ButtonEvent, ButtonRole, Panel, Press};
use crate::speech::prompts::Language;
use crate::speech::stt::Stt;
use crate::speech::tts::Tts;
use crate::store::{Folder, Store};
use crate::twilio::media::CallSid;
use crate::twilio::rest::RestClient;

/// Speech for the box's own speaker: recognition, the assistant and TTS.
#[derive(Clone)]
pub struct LocalSpeech {
    pub stt: Stt,
    pub tts: Arc<Tts>,
    pub assistant: Arc<Assistant>,
}

impl std::fmt::Debug for LocalSpeech {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSpeech").finish_non_exhaustive()
    }
}

/// How a call-out ended, as far as the person at the box is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Connected,
    NotAnswered,
    Queued,
    Failed,
}

#[derive(Default)]
struct Local {
    /// The incoming call ringing the box, and how to answer it.
    ringing: Option<(CallSid, oneshot::Sender<()>)>,
    /// The call on the speaker and microphone.
    in_call: Option<CallSid>,
    /// The call-out being placed: its id and, once Twilio took it, its SID.
    dialing: Option<(i64, Option<CallSid>)>,
    /// Push-to-talk in progress: when it started, and how to stop recording.
    talking: Option<(Instant, oneshot::Sender<()>, tokio::task::JoinHandle<Vec<i16>>)>,
    chain: Option<tokio::task::JoinHandle<()>>,
    /// The LAN page's first set-up waits for a press of any button (proof that someone is at the box).
    presence: Option<oneshot::Sender<()>>,
    /// After that press, the rest of it (release, the short press) does nothing else.
    swallow_until: Option<Instant>,
}

/// The appliance. Cheap to clone.
#[derive(Clone)]
pub struct Appliance {
    inner: Arc<Inner>,
}

struct Inner {
    panel: Arc<dyn Panel>,
    bus: StateBus,
    speaker: Speaker,
    mic: Microphone,
    callout: CallOut,
    /// The configuration in effect (contacts change from the LAN page while the box runs).
    settings: Live,
    speech: Option<LocalSpeech>,
    language: &'static Language,
    store: Store,
    voicemail: Folder,
    registry: Arc<Registry>,
    rest: Option<RestClient>,
    local: Mutex<Local>,
    /// Places for announcements from elsewhere (see [`Appliance::try_say`]).
    announcements: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Appliance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appliance").field("panel", &self.inner.panel).finish_non_exhaustive()
    }
}

/// Announcements from elsewhere (the page, Home Assistant) waiting or being said, at most.
pub const ANNOUNCEMENTS: usize = 4;

/// The box is already saying [`ANNOUNCEMENTS`] things for others: try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the box is already saying {0} things: try again when it has said them")]
pub struct Busy(pub usize);

/// Everything the appliance is built from.
pub struct Parts {
    pub panel: Arc<dyn Panel>,
    pub bus: StateBus,
    pub capture: String,
    pub playback: String,
    pub sample_rate: u32,
    pub callout: CallOut,
    pub settings: Live,
    pub speech: Option<LocalSpeech>,
    pub language: &'static Language,
    pub store: Store,
    /// Where the messages it plays are.
    pub voicemail: Folder,
    pub registry: Arc<Registry>,
    pub rest: Option<RestClient>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}

/// Faults of the two audio devices, shown as one on the bus.
fn fault_reporter(bus: StateBus) -> FaultReporter {
    let faults: Mutex<[Option<String>; 2]> = Mutex::default();
    Arc::new(move |role, fault| {
        let mut faults = faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = &mut faults[usize::from(role == Role::Playback)];
        if *slot != fault {
            match &fault {
                Some(f) => {
                    warn!("audio device trouble: {f}");
                    crate::telemetry::metrics::AUDIO_FAULTS.inc();
                }
                None if slot.is_some() => info!("{role} device is back"),
                None => {}
            }
            *slot = fault;
        }
        let shown = faults.iter().flatten().next().cloned();
        bus.set_fault_of(crate::events::Part::Audio, shown);
    })
}

impl Appliance {
    /// Opens the audio devices and starts the panel's tasks.
    pub fn start(parts: Parts, shutdown: &CancellationToken, tracker: &TaskTracker) -> Self {
        let faults = fault_reporter(parts.bus.clone());
        let speaker = Speaker::start(&parts.playback, parts.sample_rate, faults.clone());
        let mic = Microphone::start(&parts.capture, parts.sample_rate, faults);
        let appliance = Self {
            inner: Arc::new(Inner {
                panel: parts.panel,
                bus: parts.bus,
                speaker,
                mic,
                callout: parts.callout,
                settings: parts.settings,
                speech: parts.speech,
                language: parts.language,
                store: parts.store,
                voicemail: parts.voicemail,
                announcements: Arc::new(tokio::sync::Semaphore::new(ANNOUNCEMENTS)),
                registry: parts.registry,
                rest: parts.rest,
                local: Mutex::default(),
            }),
        };
        info!(board = appliance.inner.panel.board(), "panel ready");
        tracker.spawn(appliance.clone().show_state(shutdown.clone()));
        tracker.spawn(appliance.clone().handle_buttons(shutdown.clone()));
        appliance
    }

    pub fn speaker(&self) -> &Speaker {
        &self.inner.speaker
    }

    pub fn mic(&self) -> &Microphone {
        &self.inner.mic
    }

    pub fn callout(&self) -> &CallOut {
        &self.inner.callout
    }

    /// Resolves at the next press of any button, which then does nothing else: the LAN page's
    /// first set-up asks for it as proof that someone is at the box.
    pub fn next_press(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.local().presence = Some(tx);
        rx
    }

    /// The language the box speaks on its speaker.
    pub fn language(&self) -> &'static Language {
        self.inner.language
    }

    /// Whether the box can speak (speech is on).
    pub fn can_speak(&self) -> bool {
        self.inner.speech.is_some()
    }

    /// The call buttons and the contact slot each calls (`button = N` in a contact).
    pub fn call_slots(&self) -> Vec<(String, u8)> {
        self.inner
            .panel
            .buttons()
            .into_iter()
            .filter_map(|(name, role, slot)| (role == ButtonRole::Call).then_some(slot.map(|s| (name, s))).flatten())
            .collect()
    }

    /// The contacts in effect now.
    pub fn contacts(&self) -> Vec<Contact> {
        self.inner.settings.get().contacts.clone()
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.inner.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// LEDs off, pins released, the audio threads told to stop (see [`Appliance::stopped`]).
    pub fn shutdown(&self) {
        self.inner.panel.shutdown();
        self.inner.speaker.shutdown();
        self.inner.mic.shutdown();
    }

    /// Waits until the audio threads have closed their devices and ended.
    pub async fn stopped(&self) {
        let (speaker, mic) = (self.inner.speaker.clone(), self.inner.mic.clone());
        let _ = tokio::task::spawn_blocking(move || {
            speaker.join();
            mic.join();
        })
        .await;
    }

    /// Keeps the LEDs in step with the state bus, and the count of waiting messages fresh.
    async fn show_state(self, shutdown: CancellationToken) {
        let mut watch = self.inner.bus.watch();
        let mut refresh = tokio::time::interval(Duration::from_secs(1));
        loop {
            let snapshot = watch.borrow_and_update().clone();
            for (role, pattern) in crate::panel::patterns(&snapshot) {
                self.inner.panel.set_led(role, pattern);
            }
            tokio::select! {
                changed = watch.changed() => if changed.is_err() { return },
                _ = refresh.tick() => {
                    if let Ok(waiting) = self.inner.store.waiting_count().await {
                        self.inner.bus.set_waiting(waiting);
                    }
                }
                () = shutdown.cancelled() => {
                    self.shutdown();
                    return;
                }
            }
        }
    }

    async fn handle_buttons(self, shutdown: CancellationToken) {
        let mut events = self.inner.panel.events();
        let buttons = self.inner.panel.buttons();
        loop {
            let event = tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!("{n} button events were missed");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = shutdown.cancelled() => return,
            };
            let Some((_, role, slot)) = buttons.iter().find(|(name, _, _)| *name == event.button) else { continue };
            self.on_button(&event, *role, *slot);
        }
    }

    fn on_button(&self, event: &ButtonEvent, role: ButtonRole, slot: Option<u8>) {
        {
            let mut local = self.local();
            if let Some(presence) = local.presence.take() {
                if presence.send(()).is_ok() {
                    local.swallow_until = Some(Instant::now() + Duration::from_secs(2));
                    return;
                }
            }
            if local.swallow_until.is_some_and(|until| Instant::now() < until) {
                return;
            }
        }
        let this = self.clone();
        match (role, event.press) {
            (ButtonRole::Call, Press::Short) => {
                if self.answer() {
                    return;
                }
                if self.hang_up_current() {
                    return;
                }
                let contact = self.contacts().into_iter().find(|c| c.button.is_some() && c.button == slot);
                tokio::spawn(async move {
                    match contact {
                        Some(contact) => {
                            this.call_contact(&contact, false).await;
                        }
                        None => this.say(this.inner.language.no_contact).await,
                    }
                });
            }
            (ButtonRole::Call, Press::Long) => self.call_for_help(),
            (ButtonRole::Call, Press::Double) => {
                tokio::spawn(async move { this.play_messages().await });
            }
            (ButtonRole::Talk, Press::Down) => self.start_talking(),
            (ButtonRole::Talk, Press::Up) => {
                tokio::spawn(async move { this.stop_talking().await });
            }
            (ButtonRole::Talk, Press::Short) => {
                if !self.answer() && self.inner.bus.snapshot().waiting > 0 {
                    tokio::spawn(async move { this.play_messages().await });
                }
            }
            (ButtonRole::Talk, Press::Long | Press::Double) | (ButtonRole::Call, Press::Down | Press::Up) => {}
        }
    }

    /// Speaks `text` on the speaker and waits until it has been heard.
    pub async fn say(&self, text: &str) {
        info!("box says on its speaker: {text:?}");
        self.speak(text).await;
    }

    /// Says something only the people at the box may hear (the set-up code): never logged.
    pub async fn say_privately(&self, text: &str) {
        info!("box says something private on its speaker (not logged)");
        self.speak(text).await;
    }

    /// Says `text` for someone elsewhere (the page, Home Assistant): refused at once while
    /// [`ANNOUNCEMENTS`] already wait, so a flood of them can neither fill the speech thread's queue
    /// (callers' replies first) nor keep the speaker busy for long.
    pub fn try_say(&self, text: String) -> Result<(), Busy> {
        let permit = self.inner.announcements.clone().try_acquire_owned().map_err(|_| Busy(ANNOUNCEMENTS))?;
        let this = self.clone();
        tokio::spawn(async move {
            this.say(&text).await;
            drop(permit);
        });
        Ok(())
    }

    async fn speak(&self, text: &str) {
        let Some(speech) = &self.inner.speech else { return };
        let audio = speech.tts.render_aside(text).await;
        self.inner.bus.set_activity(Activity::Speaking);
        self.play_and_wait(&audio).await;
        self.inner.bus.end_activity(Activity::Speaking);
    }

    async fn play_and_wait(&self, audio: &[i16]) {
        self.inner.speaker.play(audio);
        let length = Duration::from_secs_f64(audio.len() as f64 / 16000.0);
        self.inner.speaker.finished(length + Duration::from_secs(2)).await;
    }
}
