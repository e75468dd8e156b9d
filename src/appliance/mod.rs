//! The box itself: what its buttons do, what its LEDs show, and what plays on its speaker.
//!
//! - LEDs follow the state bus (one mapping: [`crate::panel::patterns`]).
//! - Call button: short press calls the contact bound to its slot (or answers a ringing call, or
//!   hangs up the call in progress); long press starts the emergency chain; double press plays
//!   waiting messages.
//! - Talk button: hold to talk to the assistant, offline (VOSK, the same assistant, espeak-ng on the
//!   speaker); a short press answers a ringing call or plays waiting messages.
//! - Calls on the box (intercom, ringing) reach it through [`crate::appliance::intercom`].

pub mod intercom;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::assistant::{Action, Assistant, Conversation};
use crate::audio::device::{FaultReporter, Microphone, Role, Speaker};
use crate::audio::vad::VadConfig;
use crate::call::callout::{CallOut, Update};
use crate::call::registry::Registry;
use crate::config::settings::Live;
use crate::config::Contact;
use crate::events::{Activity, StateBus};
use crate::panel::{ButtonEvent, ButtonRole, Panel, Press};
use crate::speech::listen::Listener;
use crate::speech::prompts::Language;
use crate::speech::stt::{Heard, Stt};
use crate::speech::tts::Tts;
use crate::store::{Folder, Store};
use crate::twilio::media::CallSid;
use crate::twilio::rest::RestClient;

/// Holding the talk button for less than this is a tap, not speech.
const MIN_TALK: Duration = Duration::from_millis(300);
/// How long a failed call-out shows on the call LED.
const FAILED_SHOWN: Duration = Duration::from_secs(3);
/// How long the emergency chain waits for one contact.
const CHAIN_WAIT: Duration = Duration::from_secs(90);

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
    dialing: Option<(i64, Option<String>)>,
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
}

impl std::fmt::Debug for Appliance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appliance").field("panel", &self.inner.panel).finish_non_exhaustive()
    }
}

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
        let Some(speech) = &self.inner.speech else { return };
        let audio = speech.tts.render(text).await;
        self.inner.bus.set_activity(Activity::Speaking);
        self.play_and_wait(&audio).await;
        self.inner.bus.end_activity(Activity::Speaking);
    }

    async fn play_and_wait(&self, audio: &[i16]) {
        self.inner.speaker.play(audio);
        let length = Duration::from_secs_f64(audio.len() as f64 / 16000.0);
        self.inner.speaker.finished(length + Duration::from_secs(2)).await;
    }

    /// Places a call to `contact` and follows it until it connects, fails or is queued.
    pub async fn call_contact(&self, contact: &Contact, emergency: bool) -> Outcome {
        let language = self.inner.language;
        let mut updates = self.inner.callout.updates();
        self.inner.bus.set_activity(Activity::Dialing);
        let id = match self.inner.callout.request(contact, emergency).await {
            Ok(id) => id,
            Err(e) => {
                warn!("cannot call {}: {e}", contact.name);
                self.show_failed();
                self.say(language.not_configured).await;
                return Outcome::Failed;
            }
        };
        self.local().dialing = Some((id, None));
        let outcome = tokio::time::timeout(CHAIN_WAIT, async {
            loop {
                let update = match updates.recv().await {
                    Ok(update) => update,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return Outcome::Failed,
                };
                match update {
                    Update::Queued { id: i } if i == id => return Outcome::Queued,
                    Update::Placed { id: i, call_sid } if i == id => {
                        self.local().dialing = Some((id, Some(call_sid)));
                        self.inner.bus.set_activity(Activity::RingingOut);
                    }
                    Update::Failed { id: i, .. } if i == id => return Outcome::Failed,
                    Update::Progress { id: i, status } if i == id => match status.as_str() {
                        "connected" => return Outcome::Connected,
                        "ringing" | "initiated" | "in-progress" | "answered" | "queued" => {}
                        _ => return Outcome::NotAnswered,
                    },
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or(Outcome::NotAnswered);
        let cancelled = {
            let mut local = self.local();
            let ours = local.dialing.as_ref().is_some_and(|(i, _)| *i == id);
            let sid = if ours { local.dialing.take().and_then(|(_, sid)| sid) } else { None };
            (outcome == Outcome::NotAnswered).then_some(sid).flatten()
        };
        info!(contact = %contact.name, ?outcome, "call-out");
        match outcome {
            Outcome::Connected => {}
            Outcome::Queued => {
                self.inner.bus.end_activity(Activity::Dialing);
                self.say(&language.offline_queued.replace("{name}", &contact.name)).await;
            }
            Outcome::NotAnswered => {
                if let (Some(sid), Some(rest)) = (cancelled, &self.inner.rest) {
                    // Stop it ringing on (a timeout): the next contact is being called.
                    if let Ok(sid) = CallSid::parse(&sid) {
                        let _ = rest.hang_up(&sid).await;
                    }
                }
                self.show_failed();
                self.say(&language.no_answer.replace("{name}", &contact.name)).await;
            }
            Outcome::Failed => {
                self.show_failed();
                self.say(&language.call_failed.replace("{name}", &contact.name)).await;
            }
        }
        outcome
    }

    fn show_failed(&self) {
        let bus = self.inner.bus.clone();
        bus.set_activity(Activity::CallFailed);
        tokio::spawn(async move {
            tokio::time::sleep(FAILED_SHOWN).await;
            bus.end_activity(Activity::CallFailed);
        });
    }

    /// Long press: calls the emergency contacts (all contacts if none is marked) in order until a
    /// person answers; answering machines are skipped (Twilio's detection).
    async fn emergency_chain(&self) {
        let language = self.inner.language;
        let contacts = self.contacts();
        let marked: Vec<Contact> = contacts.iter().filter(|c| c.emergency).cloned().collect();
        let chain = if marked.is_empty() { contacts } else { marked };
        info!(contacts = chain.len(), "emergency chain started");
        self.say(language.emergency).await;
        for contact in &chain {
            self.say(&language.calling.replace("{name}", &contact.name)).await;
            match self.call_contact(contact, true).await {
                Outcome::Connected | Outcome::Queued => return,
                Outcome::NotAnswered | Outcome::Failed => {}
            }
        }
        self.say(language.nobody_answered).await;
    }

    /// Answers the call ringing the box, if there is one.
    fn answer(&self) -> bool {
        let Some((sid, answer)) = self.local().ringing.take() else { return false };
        info!(call = %sid, "answered on the box");
        self.inner.speaker.stop_playing();
        let _ = answer.send(());
        true
    }

    /// Starts the emergency chain (what a long press of the call button does); a chain already
    /// running is replaced.
    pub fn call_for_help(&self) {
        let this = self.clone();
        let chain = tokio::spawn(async move { this.emergency_chain().await });
        if let Some(previous) = self.local().chain.replace(chain) {
            previous.abort();
        }
    }

    /// Hangs up the call on the box (or cancels the call-out being placed); with none, every call
    /// in progress (an assistant call, say). Returns whether there was one.
    pub fn hang_up(&self) -> bool {
        if self.hang_up_current() {
            return true;
        }
        let calls = self.inner.registry.list(Instant::now());
        for call in &calls {
            if let Ok(sid) = CallSid::parse(&call.call_sid) {
                self.inner.registry.hang_up(&sid);
            }
        }
        !calls.is_empty()
    }

    /// Hangs up the call on the box, or cancels the call-out being placed.
    fn hang_up_current(&self) -> bool {
        let (in_call, dialing) = {
            let local = self.local();
            (local.in_call.clone(), local.dialing.clone())
        };
        let rest = self.inner.rest.clone();
        if let Some(sid) = in_call {
            info!(call = %sid, "hung up on the box");
            self.inner.registry.hang_up(&sid);
            return true;
        }
        if let Some((id, sid)) = dialing {
            info!(id, "call-out cancelled on the box");
            if let (Some(rest), Some(Ok(sid))) = (rest, sid.as_deref().map(CallSid::parse)) {
                tokio::spawn(async move {
                    if let Err(e) = rest.hang_up(&sid).await {
                        warn!(call = %sid, "cancelling the call-out: {e}");
                    }
                });
            }
            self.local().dialing = None;
            self.inner.bus.end_activity(Activity::Dialing);
            self.inner.bus.end_activity(Activity::RingingOut);
            return true;
        }
        false
    }

    /// Whether a new call can ring the box (nothing else is on its speaker or ringing).
    pub fn can_ring(&self) -> bool {
        let local = self.local();
        local.ringing.is_none() && local.in_call.is_none() && local.talking.is_none()
    }

    /// An incoming call rings the box: ring tone on the speaker, ringing LED. The receiver fires when
    /// someone presses a button to answer.
    pub fn ring(&self, sid: &CallSid) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.local().ringing = Some((sid.clone(), tx));
        self.inner.bus.set_activity(Activity::Ringing);
        info!(call = %sid, "ringing the box");
        let this = self.clone();
        let sid = sid.clone();
        tokio::spawn(async move {
            let tone = ring_tone();
            while this.local().ringing.as_ref().is_some_and(|(s, _)| *s == sid) {
                if !this.inner.speaker.is_playing() {
                    this.inner.speaker.play(&tone);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        rx
    }

    /// The ringing stopped without an answer (timeout, or the caller hung up): a missed call.
    pub fn ring_over(&self, sid: &CallSid) {
        let mut local = self.local();
        if local.ringing.as_ref().is_some_and(|(s, _)| s == sid) {
            local.ringing = None;
            drop(local);
            self.inner.speaker.stop_playing();
            self.inner.bus.end_activity(Activity::Ringing);
            let (store, sid) = (self.inner.store.clone(), sid.clone());
            tokio::spawn(async move {
                if let Err(e) = store.mark_waiting(sid.as_str()).await {
                    warn!(call = %sid, "missed call not noted: {e}");
                }
            });
        }
    }

    /// A call's audio now runs through the speaker and microphone.
    pub fn connected(&self, sid: &CallSid, callout: Option<i64>) {
        {
            let mut local = self.local();
            local.in_call = Some(sid.clone());
            if local.dialing.as_ref().is_some_and(|(id, _)| Some(*id) == callout) {
                local.dialing = None;
            }
        }
        if let Some(id) = callout {
            self.inner.callout.report(id, "connected");
        }
        self.inner.speaker.stop_playing();
        self.inner.speaker.set_streaming(true);
        self.inner.bus.set_activity(Activity::InCall);
        info!(call = %sid, "call on the box's speaker and microphone");
    }

    pub fn disconnected(&self, sid: &CallSid) {
        let mut local = self.local();
        if local.in_call.as_ref() == Some(sid) {
            local.in_call = None;
            drop(local);
            self.inner.speaker.set_streaming(false);
            self.inner.bus.end_activity(Activity::InCall);
            info!(call = %sid, "call off the box");
        }
    }

    /// Talk button down: record until it comes up.
    fn start_talking(&self) {
        if self.inner.speech.is_none() {
            warn!("push-to-talk needs speech (espeak-ng and a model)");
            return;
        }
        let mut local = self.local();
        if local.talking.is_some() || local.in_call.is_some() || local.ringing.is_some() {
            return;
        }
        let mut frames = self.inner.mic.listen(None);
        let (stop_tx, mut stop) = oneshot::channel();
        let recording = tokio::spawn(async move {
            let mut audio = Vec::with_capacity(16000 * 10);
            loop {
                tokio::select! {
                    frame = frames.recv() => match frame {
                        Some(frame) => audio.extend_from_slice(&frame[..]),
                        None => break,
                    },
                    _ = &mut stop => break,
                }
            }
            audio
        });
        local.talking = Some((Instant::now(), stop_tx, recording));
        drop(local);
        self.inner.speaker.stop_playing();
        self.inner.bus.set_activity(Activity::Listening);
    }

    /// Talk button up: recognise what was said, answer it on the speaker (or place the call).
    async fn stop_talking(&self) {
        let Some((started, stop, recording)) = self.local().talking.take() else { return };
        let _ = stop.send(());
        let audio = recording.await.unwrap_or_default();
        self.inner.bus.end_activity(Activity::Listening);
        if started.elapsed() < MIN_TALK {
            return;
        }
        let Some(speech) = self.inner.speech.clone() else { return };
        let heard = recognise(&speech.stt, audio).await;
        info!(heard = %heard, "push-to-talk");
        self.answer_heard(&heard).await;
    }

    /// Answers what the person at the box said, on the speaker; "call Alice" places the call.
    pub async fn answer_heard(&self, heard: &str) {
        let Some(speech) = self.inner.speech.clone() else { return };
        let reply = if heard.trim().is_empty() {
            speech.assistant.fallback()
        } else {
            speech.assistant.understand(heard, &Conversation::default()).unwrap_or_else(|| speech.assistant.fallback())
        };
        self.say(&reply.text).await;
        if let Action::Call(name) = &reply.action {
            match self.contacts().into_iter().find(|c| &c.name == name) {
                Some(contact) => {
                    self.call_contact(&contact, false).await;
                }
                None => self.say(self.inner.language.no_contact).await,
            }
        }
    }

    /// Plays missed calls and voicemails, oldest first, then marks them heard.
    pub async fn play_messages(&self) {
        let waiting = match self.inner.store.waiting_calls().await {
            Ok(waiting) => waiting,
            Err(e) => {
                warn!("messages: {e}");
                return;
            }
        };
        let language = self.inner.language;
        if waiting.is_empty() {
            self.say(language.no_messages).await;
            return;
        }
        for call in &waiting {
            let digits: Vec<char> = call.from_number.chars().filter(char::is_ascii_digit).collect();
            let last4: String = digits[digits.len().saturating_sub(4)..].iter().collect();
            let message = match call.voicemail.clone() {
                Some(path) => load_message(&self.inner.voicemail, path, call.call_sid.clone()).await,
                None => None,
            };
            match message {
                Some(audio) => {
                    self.say(&language.message_from.replace("{last4}", &last4)).await;
                    self.inner.bus.set_activity(Activity::Speaking);
                    self.play_and_wait(&audio).await;
                    self.inner.bus.end_activity(Activity::Speaking);
                }
                None => self.say(&language.missed_from.replace("{last4}", &last4)).await,
            }
        }
        let sids = waiting.into_iter().map(|c| c.call_sid).collect();
        if let Err(e) = self.inner.store.mark_heard(sids).await {
            warn!("messages not marked heard: {e}");
        }
        self.inner.bus.set_waiting(0);
    }
}

/// Runs a recording through a recognizer (off the runtime) and returns the final text. Right after
/// start-up it first waits for the model (at most 30 s).
async fn recognise(stt: &Stt, audio: Vec<i16>) -> String {
    if tokio::time::timeout(Duration::from_secs(30), stt.loaded()).await.is_err() {
        warn!("push-to-talk: the speech model is still loading");
        return String::new();
    }
    let stt = stt.clone();
    tokio::task::spawn_blocking(move || {
        // The whole press is one utterance; the listener holds all of it.
        let seconds = Duration::from_millis(audio.len() as u64 / 16 + 1000);
        let mut listener = Listener::new(stt, VadConfig::default(), seconds);
        if !listener.try_lease() {
            warn!("push-to-talk: no recognizer (the speech model failed to load)");
            return String::new();
        }
        listener.utterance(&audio);
        loop {
            match listener.wait(Duration::from_secs(30) + seconds) {
                Some(Heard::Final { text, .. }) => return text,
                Some(Heard::Tentative(_)) => {}
                Some(Heard::Missed) | None => return String::new(),
            }
        }
    })
    .await
    .unwrap_or_default()
}

/// A voicemail file as 16 kHz audio (read and converted off the runtime); `None` if it cannot be.
async fn load_message(folder: &Folder, path: String, call_sid: String) -> Option<Vec<i16>> {
    let Some(file) = folder.file(&path) else {
        warn!(call = %call_sid, "voicemail {path} is no longer in the voicemail folder: not played");
        return None;
    };
    let folder = folder.clone();
    tokio::task::spawn_blocking(move || match folder.read(&file) {
        Ok(audio) => Some(audio),
        Err(e) => {
            warn!(call = %call_sid, "voicemail {path} cannot be played: {e}");
            None
        }
    })
    .await
    .ok()
    .flatten()
}

/// A friendly two-note ring, 1.2 s of sound then 1.8 s of quiet, at 16 kHz.
pub fn ring_tone() -> Vec<i16> {
    let note = |freq: f32, ms: usize| -> Vec<i16> {
        let n = 16 * ms;
        (0..n)
            .map(|i| {
                let fade = ((i.min(n - i) as f32) / 160.0).min(1.0);
                (6000.0 * fade * (2.0 * std::f32::consts::PI * freq * i as f32 / 16000.0).sin()) as i16
            })
            .collect()
    };
    let mut tone = Vec::new();
    for _ in 0..2 {
        tone.extend(note(880.0, 300));
        tone.extend(note(660.0, 300));
    }
    tone.extend(std::iter::repeat_n(0, 16 * 1800));
    tone
}
