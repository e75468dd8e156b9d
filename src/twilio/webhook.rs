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

use super::media::CallSid;
use super::{signature, twiml};
use crate::call::registry::{Admission, Direction};
use crate::call::session::{self, Ended, SessionContext};
use crate::config::{mask_phone, Secret};
use crate::store::Outcome;

/// WebSocket messages larger than this close the stream (a media frame is about 300 bytes).
const MAX_WS_MESSAGE: usize = 64 * 1024;
/// WebSocket close code for a policy violation (RFC 6455).
const POLICY_VIOLATION: u16 = 1008;

#[derive(Clone)]
pub struct PhoneState {
    /// The base URL Twilio uses to reach the box; signatures are checked against it, never `Host`.
    pub public_base: super::PublicUrl,
    pub auth_token: Secret,
    pub validate_signatures: bool,
    pub sessions: SessionContext,
    pub tracker: TaskTracker,
    /// Call-outs hear what became of their calls.
    pub callout: crate::callout::CallOut,
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

fn forbidden(path: &str) -> Response {
    warn!("{path}: missing or invalid X-Twilio-Signature: refused with 403");
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
    if let Err(e) = store.call_started(sid.as_str(), direction.as_str(), from, to).await {
        warn!(call = %sid, "call log: {e}");
    }
    let admission = state.sessions.registry.admit(&sid, direction, remote, Instant::now());
    let refuse = |outcome: Outcome, why: &str, reject: twiml::Reject| {
        info!(call = %sid, remote = %mask_phone(remote), "call refused: {why}");
        let (store, sid, why) = (store.clone(), sid.clone(), why.to_owned());
        async move {
            if let Err(e) = store.call_ended(sid.as_str(), outcome, Some(&why)).await {
                warn!(call = %sid, "call log: {e}");
            }
            xml(twiml::reject(reject))
        }
    };
    let callout = callout_id(&uri);
    if let (Some(id), Some(answered_by)) = (callout, param(&params, "AnsweredBy")) {
        if answered_by.starts_with("machine") || answered_by == "fax" {
            info!(call = %sid, id, answered_by, "call-out reached a machine: hanging up");
            state.callout.report(id, "machine");
            state.sessions.registry.end(&sid);
            if let Err(e) = store.call_ended(sid.as_str(), Outcome::Completed, Some("answered by a machine")).await {
                warn!(call = %sid, "call log: {e}");
            }
            return xml(twiml::hang_up());
        }
    }
    match admission {
        Admission::Accept { token } => {
            info!(call = %sid, remote = %mask_phone(remote), ?direction, "answering with a media stream");
            let id = callout.map(|id| id.to_string());
            let mut parameters = vec![("token", token.as_str())];
            if let Some(id) = &id {
                parameters.push(("callout", id));
            }
            xml(twiml::connect_stream(&state.stream_url(), &parameters))
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
    if let Some(id) = callout_id(&uri) {
        state.callout.report(id, call_status);
    }
    if let Some(outcome) = Outcome::from_call_status(call_status) {
        state.sessions.registry.terminated(&sid);
        let reason = format!("Twilio reported {call_status}");
        if let Err(e) = state.sessions.store.call_ended(sid.as_str(), outcome, Some(&reason)).await {
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
    let mut inbound = rx
        .take_while(|m| std::future::ready(!matches!(m, Ok(Message::Close(_)))))
        .filter_map(|m| {
            std::future::ready(match m {
                Ok(Message::Text(text)) => Some(text.as_str().to_owned()),
                Ok(Message::Binary(b)) => {
                    warn!("binary WebSocket message of {} bytes ignored: Media Streams sends JSON text", b.len());
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
