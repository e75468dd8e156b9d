//! Twilio's routes on the box's HTTP listener: `POST /twilio/voice` (answer or refuse a call),
//! `POST /twilio/status` (call status callbacks) and `GET /twilio/media` (the Media Stream).
//! Every request is signature-checked against the configured public URL first; a bad or missing
//! signature gets 403 and nothing else happens.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::call::registry::{Admission, Direction};
use crate::call::responder::Purpose;
use crate::call::session::{self, Ended, SessionContext};
use crate::config::{mask_phone, Secret};
use crate::store::Outcome;
use crate::telemetry::Throttle;
use crate::twilio::media::CallSid;
use crate::twilio::{signature, twiml};

/// WebSocket messages larger than this close the stream (a media frame is about 300 bytes).
const MAX_WS_MESSAGE: usize = 64 * 1024;
/// Twilio sends 50 media messages a second (plus marks and key presses, and bursts after a network
/// hiccup); a stream is read at most this fast, so one that floods messages is slowed down by TCP
/// instead of taking the CPU the other calls' pacing needs.
const READ_RATE: f64 = 250.0;
/// Messages read at once before [`READ_RATE`] applies (5 s of Twilio's pace).
const READ_BURST: f64 = 250.0;
/// WebSocket close code for a policy violation (RFC 6455).
const POLICY_VIOLATION: u16 = 1008;

#[derive(Clone)]
pub struct PhoneState {
    /// The base URL Twilio uses to reach the box; signatures are checked against it, never `Host`.
    pub public_base: crate::twilio::PublicUrl,
    pub auth_token: Secret,
    pub validate_signatures: bool,
    pub sessions: SessionContext,
    pub tracker: TaskTracker,
    /// Call-outs hear what became of their calls.
    pub callout: crate::call::callout::CallOut,
}

impl std::fmt::Debug for PhoneState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneState").field("public_base", &self.public_base.get().as_str()).finish_non_exhaustive()
    }
}

impl PhoneState {
    /// The full public URL for a request path (and query), as Twilio signed it.
    fn public_url(&self, path_and_query: &str) -> String {
        self.public_base.join(path_and_query)
    }

    /// The `wss://` (or, for a plain-HTTP development base, `ws://`) URL of the media route.
    pub fn stream_url(&self) -> String {
        let base = self.public_base.get();
        let base = base.as_str().trim_end_matches('/');
        let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
        let ws = if scheme == "http" { "ws" } else { "wss" };
        format!("{ws}://{rest}/twilio/media")
    }

    fn verified(&self, headers: &HeaderMap, path_and_query: &str, params: &[(String, String)]) -> bool {
        if !self.validate_signatures {
            return true;
        }
        let Some(given) = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()) else {
            return false;
        };
        self.auth_token.is_set()
            && signature::validate(self.auth_token.expose(), &self.public_url(path_and_query), params, given)
    }
}

pub fn routes(state: PhoneState) -> Router {
    Router::new()
        .route("/twilio/voice", post(voice))
        .route("/twilio/status", post(status))
        .route("/twilio/media", get(media))
        .with_state(state)
}

/// A webhook's form parameters, in the order sent.
type Params = Vec<(String, String)>;

fn form(body: &[u8]) -> Params {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The call-out a webhook is about: the box put `?callout=<id>` in the URLs it gave Twilio.
fn callout_id(uri: &Uri) -> Option<i64> {
    url::form_urlencoded::parse(uri.query()?.as_bytes()).find(|(k, _)| k == "callout").and_then(|(_, v)| v.parse().ok())
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

/// Unsigned requests are what a scan or a flood sends: one line per 10 s with a count of the rest.
static UNSIGNED: Throttle = Throttle::new(std::time::Duration::from_secs(10));
/// Webhooks for calls that ended or already stream (replays), likewise: a replay can be sent at will.
static REPLAYED: Throttle = Throttle::new(std::time::Duration::from_secs(10));
/// Binary WebSocket messages, likewise.
static BINARY: Throttle = Throttle::new(std::time::Duration::from_secs(10));

fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last such line)")
    }
}

fn forbidden(path: &str) -> Response {
    if let Some(n) = UNSIGNED.check() {
        warn!("{path}: missing or invalid X-Twilio-Signature: refused with 403{}", held_back(n));
    }
    (StatusCode::FORBIDDEN, "invalid Twilio signature\n").into_response()
}

fn bad_request(message: String) -> Response {
    warn!("{message}");
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

/// A signed Twilio form request about one call: its parameters and CallSid, or the response that
/// refuses it (403 for a bad signature, 400 without a valid CallSid).
fn signed_call(
    state: &PhoneState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<(Params, CallSid), Box<Response>> {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let params = form(body);
    if !state.verified(headers, path, &params) {
        return Err(Box::new(forbidden(path)));
    }
    match param(&params, "CallSid").map(CallSid::parse) {
        Some(Ok(sid)) => Ok((params, sid)),
        Some(Err(e)) => Err(Box::new(bad_request(format!("{what}: {e}")))),
        None => Err(Box::new(bad_request(format!("{what} without a CallSid parameter")))),
    }
}

/// What a webhook's call is for, from the box's own records: a call-out only when the queue's
/// call-out `id` (the `?callout=` the box put in the URL it gave Twilio) placed this very call, or
/// is being placed and Twilio's answer naming the call has not come back yet. Anything else (a
/// replayed webhook of an older call-out, a stranger's guess) is treated as an incoming call.
async fn purpose_of(store: &crate::store::Store, callout: Option<i64>, sid: &CallSid) -> Purpose {
    let Some(id) = callout else { return Purpose::Incoming };
    match store.callout(id).await {
        Ok(Some(row)) if row.call_sid.as_ref() == Some(sid) || (row.state == "placing" && row.call_sid.is_none()) => {
            Purpose::CallOut(id)
        }
        Ok(_) => {
            warn!(call = %sid, id, "a webhook names call-out {id}, which the box did not place as this call: not a call-out");
            Purpose::Incoming
        }
        Err(e) => {
            warn!(call = %sid, id, "call-out {id} cannot be looked up ({e}): not treated as a call-out");
            Purpose::Incoming
        }
    }
}

/// A webhook for a call the log has already ended is a replay (Twilio asks once per call, and
/// again only while it waits for the answer): it gets no stream and changes no record.
async fn already_ended(store: &crate::store::Store, sid: &CallSid) -> bool {
    matches!(store.call(sid).await, Ok(Some(record)) if record.outcome.is_some())
}

/// Answers a call with a Media Stream, or refuses it. Nothing slow happens here.
async fn voice(State(state): State<PhoneState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let (params, sid) = match signed_call(&state, &uri, &headers, &body, "voice webhook") {
        Ok(call) => call,
        Err(refused) => return *refused,
    };
    let from = param(&params, "From").unwrap_or("unknown");
    let to = param(&params, "To").unwrap_or("unknown");
    let direction = Direction::from_twilio(param(&params, "Direction").unwrap_or("inbound"));
    let remote = if direction == Direction::Inbound { from } else { to };
    let store = &state.sessions.store;
    if already_ended(store, &sid).await {
        if let Some(n) = REPLAYED.check() {
            warn!(call = %sid, "a webhook for a call that has already ended (a replay?): refused, nothing recorded{}", held_back(n));
        }
        return xml(twiml::reject(twiml::Reject::Rejected));
    }
    let callout = callout_id(&uri);
    let purpose = purpose_of(store, callout, &sid).await;
    if let Err(e) = store.call_started(&sid, direction.as_str(), from, to).await {
        warn!(call = %sid, "call log: {e}");
    }
    let admission = state.sessions.registry.admit(&sid, purpose, direction, remote, Instant::now());
    let refuse = |outcome: Outcome, why: &str, reject: twiml::Reject| {
        info!(call = %sid, remote = %mask_phone(remote), "call refused: {why}");
        let (store, sid, why) = (store.clone(), sid.clone(), why.to_owned());
        async move {
            if let Err(e) = store.call_ended(&sid, outcome, Some(&why)).await {
                warn!(call = %sid, "call log: {e}");
            }
            xml(twiml::reject(reject))
        }
    };
    if let (Purpose::CallOut(id), Some(answered_by)) = (purpose, param(&params, "AnsweredBy")) {
        if answered_by.starts_with("machine") || answered_by == "fax" {
            info!(call = %sid, id, answered_by, "call-out reached a machine: hanging up");
            state.callout.report(id, "machine");
            state.sessions.registry.end(&sid);
            if let Err(e) = store.call_ended(&sid, Outcome::Completed, Some("answered by a machine")).await {
                warn!(call = %sid, "call log: {e}");
            }
            return xml(twiml::hang_up());
        }
    }
    match admission {
        Admission::Accept { token } => {
            info!(call = %sid, remote = %mask_phone(remote), ?direction, "answering with a media stream");
            xml(twiml::connect_stream(&state.stream_url(), &[("token", token.as_str())]))
        }
        Admission::Streaming => {
            if let Some(n) = REPLAYED.check() {
                warn!(call = %sid, "a webhook for a call already streaming (a replay?): refused, nothing recorded{}", held_back(n));
            }
            xml(twiml::reject(twiml::Reject::Busy))
        }
        Admission::Busy => refuse(Outcome::Busy, "too many calls at once", twiml::Reject::Busy).await,
        Admission::Blocked => refuse(Outcome::Rejected, "caller not allowed", twiml::Reject::Rejected).await,
        Admission::RateLimited => {
            refuse(Outcome::Rejected, "caller over the hourly limit", twiml::Reject::Rejected).await
        }
    }
}

/// Status callbacks: a terminal status finalises the call (if the stream did not already).
async fn status(State(state): State<PhoneState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let (params, sid) = match signed_call(&state, &uri, &headers, &body, "status callback") {
        Ok(call) => call,
        Err(refused) => return *refused,
    };
    let call_status = param(&params, "CallStatus").unwrap_or("");
    info!(call = %sid, status = call_status, "status callback");
    if let Purpose::CallOut(id) = purpose_of(&state.sessions.store, callout_id(&uri), &sid).await {
        state.callout.report(id, call_status);
    }
    if let Some(outcome) = Outcome::from_call_status(call_status) {
        state.sessions.registry.terminated(&sid);
        let reason = format!("Twilio reported {call_status}");
        if let Err(e) = state.sessions.store.call_ended(&sid, outcome, Some(&reason)).await {
            warn!(call = %sid, "call log: {e}");
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The Media Stream. A signature on the handshake is checked when present; the one-time token in
/// `start` is always required (checked by the session before it allocates anything).
async fn media(State(state): State<PhoneState>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if headers.contains_key("x-twilio-signature") && state.validate_signatures {
        let given = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
        let url = state.stream_url();
        let token = state.auth_token.expose();
        let ok = state.auth_token.is_set()
            && [url.clone(), format!("{url}/")].iter().any(|u| signature::validate(token, u, &[], given));
        if !ok {
            return forbidden("/twilio/media");
        }
    }
    let tracker = state.tracker.clone();
    ws.max_message_size(MAX_WS_MESSAGE)
        .on_failed_upgrade(|e| warn!("media stream upgrade failed: {e}"))
        .on_upgrade(move |socket| tracker.track_future(stream(socket, state.sessions)))
}

async fn stream(socket: WebSocket, ctx: SessionContext) {
    let (mut tx, rx) = socket.split();
    // Every message counts against the read rate, whatever it is (binary and pings too).
    let mut inbound = read_at_most(rx, READ_RATE, READ_BURST)
        .take_while(|m| std::future::ready(!matches!(m, Ok(Message::Close(_)))))
        .filter_map(|m| {
            std::future::ready(match m {
                Ok(Message::Text(text)) => Some(text.as_str().to_owned()),
                Ok(Message::Binary(b)) => {
                    if let Some(n) = BINARY.check() {
                        warn!(
                            "binary WebSocket message of {} bytes ignored: Media Streams sends JSON text{}",
                            b.len(),
                            held_back(n)
                        );
                    }
                    None
                }
                Ok(_) => None,
                Err(e) => {
                    warn!("media stream read error: {e}");
                    None
                }
            })
        })
        .boxed();
    let ended = {
        let mut outbound =
            (&mut tx).with(|text: String| std::future::ready(Ok::<_, axum::Error>(Message::Text(text.into()))));
        session::run(&mut inbound, &mut outbound, &ctx).await
    };
    if let Ended::Refused(e) = ended {
        let frame = CloseFrame { code: POLICY_VIOLATION, reason: e.to_string().into() };
        let _ = tx.send(Message::Close(Some(frame))).await;
    }
}

/// A token bucket: `burst` items at once, then `per_second`.
struct Bucket {
    tokens: f64,
    per_second: f64,
    burst: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn new(per_second: f64, burst: f64) -> Self {
        Self { tokens: burst, per_second, burst, at: tokio::time::Instant::now() }
    }

    /// Takes one token, waiting for it if the bucket is empty.
    async fn take(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            let wait = std::time::Duration::from_secs_f64((1.0 - self.tokens) / self.per_second);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.at += wait;
        }
        self.tokens -= 1.0;
    }
}

/// `inbound`, read no faster than `per_second` items after a first `burst`: while the reader waits,
/// the sender is held back by the connection's flow control.
fn read_at_most<S: futures_util::Stream + Unpin>(
    inbound: S,
    per_second: f64,
    burst: f64,
) -> impl futures_util::Stream<Item = S::Item> {
    futures_util::stream::unfold((inbound, Bucket::new(per_second, burst)), |(mut inbound, mut bucket)| async move {
        bucket.take().await;
        let item = inbound.next().await?;
        Some((item, (inbound, bucket)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flooding_stream_is_read_at_the_set_rate_after_its_burst() {
        let flood = futures_util::stream::iter(0..10_000);
        let began = tokio::time::Instant::now();
        let mut read = Box::pin(read_at_most(flood, 250.0, 250.0));
        for _ in 0..250 {
            read.next().await.expect("item");
        }
        assert!(began.elapsed() < std::time::Duration::from_millis(1), "the burst is read at once");
        for _ in 0..500 {
            read.next().await.expect("item");
        }
        let took = began.elapsed().as_secs_f64();
        assert!((1.99..=2.01).contains(&took), "500 more at 250/s take 2 s, not {took} s");
    }

    #[tokio::test(start_paused = true)]
    async fn twilio_s_own_pace_is_never_held_back() {
        // 50 messages a second with a 3 s burst after a hiccup: all read as they come.
        let mut bucket = Bucket::new(READ_RATE, READ_BURST);
        for second in 0..20 {
            let arrive = tokio::time::Instant::now();
            let n = if second == 10 { 200 } else { 50 };
            for _ in 0..n {
                bucket.take().await;
            }
            assert!(arrive.elapsed() < std::time::Duration::from_millis(1), "second {second} was held back");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}
