//! The assistant on a call: greet, listen (from the first frame, model or not: see
//! `speech::listen`), answer (offline assistant, optional LLM), speak (TTS streamed sentence by
//! sentence), let the caller barge in, re-prompt a silent caller, take voicemail, hang up on goodbye.
//!
//! Nothing here blocks: recognition and synthesis run on their own threads and their results are
//! collected in `poll`, as soon as the session is woken.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::responder::{tones, Frame16k, Outbox, Responder};
use crate::assistant::llm::Llm;
use crate::assistant::{Action, Assistant, Conversation, Reply};
use crate::audio::vad::{VadConfig, VadEvent};
use crate::speech::listen::Listener;
use crate::speech::stt::{Heard, ModelState, Stt};
use crate::speech::tts::{Speech, Tts};
use crate::store::Store;
use crate::telemetry::Throttle;
use crate::twilio::media::CallSid;

/// Fixed prompts, rendered once at start-up (16 kHz).
#[derive(Debug, Clone)]
pub struct Prompts {
    /// Changes when the greeting text does (from the LAN page): see [`Greeting`].
    pub greeting: Greeting,
    pub one_moment: Arc<Vec<i16>>,
    pub goodbye: Arc<Vec<i16>>,
    pub reprompt: Arc<Vec<i16>>,
    pub voicemail_intro: Arc<Vec<i16>>,
    pub voicemail_saved: Arc<Vec<i16>>,
    pub voicemail_not_saved: Arc<Vec<i16>>,
    pub trouble: Arc<Vec<i16>>,
    pub missed: Arc<Vec<i16>>,
}

impl Prompts {
    pub async fn render(tts: &Tts, assistant: &Assistant) -> Self {
        let l = assistant.language;
        let r = |text: String| async move { Arc::new(tts.prompt(&text).await) };
        Self {
            greeting: Greeting::new(r(assistant.greeting.clone()).await),
            one_moment: r(l.one_moment.into()).await,
            goodbye: r(l.goodbye.into()).await,
            reprompt: r(l.reprompt.into()).await,
            voicemail_intro: r(l.voicemail_intro.into()).await,
            voicemail_saved: r(l.voicemail_saved.into()).await,
            voicemail_not_saved: r(l.voicemail_not_saved.into()).await,
            trouble: r(l.trouble.into()).await,
            missed: r(l.missed.into()).await,
        }
    }
}

/// The greeting's audio, re-rendered when the settings change it; every call plays the current one.
pub type Greeting = crate::swap::Swap<Arc<Vec<i16>>>;

/// What every assistant call shares.
#[derive(Clone)]
pub struct SpeechKit {
    pub stt: Stt,
    pub tts: Arc<Tts>,
    pub prompts: Prompts,
    pub assistant: Arc<Assistant>,
    pub llm: Option<Llm>,
    pub vad: VadConfig,
    /// At most this much of the caller's speech waits for a recognizer (`speech.backlog`).
    pub backlog: Duration,
    pub reprompt_after: Duration,
    pub store: Store,
    pub voicemail: crate::store::Folder,
    pub store_transcripts: bool,
    /// Start every call in voicemail (`calls.answer = "voicemail"`).
    pub voicemail_only: bool,
    /// Transfers ("call Alice" during a call): the REST client, the box's number and the contacts.
    pub transfer: Option<Transfer>,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub rest: crate::twilio::rest::RestClient,
    pub caller_id: crate::config::E164,
    /// The configuration in effect, for its contacts.
    pub settings: crate::config::settings::Live,
}

impl std::fmt::Debug for SpeechKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeechKit").field("stt", &self.stt).finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Mode {
    /// Waiting for the model (the caller heard "one moment"); the caller is heard all the same.
    Waiting,
    Talking,
    /// Recording the caller's message (16 kHz).
    Recording(Vec<i16>),
    /// The message is being written; the caller hears whether it was saved once it is.
    Saving(oneshot::Receiver<bool>),
    /// Saying goodbye; nothing else happens.
    Closing,
}

/// A reply prepared while the caller paused: it renders during the hangover and is played the moment
/// the turn ends if the transcript is the one it was prepared for (else it is dropped, which cancels
/// its synthesis). Twenty calls ending a turn together then find their answers rendered.
struct Prepared {
    heard: String,
    text: String,
    speech: Speech,
    /// What has been rendered so far: taken off the channel as it comes, so the synthesis never
    /// waits for a reply nobody plays yet.
    audio: Vec<Vec<i16>>,
}

/// One assistant call.
pub struct AssistantCall {
    kit: SpeechKit,
    sid: CallSid,
    listener: Listener,
    mode: Mode,
    conversation: Conversation,
    /// The reply being synthesised, and what to do once it has all been queued.
    speaking: Option<(Speech, Action)>,
    prepared: Option<Prepared>,
    pending_llm: Option<(String, oneshot::Receiver<Option<String>>)>,
    last_heard: Instant,
    /// When the last transcript arrived (for the turn's timing line).
    heard_at: Option<Instant>,
    reprompted: bool,
    turn: u32,
    /// Wakes the session when a result (transcript, speech, LLM answer, recognizer) is ready.
    waker: Arc<tokio::sync::Notify>,
    /// Orders this call's transcript lines (they are written by separate tasks).
    logged: u32,
}

impl std::fmt::Debug for AssistantCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssistantCall").field("sid", &self.sid).field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// The message's free-form transcript, stored with it: after the call, off its hot path (waits for
/// the model if the box has only just started).
async fn transcribe_message(stt: Stt, store: Store, sid: CallSid, audio: Arc<Vec<i16>>) {
    if tokio::time::timeout(Duration::from_secs(120), stt.loaded()).await.is_err() {
        warn!(call = %sid, "voicemail not transcribed: the speech model is still loading");
        return;
    }
    let text = stt.transcribe_free(audio).await;
    let Some(text) = text else {
        warn!(call = %sid, "voicemail not transcribed: no speech model");
        return;
    };
    info!(call = %sid, words = text.split_whitespace().count(), "voicemail transcribed");
    if let Err(e) = store.voicemail_transcribed(&sid, &text).await {
        warn!(call = %sid, "voicemail transcript not saved: {e}");
    }
}

/// A short beep before recording.
fn beep() -> Vec<i16> {
    tones(&[1000.0], 0.25, 9000.0)
}

impl AssistantCall {
    pub fn new(kit: SpeechKit, sid: &CallSid) -> Self {
        let listener = Listener::new(kit.stt.clone(), kit.vad, kit.backlog);
        Self {
            kit,
            sid: sid.clone(),
            listener,
            mode: Mode::Waiting,
            conversation: Conversation::default(),
            speaking: None,
            prepared: None,
            pending_llm: None,
            last_heard: Instant::now(),
            heard_at: None,
            reprompted: false,
            turn: 0,
            waker: Arc::default(),
            logged: 0,
        }
    }

    fn log_turn(&mut self, speaker: &'static str, text: &str) {
        if !self.kit.store_transcripts || text.is_empty() {
            return;
        }
        self.logged += 1;
        let (store, sid, text, seq) = (self.kit.store.clone(), self.sid.clone(), text.to_owned(), self.logged);
        tokio::spawn(async move {
            if let Err(e) = store.add_turn(&sid, seq, speaker, &text).await {
                warn!(call = %sid, "transcript not saved: {e}");
            }
        });
    }

    fn begin(&mut self, out: &mut Outbox) {
        self.mode = Mode::Talking;
        self.last_heard = Instant::now();
        if self.kit.voicemail_only {
            self.start_voicemail(out);
        } else {
            out.play(&self.kit.prompts.greeting.get(), "greeting");
        }
    }

    fn start_voicemail(&mut self, out: &mut Outbox) {
        out.play(&self.kit.prompts.voicemail_intro, "voicemail-intro");
        out.play(&beep(), "beep");
        self.mode = Mode::Recording(Vec::with_capacity(16000 * 60));
        info!("recording a voicemail");
    }

    fn finish_voicemail(&mut self, out: &mut Outbox) {
        out.clear();
        match self.save_voicemail() {
            Some(saved) => self.mode = Mode::Saving(saved),
            None => self.voicemail_written(true, out), // nothing was said: nothing lost
        }
    }

    /// The caller hears whether their message was stored, then the box hangs up.
    fn voicemail_written(&mut self, saved: bool, out: &mut Outbox) {
        self.mode = Mode::Closing;
        if saved {
            out.play(&self.kit.prompts.voicemail_saved, "voicemail-saved");
            out.hang_up("voicemail saved");
        } else {
            out.play(&self.kit.prompts.voicemail_not_saved, "voicemail-not-saved");
            out.hang_up("the voicemail could not be saved");
        }
    }

    /// Writes the message being recorded (then notes it in the call log and transcribes it, off the
    /// call); `None` if there was nothing to save, else whether the file was written (whole or not at
    /// all: a full card or a kill must not leave a broken message behind; see
    /// [`crate::store::Store::reconcile_voicemail`] for a kill between the file and its row).
    fn save_voicemail(&mut self) -> Option<oneshot::Receiver<bool>> {
        let Mode::Recording(audio) = std::mem::replace(&mut self.mode, Mode::Closing) else { return None };
        if audio.is_empty() {
            return None;
        }
        let folder = self.kit.voicemail.clone();
        let (store, sid, stt, waker) =
            (self.kit.store.clone(), self.sid.clone(), self.kit.stt.clone(), self.waker.clone());
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let audio = Arc::new(audio);
            let written = {
                let (folder, sid, audio) = (folder.clone(), sid.clone(), audio.clone());
                tokio::task::spawn_blocking(move || folder.write_recording(sid.as_str(), &audio)).await
            };
            let written = match written {
                Ok(Ok(path)) => Ok(path),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send(written.is_ok());
            waker.notify_one();
            let path = match written {
                Ok(path) => path,
                Err(why) => {
                    error!(call = %sid, "voicemail not saved in {}: {why}", folder.path().display());
                    return;
                }
            };
            info!(call = %sid, path = %path.display(), "voicemail saved");
            if let Err(e) = store.voicemail_saved(&sid, &path).await {
                warn!(call = %sid, "voicemail not noted in the call log: {e}");
            }
            transcribe_message(stt, store, sid, audio).await;
        });
        Some(rx)
    }

    /// The caller spoke over the box: stop talking and listen.
    fn barge_in(&mut self, out: &mut Outbox, why: &str) {
        if out.is_playing() || self.speaking.is_some() {
            info!("barge-in ({why}): reply cut");
            crate::telemetry::metrics::BARGE_INS.inc();
            out.clear();
            if let Some((speech, _)) = self.speaking.take() {
                speech.cancel();
            }
        }
    }

    /// The answer the box gives without asking the LLM: the rules', or the fallback when there is no
    /// LLM to ask.
    fn offline_reply(&self, heard: &str) -> Option<Reply> {
        let understood = self.kit.assistant.understand(heard, &self.conversation);
        understood.or_else(|| self.kit.llm.is_none().then(|| self.kit.assistant.fallback()))
    }

    fn answer(&mut self, heard: String, out: &mut Outbox) {
        info!(turn = self.turn, "caller said {:?}", heard);
        self.log_turn("caller", &heard);
        if let Some(reply) = self.offline_reply(&heard) {
            self.say(reply, &heard, out);
            return;
        }
        let Some(llm) = self.kit.llm.clone() else { return };
        let (tx, rx) = oneshot::channel();
        let (question, history) = (heard.clone(), self.conversation.turns.clone());
        let waker = self.waker.clone();
        tokio::spawn(async move {
            let answer = match llm.ask(&question, &history).await {
                Ok(text) => Some(text),
                Err(e) => {
                    warn!("{e}: answering offline");
                    None
                }
            };
            let _ = tx.send(answer);
            waker.notify_one();
        });
        self.pending_llm = Some((heard, rx));
    }

    /// The caller paused and the recognizer says what they said if that was the end: render the
    /// answer now, during the hangover (only a plain spoken answer; hanging up, voicemail, transfers
    /// and the LLM wait for the turn's end).
    fn prepare(&mut self, heard: String) {
        if !matches!(self.mode, Mode::Talking) || self.speaking.is_some() || self.pending_llm.is_some() {
            return;
        }
        if self.prepared.as_ref().is_some_and(|p| p.heard == heard) {
            return;
        }
        self.prepared = None;
        let Some(reply) = self.offline_reply(&heard).filter(|r| r.action == Action::None) else { return };
        debug!(heard = %heard, "a pause: preparing the reply");
        let speech = self.kit.tts.speak_waking(&reply.text, Some(self.waker.clone()));
        self.prepared = Some(Prepared { heard, text: reply.text, speech, audio: Vec::new() });
    }

    fn say(&mut self, reply: Reply, heard: &str, out: &mut Outbox) {
        self.turn += 1;
        info!(turn = self.turn, source = ?reply.source, "box says {:?}", reply.text);
        self.log_turn("box", &reply.text);
        self.conversation.turns.push((heard.to_owned(), reply.text.clone()));
        self.conversation.last_reply = Some(reply.text.clone());
        if reply.action == Action::HangUp {
            out.play(&self.kit.prompts.goodbye, "goodbye");
            out.hang_up("the caller said goodbye");
            self.mode = Mode::Closing;
            return;
        }
        if reply.action == Action::Voicemail {
            self.start_voicemail(out);
            return;
        }
        let text = match (&reply.action, &self.kit.transfer) {
            (Action::Call(_), None) => self.kit.assistant.language.trouble.to_owned(),
            _ => reply.text.clone(),
        };
        let speech = match self.prepared.take() {
            Some(p) if p.heard == heard && p.text == text && reply.action == Action::None => {
                debug!(turn = self.turn, chunks = p.audio.len(), "the reply was prepared during the pause");
                for chunk in &p.audio {
                    self.play_reply(chunk, out);
                }
                p.speech
            }
            _ => self.kit.tts.speak_waking(&text, Some(self.waker.clone())),
        };
        self.speaking = Some((speech, reply.action));
    }

    fn play_reply(&mut self, chunk: &[i16], out: &mut Outbox) {
        if let Some(heard) = self.heard_at.take() {
            debug!(turn = self.turn, ms = heard.elapsed().as_millis() as u64, "transcript -> first reply audio");
            crate::telemetry::metrics::TURN_LATENCY.observe(heard.elapsed());
        }
        out.play(chunk, &format!("reply-{}", self.turn))
    }

    /// Queues synthesised sentences as they arrive (a prepared reply's are kept for later).
    fn pump_speech(&mut self, out: &mut Outbox) {
        if let Some(p) = self.prepared.as_mut() {
            while let Ok(chunk) = p.speech.chunks.try_recv() {
                p.audio.push(chunk);
            }
        }
        loop {
            let Some((speech, _)) = self.speaking.as_mut() else { return };
            match speech.chunks.try_recv() {
                Ok(chunk) => self.play_reply(&chunk, out),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    if let Some((_, Action::Call(name))) = self.speaking.take() {
                        self.transfer_to(&name);
                    }
                    return;
                }
            }
        }
    }
}

impl AssistantCall {
    /// Connects the caller to a contact: Twilio replaces this call's stream with a `<Dial>`.
    fn transfer_to(&mut self, name: &str) {
        let Some(transfer) = self.kit.transfer.clone() else { return };
        let contact = transfer.settings.get().contacts.iter().find(|c| c.name == name).cloned();
        let Some(contact) = contact else { return };
        info!(contact = %contact.number, "transferring the caller to {name}");
        self.mode = Mode::Closing;
        let sid = self.sid.clone();
        tokio::spawn(async move {
            let twiml = crate::twilio::twiml::dial(contact.number.as_str(), transfer.caller_id.as_str());
            if let Err(e) = transfer.rest.redirect(&sid, &twiml).await {
                warn!(call = %sid, "transfer to {} failed: {e}", contact.name);
            }
        });
    }
}

/// One line per ten seconds for the whole box, however many calls lag.
static LAGGING: Throttle = Throttle::new(Duration::from_secs(10));
static MISSING: Throttle = Throttle::new(Duration::from_secs(10));

impl AssistantCall {
    /// The model is loaded (or failed) while the caller holds: start the conversation. A caller who
    /// already spoke is answered first, without a greeting in the way.
    fn model_arrived(&mut self, out: &mut Outbox) {
        let spoke = self.listener.pending() > 0 || self.listener.is_talking();
        if self.listener.try_lease() && spoke {
            info!("the caller spoke while holding: answering that first");
            self.mode = Mode::Talking;
            self.last_heard = Instant::now();
        } else {
            self.begin(out);
        }
    }

    fn heard(&mut self, heard: Heard, out: &mut Outbox) {
        match heard {
            Heard::Tentative(text) => self.prepare(text),
            Heard::Final { text, lag, decode, pass } => {
                debug!(?pass, decode_ms = decode.as_millis() as u64, lag_ms = lag.as_millis() as u64, "transcript");
                self.heard_at = Some(Instant::now());
                crate::telemetry::metrics::RECOGNIZER_LAG.observe(lag);
                if lag > Duration::from_secs(1) {
                    if let Some(more) = LAGGING.check() {
                        warn!(
                            "recognition is {:.1} s behind real time (backlog {:.1} s; {more} more such turns since the last line)",
                            lag.as_secs_f64(),
                            self.listener.backlog().as_secs_f64()
                        );
                    }
                }
                if !text.trim().is_empty() {
                    self.answer(text, out);
                }
                // Prepared for another transcript (or for one the LLM answers): not wanted.
                self.prepared = None;
            }
            Heard::Missed => {
                self.prepared = None;
                let dropped = self.listener.take_dropped();
                if let Some(more) = MISSING.check() {
                    warn!(
                        "recognition fell {} s behind: {:.1} s of the caller's speech let go, asked to repeat \
                         ({more} more such turns since the last line)",
                        self.kit.backlog.as_secs(),
                        dropped as f64 * 0.02
                    );
                }
                self.log_turn("caller", "[missed]");
                out.play(&self.kit.prompts.missed, "missed");
            }
        }
    }
}

impl Responder for AssistantCall {
    fn start(&mut self, out: &mut Outbox, waker: Arc<tokio::sync::Notify>) {
        self.listener.set_waker(waker.clone());
        self.waker = waker;
        if self.kit.voicemail_only {
            // Taking a message needs no speech model: never make a caller hold for it.
            self.begin(out);
            return;
        }
        match self.kit.stt.state() {
            ModelState::Loading => {
                info!("speech model still loading: asking the caller to hold (and listening)");
                out.play(&self.kit.prompts.one_moment, "one-moment");
            }
            ModelState::Downloading | ModelState::Warming | ModelState::Ready | ModelState::Failed(_) => {
                // Downloading or failed: no recognition (yet: a download may finish during the
                // call), but the DTMF menu and voicemail work; no caller holds for a download.
                self.listener.try_lease();
                self.begin(out);
            }
        }
    }

    fn hear(&mut self, frame: &Frame16k, out: &mut Outbox) {
        if let Mode::Recording(audio) = &mut self.mode {
            audio.extend_from_slice(frame);
            return;
        }
        if matches!(self.mode, Mode::Closing | Mode::Saving(_)) {
            return;
        }
        match self.listener.hear(frame) {
            Some(VadEvent::Onset) => {
                self.last_heard = Instant::now();
                self.barge_in(out, "caller speech");
            }
            Some(VadEvent::End) => {
                self.last_heard = Instant::now();
                self.reprompted = false;
            }
            None => {}
        }
    }

    fn dtmf(&mut self, digit: char, out: &mut Outbox) {
        self.last_heard = Instant::now();
        if matches!(self.mode, Mode::Recording(_)) {
            if digit == '#' {
                self.finish_voicemail(out);
            }
            return;
        }
        if !matches!(self.mode, Mode::Talking) {
            return;
        }
        self.barge_in(out, "key press");
        if let Some(reply) = self.kit.assistant.menu(digit, &self.conversation) {
            self.say(reply, &format!("[key {digit}]"), out);
        }
    }

    fn poll(&mut self, out: &mut Outbox) {
        if matches!(self.mode, Mode::Waiting) && self.kit.stt.state() != ModelState::Loading {
            self.model_arrived(out);
        }
        if matches!(self.mode, Mode::Talking) && !self.listener.has_recognizer() && self.kit.stt.state().can_hear() {
            self.listener.try_lease();
        }
        while let Some(heard) = self.listener.poll() {
            if matches!(self.mode, Mode::Talking) {
                self.heard(heard, out);
            }
        }
        if let Mode::Saving(rx) = &mut self.mode {
            match rx.try_recv() {
                Ok(saved) => self.voicemail_written(saved, out),
                Err(oneshot::error::TryRecvError::Closed) => self.voicemail_written(false, out),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        if let Some((heard, rx)) = self.pending_llm.as_mut() {
            match rx.try_recv() {
                Ok(answer) => {
                    let heard = std::mem::take(heard);
                    self.pending_llm = None;
                    let reply = match answer {
                        Some(text) => Reply { text, action: Action::None, source: crate::assistant::Source::Llm },
                        None => self.kit.assistant.fallback(),
                    };
                    self.say(reply, &heard, out);
                }
                Err(oneshot::error::TryRecvError::Closed) => self.pending_llm = None,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        self.pump_speech(out);
        let idle = matches!(self.mode, Mode::Talking)
            && !out.is_playing()
            && self.speaking.is_none()
            && self.listener.pending() == 0
            && !self.listener.is_talking();
        if idle && !self.reprompted && self.last_heard.elapsed() > self.kit.reprompt_after {
            self.reprompted = true;
            out.play(&self.kit.prompts.reprompt, "reprompt");
        }
    }

    fn mark(&mut self, label: &str, played: bool) {
        if !played {
            info!(%label, "cut by barge-in");
        }
        if played && matches!(self.mode, Mode::Talking) {
            self.last_heard = Instant::now();
        }
    }

    fn end(&mut self) {
        // The caller hung up while recording: the message is saved all the same (nobody to tell).
        let _ = self.save_voicemail();
    }
}
