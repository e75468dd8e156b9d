//! One call's Media Stream: checks the stream's token before allocating anything, then runs the
//! call: caller audio (mu-law 8 kHz) -> 16 kHz -> responder; responder audio -> 8 kHz mu-law ->
//! paced 20 ms frames, marks, `clear` for barge-in, DTMF, max duration and silence timeout.
//!
//! Written against any `Stream<Item = String>` / `Sink<String>` of JSON text messages, so a test
//! drives a whole call through channels and the HTTP layer plugs in a WebSocket.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Serialize;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::registry::{Registry, TokenError};
use super::responder::{Outbox, Purpose, ResponderFactory, FRAME_16K};
use crate::audio::g711::{self, FRAME_8K};
use crate::audio::pacer::Pacer;
use crate::audio::resample::{Downsampler, Upsampler};
use crate::store::{Outcome, Store};
use crate::twilio::media::{encode_frame, CallSid, Inbound, MarkOut, MediaOut, Outbound, FRAME_B64, MAX_MEDIA_BYTES};
use crate::twilio::rest::RestClient;

/// How often a call polls its responder and checks for silence (audio is paced separately).
const HOUSEKEEPING: Duration = Duration::from_millis(50);
/// After the last words before a hang-up, how long to wait for Twilio to confirm they were played.
const GOODBYE_GRACE: Duration = Duration::from_millis(1500);
/// How long a new stream may take to send `start`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Twilio sends `connected` and then `start`: a stream that sends more than this before `start` is
/// not Twilio and is closed (nothing is allocated for it, and it cannot fill the log).
const MAX_BEFORE_START: usize = 4;
/// Mean absolute amplitude (8 kHz) above which a frame counts as the caller speaking.
const VOICE_LEVEL: u32 = 300;

/// What every session shares.
#[derive(Clone)]
pub struct SessionContext {
    pub registry: Arc<Registry>,
    pub store: Store,
    pub responders: ResponderFactory,
    pub max_duration: Duration,
    pub silence_timeout: Duration,
    pub shutdown: CancellationToken,
    /// Hangs up through Twilio's API when the box ends a call (if credentials are configured).
    pub rest: Option<RestClient>,
}

impl std::fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionContext").field("max_duration", &self.max_duration).finish_non_exhaustive()
    }
}

/// Counters for one call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub frames_in: u64,
    pub frames_out: u64,
    pub marks_played: u64,
    pub marks_cut: u64,
    pub dtmf: u64,
    pub bad_messages: u64,
}

#[derive(Debug)]
pub enum Ended {
    /// The stream's token was not valid: close with a policy violation; nothing was allocated.
    Refused(TokenError),
    /// The stream never said `start`.
    NoStart,
    Call {
        sid: CallSid,
        outcome: Outcome,
        reason: String,
        stats: Stats,
    },
}

/// Finalises the call even if the session panics or is dropped mid-call.
struct Finish {
    sid: CallSid,
    registry: Arc<Registry>,
    store: Store,
    done: bool,
}

impl Drop for Finish {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        warn!(call = %self.sid, "the call's session stopped abnormally: call logged as failed");
        self.registry.end(&self.sid);
        let (store, sid) = (self.store.clone(), self.sid.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.call_ended(&sid, Outcome::Failed, Some("the call's session crashed")).await;
            });
        }
    }
}

/// Runs one Media Stream to its end.
pub async fn run<S, K>(mut inbound: S, mut outbound: K, ctx: &SessionContext) -> Ended
where
    S: Stream<Item = String> + Unpin,
    K: Sink<String> + Unpin,
    K::Error: Display,
{
    let start_by = sleep_until(Instant::now() + START_TIMEOUT);
    tokio::pin!(start_by);
    let mut before_start = 0;
    let (stream_sid, start) = loop {
        let next = tokio::select! {
            next = inbound.next() => next,
            () = &mut start_by => None,
            () = ctx.shutdown.cancelled() => return Ended::NoStart,
        };
        let Some(text) = next else {
            warn!("a media stream closed or stayed silent without a start event");
            return Ended::NoStart;
        };
        match Inbound::parse(&text) {
            Ok(Inbound::Start { stream_sid, start }) => break (stream_sid, start),
            Ok(Inbound::Connected { .. }) => debug!("media stream connected"),
            Ok(other) => debug!("ignoring {other:?} before start"),
            Err(e) => debug!("before start: {e}"),
        }
        before_start += 1;
        if before_start > MAX_BEFORE_START {
            warn!("a media stream sent {before_start} messages without a start event: closed");
            return Ended::NoStart;
        }
    };
    let sid = start.call_sid.clone();
    let (hangup, purpose) = match ctx.registry.claim_stream(
        start.custom_parameters.get("token").map(String::as_str),
        &sid,
        Instant::now().into(),
    ) {
        Ok(signal) => signal,
        Err(e) => {
            warn!(call = %sid, "media stream refused: {e}");
            return Ended::Refused(e);
        }
    };
    let mut finish = Finish { sid: sid.clone(), registry: ctx.registry.clone(), store: ctx.store.clone(), done: false };
    if let Err(e) = start.check_format() {
        warn!(call = %sid, "{e}");
        return end(ctx, &mut finish, &mut outbound, Outcome::Failed, e.to_string(), false, Stats::default()).await;
    }
    let span = info_span!("call", sid = %sid);
    async {
        info!("media stream started");
        if let Err(e) = ctx.store.call_answered(&sid).await {
            warn!("call log: {e}");
        }
        let mut call = Call::new(stream_sid.to_string(), &sid, purpose, ctx);
        let (outcome, reason, box_hung_up) = call.converse(&mut inbound, &mut outbound, &hangup).await;
        call.responder.end();
        end(ctx, &mut finish, &mut outbound, outcome, reason, box_hung_up, call.stats).await
    }
    .instrument(span)
    .await
}

async fn end<K>(
    ctx: &SessionContext,
    finish: &mut Finish,
    outbound: &mut K,
    outcome: Outcome,
    reason: String,
    box_hung_up: bool,
    stats: Stats,
) -> Ended
where
    K: Sink<String> + Unpin,
{
    finish.done = true;
    let sid = finish.sid.clone();
    let _ = outbound.close().await;
    info!(
        outcome = outcome.as_str(),
        %reason,
        frames_in = stats.frames_in,
        frames_out = stats.frames_out,
        bad_messages = stats.bad_messages,
        "call ended"
    );
    if let Err(e) = ctx.store.call_ended(&sid, outcome, Some(&reason)).await {
        warn!("call log: {e}");
    }
    // Only now does the call leave the registry: a webhook for it in between still finds it
    // streaming, and after it finds it ended in the log (never a gap in which it looks new).
    ctx.registry.end(&sid);
    if box_hung_up {
        if let Some(rest) = ctx.rest.clone() {
            let sid = sid.clone();
            tokio::spawn(async move {
                if let Err(e) = rest.hang_up(&sid).await {
                    warn!(call = %sid, "hang-up through the API failed: {e}");
                }
            });
        }
    }
    Ended::Call { sid, outcome, reason, stats }
}

/// The state of a call in progress; every buffer is allocated once, here.
struct Call<'c> {
    ctx: &'c SessionContext,
    stream_sid: String,
    responder: Box<dyn super::responder::Responder>,
    out: Outbox,
    up: Upsampler,
    down: Downsampler,
    pacer: Pacer,
    mulaw: Box<[u8; MAX_MEDIA_BYTES]>,
    pcm8: [i16; FRAME_8K],
    filled: usize,
    frame16: [i16; FRAME_16K],
    json: Vec<u8>,
    b64: [u8; FRAME_B64],
    /// Marks sent and not yet echoed; `true` once a `clear` cut them.
    outstanding: Vec<(String, bool)>,
    last_activity: Instant,
    stats: Stats,
}

impl<'c> Call<'c> {
    fn new(stream_sid: String, sid: &CallSid, purpose: Purpose, ctx: &'c SessionContext) -> Self {
        Self {
            ctx,
            stream_sid,
            responder: (ctx.responders)(sid, purpose),
            out: Outbox::default(),
            up: Upsampler::default(),
            down: Downsampler::default(),
            pacer: Pacer::media(),
            mulaw: Box::new([0; MAX_MEDIA_BYTES]),
            pcm8: [0; FRAME_8K],
            filled: 0,
            frame16: [0; FRAME_16K],
            json: Vec::with_capacity(512),
            b64: [0; FRAME_B64],
            outstanding: Vec::new(),
            last_activity: Instant::now(),
            stats: Stats::default(),
        }
    }

    /// The call loop. Returns how it ended and whether the box ended it.
    async fn converse<S, K>(
        &mut self,
        inbound: &mut S,
        outbound: &mut K,
        hangup: &CancellationToken,
    ) -> (Outcome, String, bool)
    where
        S: Stream<Item = String> + Unpin,
        K: Sink<String> + Unpin,
        K::Error: Display,
    {
        let deadline = Instant::now() + self.ctx.max_duration;
        let mut tick = interval(HOUSEKEEPING);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let waker = Arc::new(tokio::sync::Notify::new());
        self.responder.start(&mut self.out, waker.clone());
        let mut goodbye_sent: Option<Instant> = None;
        loop {
            if let Err(e) = self.flush_signals(outbound).await {
                return (Outcome::Completed, format!("stream closed: {e}"), false);
            }
            if let Some(reason) = self.out.hangup.clone().filter(|_| !self.out.is_playing()) {
                // Let the caller hear the last words: wait for their marks (Twilio echoes a mark
                // once the audio before it has played), but not for ever.
                let sent = *goodbye_sent.get_or_insert_with(Instant::now);
                if self.outstanding.iter().all(|(_, cut)| *cut) || sent.elapsed() > GOODBYE_GRACE {
                    return (Outcome::Completed, format!("box hung up: {reason}"), true);
                }
            }
            let due = self.out.is_playing().then(|| self.pacer.next_due(std::time::Instant::now()).into());
            tokio::select! {
                biased;
                () = self.ctx.shutdown.cancelled() => return (Outcome::Interrupted, "the box is shutting down".into(), true),
                () = hangup.cancelled() => return (Outcome::Completed, "hung up from the box".into(), true),
                () = sleep_until(deadline) => return (Outcome::Completed, "maximum call duration reached".into(), true),
                message = inbound.next() => match message {
                    // Without `stop`: Twilio hung up, or the connection (the tunnel) was lost.
                    None => return (Outcome::Completed, "the media stream closed without a stop".into(), false),
                    Some(text) => {
                        if self.handle(&text) {
                            return (Outcome::Completed, "caller hung up".into(), false);
                        }
                    }
                },
                () = sleep_until(due.unwrap_or(deadline)), if due.is_some() => {
                    if let Err(e) = self.send_due(outbound).await {
                        return (Outcome::Completed, format!("stream closed: {e}"), false);
                    }
                }
                () = waker.notified() => self.responder.poll(&mut self.out),
                _ = tick.tick() => {
                    self.responder.poll(&mut self.out);
                    if !self.out.is_playing() && self.last_activity.elapsed() > self.ctx.silence_timeout {
                        return (Outcome::Completed, "silence timeout".into(), true);
                    }
                }
            }
        }
    }

    /// A malformed message is skipped; the first few are logged (a stream flooding them must not
    /// flood the log), the count is in the call's summary.
    fn bad_message(&mut self, e: &dyn Display) {
        self.stats.bad_messages += 1;
        match self.stats.bad_messages {
            1..=3 => warn!("{e}"),
            4 => warn!("{e} (further malformed messages on this call are counted, not logged)"),
            _ => debug!("{e}"),
        }
    }

    /// Handles one message from Twilio; returns true on `stop`.
    fn handle(&mut self, text: &str) -> bool {
        let message = match Inbound::parse(text) {
            Ok(m) => m,
            Err(e) => {
                self.bad_message(&e);
                return false;
            }
        };
        match message {
            Inbound::Media { media } if media.is_inbound() => match media.decode_into(&mut self.mulaw) {
                Ok(n) => {
                    for i in 0..n {
                        self.pcm8[self.filled] = g711::decode(self.mulaw[i]);
                        self.filled += 1;
                        if self.filled == FRAME_8K {
                            self.filled = 0;
                            self.heard_frame();
                        }
                    }
                }
                Err(e) => self.bad_message(&e),
            },
            Inbound::Media { .. } => {}
            Inbound::Dtmf { dtmf } => match dtmf.digit.chars().next() {
                Some(digit) => {
                    self.stats.dtmf += 1;
                    self.last_activity = Instant::now();
                    info!(%digit, "DTMF");
                    self.responder.dtmf(digit, &mut self.out);
                }
                None => self.stats.bad_messages += 1,
            },
            Inbound::Mark { mark } => match self.outstanding.iter().position(|(name, _)| *name == mark.name) {
                Some(i) => {
                    let (name, cut) = self.outstanding.remove(i);
                    if cut {
                        self.stats.marks_cut += 1;
                    } else {
                        self.stats.marks_played += 1;
                    }
                    self.responder.mark(&name, !cut);
                }
                None => debug!(name = %mark.name, "echo of a mark this call did not send"),
            },
            Inbound::Stop {} => return true,
            Inbound::Start { .. } => warn!("second start event on one stream ignored"),
            Inbound::Connected { .. } => {}
            Inbound::Unknown => debug!("unknown Media Streams event ignored"),
        }
        false
    }

    fn heard_frame(&mut self) {
        self.stats.frames_in += 1;
        let level = self.pcm8.iter().map(|s| u32::from(s.unsigned_abs())).sum::<u32>() / FRAME_8K as u32;
        if level > VOICE_LEVEL {
            self.last_activity = Instant::now();
        }
        self.up.process(&self.pcm8, &mut self.frame16);
        self.responder.hear(&self.frame16, &mut self.out);
    }

    async fn send_text<K>(outbound: &mut K, json: &mut Vec<u8>) -> Result<(), K::Error>
    where
        K: Sink<String> + Unpin,
    {
        // serde_json writes UTF-8; the Sink takes ownership, so hand over the buffer itself.
        let text = String::from_utf8(std::mem::replace(json, Vec::with_capacity(512))).expect("JSON is UTF-8");
        outbound.send(text).await
    }

    async fn flush_signals<K>(&mut self, outbound: &mut K) -> Result<(), K::Error>
    where
        K: Sink<String> + Unpin,
    {
        if std::mem::take(&mut self.out.clear) {
            Outbound::Clear { stream_sid: &self.stream_sid }.write_json(&mut self.json);
            Self::send_text(outbound, &mut self.json).await?;
            for (_, cut) in &mut self.outstanding {
                *cut = true;
            }
            self.pacer.idle();
        }
        Ok(())
    }

    /// Sends every frame that is due now (at most the pacer's lead after a stall).
    async fn send_due<K>(&mut self, outbound: &mut K) -> Result<(), K::Error>
    where
        K: Sink<String> + Unpin,
    {
        let mut mulaw = [0u8; FRAME_8K];
        let mut pcm8 = [0i16; FRAME_8K];
        while self.out.audio.len() >= FRAME_16K {
            let now = std::time::Instant::now();
            if self.pacer.next_due(now) > now {
                break;
            }
            for (dst, src) in self.frame16.iter_mut().zip(self.out.audio.drain(..FRAME_16K)) {
                *dst = src;
            }
            let n = self.down.process(&self.frame16, &mut pcm8);
            g711::encode_into(&pcm8[..n], &mut mulaw);
            let payload = encode_frame(&mulaw[..n], &mut self.b64);
            Outbound::Media { stream_sid: &self.stream_sid, media: MediaOut { payload } }.write_json(&mut self.json);
            Self::send_text(outbound, &mut self.json).await?;
            self.pacer.sent(now);
            self.stats.frames_out += 1;
            self.last_activity = Instant::now();
            self.send_marks(outbound).await?;
        }
        if !self.out.is_playing() {
            self.pacer.idle();
        }
        Ok(())
    }

    async fn send_marks<K>(&mut self, outbound: &mut K) -> Result<(), K::Error>
    where
        K: Sink<String> + Unpin,
    {
        if let Some(front) = self.out.marks.front_mut() {
            front.0 = front.0.saturating_sub(FRAME_16K);
        }
        while self.out.marks.front().is_some_and(|(ahead, _)| *ahead == 0) {
            let (_, name) = self.out.marks.pop_front().expect("front exists");
            Outbound::Mark { stream_sid: &self.stream_sid, mark: MarkOut { name: &name } }.write_json(&mut self.json);
            Self::send_text(outbound, &mut self.json).await?;
            self.outstanding.push((name, false));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
