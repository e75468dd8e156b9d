//! The assistant on a call: greet, listen (VAD endpointing, VOSK on a leased worker), answer
//! (offline assistant, optional LLM), speak (TTS streamed sentence by sentence), let the caller
//! barge in, re-prompt a silent caller, take voicemail, hang up on goodbye.
//!
//! Nothing here blocks: recognition and synthesis run on their own threads and their results are
//! collected in `poll`, every 50 ms.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::responder::{tones, Frame16k, Outbox, Responder};
use crate::assistant::llm::Llm;
use crate::assistant::{Action, Assistant, Conversation, Reply};
use crate::audio::vad::{Vad, VadConfig, VadEvent};
use crate::speech::stt::{Heard, Lease, ModelState, Stt};
use crate::speech::tts::{Speech, Tts};
use crate::store::Store;
use crate::twilio::media::CallSid;

/// Fixed prompts, rendered once at start-up (16 kHz).
#[derive(Debug, Clone)]
pub struct Prompts {
    pub greeting: Arc<Vec<i16>>,
    pub one_moment: Arc<Vec<i16>>,
    pub goodbye: Arc<Vec<i16>>,
    pub reprompt: Arc<Vec<i16>>,
    pub voicemail_intro: Arc<Vec<i16>>,
    pub voicemail_saved: Arc<Vec<i16>>,
    pub trouble: Arc<Vec<i16>>,
}

impl Prompts {
    pub async fn render(tts: &Tts, assistant: &Assistant) -> Self {
        let l = assistant.language;
        let r = |text: String| async move { Arc::new(tts.render(&text).await) };
        Self {
            greeting: r(assistant.greeting.clone()).await,
            one_moment: r(l.one_moment.into()).await,
            goodbye: r(l.goodbye.into()).await,
            reprompt: r(l.reprompt.into()).await,
            voicemail_intro: r(l.voicemail_intro.into()).await,
            voicemail_saved: r(l.voicemail_saved.into()).await,
            trouble: r(l.trouble.into()).await,
        }
    }
}

/// What every assistant call shares.
#[derive(Clone)]
pub struct SpeechKit {
    pub stt: Stt,
    pub tts: Arc<Tts>,
    pub prompts: Prompts,
    pub assistant: Arc<Assistant>,
    pub llm: Option<Llm>,
    pub vad: VadConfig,
    pub reprompt_after: Duration,
    pub store: Store,
    pub voicemail_dir: PathBuf,
    pub store_transcripts: bool,
    /// Start every call in voicemail (`calls.answer = "voicemail"`).
    pub voicemail_only: bool,
    /// Grammar mode: what recognizers may hear; transcripts are mapped onto the closest phrase.
    pub grammar: Option<Arc<Vec<String>>>,
    /// Transfers ("call Alice" during a call): the REST client, the box's number and the contacts.
    pub transfer: Option<Transfer>,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub rest: crate::twilio::rest::RestClient,
    pub caller_id: crate::config::E164,
    pub contacts: Vec<crate::config::Contact>,
}

impl std::fmt::Debug for SpeechKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeechKit").field("stt", &self.stt).finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Mode {
    /// Waiting for the model (the caller heard "one moment").
    Waiting,
    Talking,
    /// Recording the caller's message (16 kHz).
    Recording(Vec<i16>),
    /// Saying goodbye; nothing else happens.
    Closing,
}

/// One assistant call.
pub struct AssistantCall {
    kit: SpeechKit,
    sid: CallSid,
    lease: Option<Lease>,
    pending_lease: Option<oneshot::Receiver<Option<Lease>>>,
    vad: Vad,
    mode: Mode,
    conversation: Conversation,
    /// The reply being synthesised, and what to do once it has all been queued.
    speaking: Option<(Speech, Action)>,
    pending_llm: Option<(String, oneshot::Receiver<Option<String>>)>,
    last_heard: Instant,
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

/// A short beep before recording.
fn beep() -> Vec<i16> {
    tones(&[1000.0], 0.25, 9000.0)
}

impl AssistantCall {
    pub fn new(kit: SpeechKit, sid: &CallSid) -> Self {
        let vad = Vad::new(kit.vad);
        Self {
            kit,
            sid: sid.clone(),
            lease: None,
            pending_lease: None,
            vad,
            mode: Mode::Waiting,
            conversation: Conversation::default(),
            speaking: None,
            pending_llm: None,
            last_heard: Instant::now(),
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
            if let Err(e) = store.add_turn(sid.as_str(), seq, speaker, &text).await {
                warn!(call = %sid, "transcript not saved: {e}");
            }
        });
    }

    /// Gets a recognizer: a warm one at once, else a new one made off the async runtime.
    fn request_lease(&mut self) {
        if let Some(lease) = self.kit.stt.try_lease() {
            lease.wake(self.waker.clone());
            self.lease = Some(lease);
            return;
        }
        let (tx, rx) = oneshot::channel();
        let (stt, waker) = (self.kit.stt.clone(), self.waker.clone());
        tokio::task::spawn_blocking(move || {
            let lease = stt.lease();
            if let Some(lease) = &lease {
                lease.wake(waker.clone());
            }
            let _ = tx.send(lease);
            waker.notify_one();
        });
        self.pending_lease = Some(rx);
    }

    fn begin(&mut self, out: &mut Outbox) {
        self.mode = Mode::Talking;
        self.last_heard = Instant::now();
        if self.kit.voicemail_only {
            self.start_voicemail(out);
        } else {
            out.play(&self.kit.prompts.greeting, "greeting");
        }
    }

    fn start_voicemail(&mut self, out: &mut Outbox) {
        out.play(&self.kit.prompts.voicemail_intro, "voicemail-intro");
        out.play(&beep(), "beep");
        self.mode = Mode::Recording(Vec::with_capacity(16000 * 60));
        info!("recording a voicemail");
    }

    fn finish_voicemail(&mut self, out: &mut Outbox) {
        self.save_voicemail();
        out.clear();
        out.play(&self.kit.prompts.voicemail_saved, "voicemail-saved");
        out.hang_up("voicemail saved");
        self.mode = Mode::Closing;
    }

    fn save_voicemail(&mut self) {
        let Mode::Recording(audio) = std::mem::replace(&mut self.mode, Mode::Closing) else { return };
        if audio.is_empty() {
            return;
        }
        let dir = self.kit.voicemail_dir.clone();
        let path = dir.join(format!("{}-{}.wav", self.sid, crate::store::now_ms()));
        let (store, sid) = (self.kit.store.clone(), self.sid.clone());
        tokio::spawn(async move {
            let written = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&dir)?;
                    crate::audio::wav::write(&path, 16000, &audio)
                })
                .await
            };
            match written {
                Ok(Ok(())) => {
                    info!(call = %sid, path = %path.display(), "voicemail saved");
                    if let Err(e) = store.voicemail_saved(sid.as_str(), &path).await {
                        warn!(call = %sid, "voicemail not noted in the call log: {e}");
                    }
                }
                Ok(Err(e)) => warn!(call = %sid, "voicemail not saved to {}: {e}", path.display()),
                Err(e) => warn!(call = %sid, "voicemail not saved: {e}"),
            }
        });
    }

    /// The caller spoke over the box: stop talking and listen.
    fn barge_in(&mut self, out: &mut Outbox, why: &str) {
        if out.is_playing() || self.speaking.is_some() {
            info!("barge-in ({why}): reply cut");
            out.clear();
            if let Some((speech, _)) = self.speaking.take() {
                speech.cancel();
            }
        }
    }

    fn answer(&mut self, heard: String, out: &mut Outbox) {
        info!(turn = self.turn, "caller said {:?}", heard);
        let heard = match &self.kit.grammar {
            Some(phrases) => crate::assistant::pick_phrase(&heard, phrases).map_or(heard.clone(), str::to_owned),
            None => heard,
        };
        self.log_turn("caller", &heard);
        if let Some(reply) = self.kit.assistant.understand(&heard, &self.conversation) {
            self.say(reply, &heard, out);
            return;
        }
        match &self.kit.llm {
            Some(llm) => {
                let (tx, rx) = oneshot::channel();
                let (llm, question, history) = (llm.clone(), heard.clone(), self.conversation.turns.clone());
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
            None => {
                let fallback = self.kit.assistant.fallback();
                self.say(fallback, &heard, out);
            }
        }
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
        self.speaking = Some((self.kit.tts.speak_waking(&text, Some(self.waker.clone())), reply.action));
    }

    /// Queues synthesised sentences as they arrive.
    fn pump_speech(&mut self, out: &mut Outbox) {
        let Some((speech, _)) = self.speaking.as_mut() else { return };
        loop {
            match speech.chunks.try_recv() {
                Ok(chunk) => out.play(&chunk, &format!("reply-{}", self.turn)),
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
        let Some(contact) = transfer.contacts.iter().find(|c| c.name == name).cloned() else { return };
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

impl Responder for AssistantCall {
    fn start(&mut self, out: &mut Outbox, waker: Arc<tokio::sync::Notify>) {
        self.waker = waker;
        match self.kit.stt.state() {
            ModelState::Ready => {
                self.request_lease();
                self.begin(out);
            }
            ModelState::Loading => {
                info!("speech model still loading: asking the caller to hold");
                out.play(&self.kit.prompts.one_moment, "one-moment");
            }
            ModelState::Failed(_) => {
                // No recognition: the DTMF menu and voicemail still work.
                self.begin(out);
            }
        }
    }

    fn hear(&mut self, frame: &Frame16k, out: &mut Outbox) {
        if let Mode::Recording(audio) = &mut self.mode {
            audio.extend_from_slice(frame);
            return;
        }
        if !matches!(self.mode, Mode::Talking) {
            return;
        }
        if let Some(lease) = &self.lease {
            lease.feed(frame);
        }
        match self.vad.push(frame) {
            Some(VadEvent::Onset) => {
                self.last_heard = Instant::now();
                self.barge_in(out, "caller speech");
            }
            Some(VadEvent::End) => {
                self.last_heard = Instant::now();
                self.reprompted = false;
                if let Some(lease) = &self.lease {
                    lease.finish();
                }
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
            if self.kit.stt.state() == ModelState::Ready {
                self.request_lease();
            }
            self.begin(out);
        }
        if let Some(rx) = self.pending_lease.as_mut() {
            match rx.try_recv() {
                Ok(lease) => {
                    self.lease = lease;
                    self.pending_lease = None;
                }
                Err(oneshot::error::TryRecvError::Closed) => self.pending_lease = None,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        while let Some(heard) = self.lease.as_ref().and_then(Lease::poll) {
            if !matches!(self.mode, Mode::Talking) {
                continue;
            }
            match heard {
                Heard::Partial(_) if out.is_playing() && self.vad.is_talking() => {
                    self.barge_in(out, "words recognised")
                }
                Heard::Partial(_) => {}
                Heard::Final { text, .. } if !text.trim().is_empty() => self.answer(text, out),
                Heard::Final { .. } => {}
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
            && !self.vad.is_talking();
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
        self.save_voicemail();
    }
}
