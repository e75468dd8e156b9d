//! The assistant on a call: greet, listen (from the first frame, model or not: see
//! `speech::listen`), answer (offline assistant, optional LLM), speak (TTS streamed sentence by
//! sentence), let the caller barge in, re-prompt a silent caller, take voicemail, hang up on goodbye.
//!
//! Nothing here blocks: recognition and synthesis run on their own threads and their results are
//! collected in `poll`, as soon as the session is woken.

mod kit;
mod message;
mod resume;

pub use kit::{Greeting, Prompts, SpeechKit, Transfer};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::assistant::{Action, Conversation, Reply};
use crate::audio::vad::VadEvent;
use crate::call::responder::{Frame16k, Outbox, Responder};
use crate::speech::listen::Listener;
use crate::speech::stt::{Heard, ModelState};
use crate::speech::tts::Speech;
use crate::telemetry::Throttle;
use crate::twilio::media::CallSid;
use resume::{Held, Unheard};

#[derive(Debug)]
enum Mode {
    /// Waiting for the model (the caller heard "one moment"); the caller is heard all the same.
    Waiting,
    Talking,
    /// Making room in the voicemail folder for the caller's message: whether there is.
    Opening(oneshot::Receiver<bool>),
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
    /// Each sentence of the current reply gets a mark of its own (`reply-<turn>.<n>`).
    sentence: u32,
    /// What the caller has not heard yet of what the box said.
    unheard: Unheard,
    /// What a sound over the box cut off, until its transcript says whether it held words.
    held: Option<Held>,
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

impl AssistantCall {
    pub fn new(kit: SpeechKit, sid: &CallSid) -> Self {
        let listener = Listener::new(kit.stt.clone(), kit.vad, kit.backlog).with_turns(kit.turns.clone());
        Self {
            kit,
            sid: sid.clone(),
            listener,
            mode: Mode::Waiting,
            conversation: Conversation::default(),
            speaking: None,
            sentence: 0,
            unheard: Unheard::default(),
            held: None,
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
            self.start_voicemail();
        } else {
            self.unheard.play(out, &self.kit.prompts.greeting.get(), "greeting");
        }
    }

    /// The caller spoke over the box (or pressed a key): stop talking and listen. A sound (`resumable`)
    /// may turn out to be a cough or a "mhm": what it cut is held until its transcript says (see
    /// [`resume`]); a key press is an answer, and the box stops for good.
    fn barge_in(&mut self, out: &mut Outbox, why: &str, resumable: bool) {
        if out.is_playing() || self.speaking.is_some() {
            info!("barge-in ({why}): reply cut");
            crate::telemetry::metrics::BARGE_INS.inc();
            let cut = if resumable { self.unheard.cut(out, self.kit.vad.min_speech) } else { None };
            out.clear();
            self.unheard.forget();
            self.drop_held();
            match cut {
                Some(mut held) => {
                    held.speech = self.speaking.take();
                    self.held = Some(held);
                    // What it cut waits for the sound's transcript: the model may end the sound's
                    // turn early, but a cough's "not yet" must not keep the reply waiting.
                    self.listener.end_by_hangover_at_the_latest();
                }
                None => {
                    if let Some((speech, _)) = self.speaking.take() {
                        speech.cancel();
                    }
                }
            }
        } else if !resumable {
            self.drop_held();
        }
    }

    /// What a sound cut off is not picked up again (the sound held words, or was a key press).
    fn drop_held(&mut self) {
        if let Some(held) = self.held.take() {
            held.drop_reply();
        }
    }

    /// The sound over the box held no words: the caller hears the rest, from the word they stopped
    /// hearing.
    fn resume(&mut self, out: &mut Outbox) {
        let Some(held) = self.held.take() else { return };
        info!(
            heard_s = format!("{:.1}", held.heard_seconds()),
            after_ms = held.ended.map_or(0, |t| t.elapsed().as_millis() as u64),
            "a short sound without words over the box: picked up where the caller stopped hearing it"
        );
        crate::telemetry::metrics::REPLIES_RESUMED.inc();
        self.speaking = held.resume(&mut self.unheard, out);
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
        if heard.trim().is_empty()
            || !matches!(self.mode, Mode::Talking)
            || self.speaking.is_some()
            || self.pending_llm.is_some()
        {
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
        self.sentence = 0;
        self.drop_held();
        info!(turn = self.turn, source = ?reply.source, "box says {:?}", reply.text);
        self.log_turn("box", &reply.text);
        self.conversation.turns.push((heard.to_owned(), reply.text.clone()));
        self.conversation.last_reply = Some(reply.text.clone());
        if reply.action == Action::HangUp {
            self.unheard.play(out, &self.kit.prompts.goodbye, "goodbye");
            out.hang_up("the caller said goodbye");
            self.mode = Mode::Closing;
            return;
        }
        if reply.action == Action::Voicemail {
            self.start_voicemail();
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
        self.sentence += 1;
        self.unheard.play(out, chunk, &format!("reply-{}.{}", self.turn, self.sentence));
    }

    /// Queues synthesised sentences as they arrive (a prepared reply's are kept for later).
    fn pump_speech(&mut self, out: &mut Outbox) {
        if let Some(p) = self.prepared.as_mut() {
            while let Ok(chunk) = p.speech.chunks.try_recv() {
                p.audio.push(chunk);
            }
        }
        if let Some(held) = self.held.as_mut() {
            while let Some(chunk) = held.speech.as_mut().and_then(|(s, _)| s.chunks.try_recv().ok()) {
                self.sentence += 1;
                held.add(chunk, format!("reply-{}.{}", self.turn, self.sentence));
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
            Heard::Tentative { text, exact } => {
                if exact && self.held.is_none() {
                    self.listener.heard_a_whole_phrase();
                }
                self.prepare(text)
            }
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
                if let Some(held) = &self.held {
                    let sound = (held.sound + self.kit.vad.min_speech).saturating_sub(self.kit.vad.hangover);
                    if resume::held_words(&text, pass, sound, self.kit.assistant.language) {
                        info!("the sound over the box was the caller talking: what it cut is dropped");
                        self.drop_held();
                    } else {
                        self.prepared = None;
                        self.resume(out);
                        return;
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
                self.drop_held();
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
                self.unheard.play(out, &self.kit.prompts.missed, "missed");
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
                self.unheard.play(out, &self.kit.prompts.one_moment, "one-moment");
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
            if audio.len() as f64 >= self.kit.voicemail_max.as_secs_f64() * 16_000.0 {
                info!(limit_s = self.kit.voicemail_max.as_secs(), "the message reached calls.voicemail_max: saved");
                self.finish_voicemail(out);
            }
            return;
        }
        if matches!(self.mode, Mode::Closing | Mode::Saving(_) | Mode::Opening(_)) {
            return;
        }
        match self.listener.hear(frame) {
            Some(VadEvent::Onset) => {
                self.last_heard = Instant::now();
                self.barge_in(out, "caller speech", true);
            }
            Some(VadEvent::End) => {
                self.last_heard = Instant::now();
                self.reprompted = false;
                if let Some(held) = self.held.as_mut() {
                    held.ended.get_or_insert_with(Instant::now);
                }
                // No recognizer to say whether the sound held words: nothing would answer them.
                if !self.listener.has_recognizer() {
                    self.resume(out);
                }
            }
            None => {}
        }
        if let Some(held) = self.held.as_mut().filter(|h| h.ended.is_none()) {
            held.sound += Duration::from_millis(20);
        }
        if self.held.as_ref().is_some_and(|h| h.ended.is_none() && h.sound > resume::LONGEST_FALSE_ALARM) {
            info!("the sound over the box went on: the caller is talking, what it cut is dropped");
            self.drop_held();
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
        self.barge_in(out, "key press", false);
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
        if let Mode::Opening(rx) = &mut self.mode {
            match rx.try_recv() {
                Ok(room) => self.voicemail_opened(room, out),
                // The check itself went away: try to take the message all the same.
                Err(oneshot::error::TryRecvError::Closed) => self.voicemail_opened(true, out),
                Err(oneshot::error::TryRecvError::Empty) => {}
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
            && self.held.is_none()
            && self.listener.pending() == 0
            && !self.listener.is_talking();
        if idle && !self.reprompted && self.last_heard.elapsed() > self.kit.reprompt_after {
            self.reprompted = true;
            self.unheard.play(out, &self.kit.prompts.reprompt, "reprompt");
        }
    }

    fn mark(&mut self, label: &str, played: bool) {
        if played {
            self.unheard.played(label);
            if let Some(held) = self.held.as_mut() {
                held.played(label);
            }
        } else {
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
