//! The JSON API under `/api/` that the page itself uses (so scripts can too). Every route but the
//! set-up and login ones needs a session; every state-changing one also the box's Origin and the
//! session's CSRF token (see [`super::auth`]). Errors are `{"error": "...", "field": "..."}` with a
//! message that names the field and what is expected.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::auth::{self, AuthError};
use super::Lan;
use crate::config::settings::SettingsError;
use crate::config::{mask_phone, Config, Contact};
use crate::net::Peer;
use crate::store::CallRecord;
use crate::twilio::media::CallSid;

/// The most calls one `GET /api/calls` returns.
const CALLS_MAX: usize = 500;
/// The longest text `POST /api/say` speaks.
const SAY_MAX: usize = 500;
/// How long the microphone test streams levels.
const MIC_TEST: Duration = Duration::from_secs(30);

/// An error answer: status, message, and the field it is about.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), field: None, retry_after: None }
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    fn bad(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message).field(field)
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(field) = self.field {
            body["field"] = Value::String(field);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match &e {
            AuthError::NoSession | AuthError::WrongPassword => StatusCode::UNAUTHORIZED,
            AuthError::Origin(_) | AuthError::Csrf => StatusCode::FORBIDDEN,
            AuthError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            AuthError::NotSetUp | AuthError::AlreadySetUp | AuthError::NotProven | AuthError::NoChallenge => {
                StatusCode::CONFLICT
            }
            AuthError::WeakPassword | AuthError::WrongCode(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AuthError::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut error = Self::new(status, e.to_string());
        error.field = match e {
            AuthError::WeakPassword | AuthError::WrongPassword => Some("password".into()),
            AuthError::WrongCode(_) => Some("code".into()),
            _ => None,
        };
        if let AuthError::TooMany(seconds) = e {
            error.retry_after = Some(seconds);
        }
        error
    }
}

impl From<SettingsError> for ApiError {
    fn from(e: SettingsError) -> Self {
        let status = match e {
            SettingsError::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            SettingsError::Locked { .. } => StatusCode::CONFLICT,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let field = e.field();
        Self { status, message: e.to_string(), field, retry_after: None }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal(e)
    }
}

/// A JSON body whose rejection is an [`ApiError`] naming what is wrong with it.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(body_error(rejection)),
        }
    }
}

fn body_error(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let message = match rejection {
        JsonRejection::MissingJsonContentType(_) => "expected a JSON body with Content-Type: application/json".into(),
        JsonRejection::JsonSyntaxError(e) => format!(
            "the body is not valid JSON: {}",
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
        ),
        JsonRejection::JsonDataError(e) => format!(
            "the body does not fit: {}",
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
        ),
        other => other.body_text(),
    };
    ApiError::new(status, message)
}

/// A JSON body that may be left out (an empty body is the default).
fn optional_body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("the body does not fit: {e}")))
}

type Answer<T> = Result<T, ApiError>;

pub fn routes(lan: Lan) -> Router {
    let open = Router::new()
        .route("/api/setup", get(setup_status))
        .route("/api/setup/start", post(setup_start))
        .route("/api/setup/{token}", get(setup_progress))
        .route("/api/setup/finish", post(setup_finish))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/session", get(session));
    let guarded = Router::new()
        .route("/api/status", get(status))
        .route("/api/calls", get(calls))
        .route("/api/calls/{sid}", get(call))
        .route("/api/calls/{sid}/hangup", post(hang_up))
        .route("/api/calls/{sid}/heard", post(heard))
        .route("/api/calls/{sid}/voicemail", get(voicemail).delete(delete_voicemail))
        .route("/api/usage", get(usage))
        .route("/api/contacts", get(contacts).post(add_contact))
        .route("/api/contacts/{id}", put(edit_contact).delete(delete_contact))
        .route("/api/contacts/{id}/call", post(call_contact))
        .route("/api/settings", get(settings).put(change_settings))
        .route("/api/check", post(check))
        .route("/api/check/twilio", post(check_twilio))
        .route("/api/say", post(say))
        .route("/api/speaker/test", post(speaker_test))
        .route("/api/microphone/level", get(super::live::microphone))
        .route("/api/events", get(super::live::events))
        .route("/api/messages/play", post(play_messages))
        .route_layer(middleware::from_fn_with_state(lan.clone(), guard));
    open.merge(guarded).fallback(unknown).with_state(lan)
}

async fn unknown(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such route: {method} {}", uri.path()))
}

/// Lets a request through with a live session (and, if it changes state, the box's Origin and the
/// CSRF token).
async fn guard(State(lan): State<Lan>, request: Request, next: Next) -> Response {
    match lan.auth.authorize(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn with_cookie(mut response: Response, cookie: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    no_store(response)
}

fn opened(opened: auth::Opened) -> Response {
    let cookie = auth::set_cookie(&opened.cookie, opened.max_age);
    with_cookie(Json(json!({ "csrf": opened.csrf })).into_response(), cookie)
}

// ---- first set-up, login ----

async fn setup_status(State(lan): State<Lan>) -> Json<Value> {
    Json(json!({ "password_set": lan.auth.password_set() }))
}

/// Starts the first set-up: the box speaks a code and waits for a press of any of its buttons.
async fn setup_start(State(lan): State<Lan>, headers: HeaderMap) -> Answer<Json<Value>> {
    auth::same_origin(&headers)?;
    let started = lan.auth.start_setup()?;
    let (appliance, auth, token) = (lan.appliance.clone(), lan.auth.clone(), started.token.clone());
    let press = appliance.next_press();
    tokio::spawn(async move {
        if tokio::time::timeout(Duration::from_secs(180), press).await.is_ok_and(|r| r.is_ok()) {
            tracing::info!("LAN page set-up: the box's button was pressed");
            auth.presence_proven(&token);
        }
    });
    let spoken: Vec<String> = started.code.chars().map(String::from).collect();
    let appliance = lan.appliance.clone();
    tokio::spawn(async move {
        let code = spoken.join(", ");
        for _ in 0..2 {
            appliance.say(&format!("{}: {code}.", appliance.language().setup_code)).await;
        }
    });
    Ok(Json(json!({
        "token": started.token,
        "how": "press any button on the box, or type the code the box speaks",
    })))
}

async fn setup_progress(State(lan): State<Lan>, Path(token): Path<String>) -> Answer<Json<Value>> {
    Ok(Json(json!({ "button_pressed": lan.auth.setup_state(&token)? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Finish {
    token: String,
    password: String,
    #[serde(default)]
    code: Option<String>,
}

async fn setup_finish(State(lan): State<Lan>, headers: HeaderMap, Body(body): Body<Finish>) -> Answer<Response> {
    auth::same_origin(&headers)?;
    let auth = lan.auth.clone();
    let done =
        tokio::task::spawn_blocking(move || auth.finish_setup(&body.token, body.code.as_deref(), &body.password))
            .await
            .map_err(ApiError::internal)??;
    Ok(opened(done))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    password: String,
}

async fn login(
    State(lan): State<Lan>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Body(body): Body<Login>,
) -> Answer<Response> {
    auth::same_origin(&headers)?;
    let peer = peer.map_or_else(|| Peer("unknown".into()), |Extension(p)| p);
    let auth = lan.auth.clone();
    let done =
        tokio::task::spawn_blocking(move || auth.login(&peer, &body.password)).await.map_err(ApiError::internal)??;
    Ok(opened(done))
}

async fn logout(State(lan): State<Lan>, headers: HeaderMap) -> Answer<Response> {
    auth::same_origin(&headers)?;
    if let Some(cookie) = auth::session_cookie(&headers) {
        lan.auth.logout(&cookie);
    }
    Ok(with_cookie(StatusCode::NO_CONTENT.into_response(), auth::set_cookie("", Duration::ZERO)))
}

/// Whether this browser is logged in (and its CSRF token, for a page that was reloaded).
async fn session(State(lan): State<Lan>, headers: HeaderMap) -> Answer<Response> {
    let csrf = auth::session_cookie(&headers).and_then(|c| lan.auth.session(&c)).ok_or(AuthError::NoSession)?;
    Ok(no_store(Json(json!({ "csrf": csrf })).into_response()))
}

// ---- status ----

/// The box now: the health snapshot, the LEDs, the number and where its calls go, the messages
/// waiting.
async fn status(State(lan): State<Lan>) -> Answer<Json<Value>> {
    let config = lan.settings.live().get();
    let snapshot = lan.status.state.snapshot();
    let waiting: Vec<Value> = lan.store.waiting_calls().await?.iter().map(|r| call_json(r, &config)).collect();
    let leds: Map<String, Value> = crate::panel::patterns(&snapshot)
        .iter()
        .map(|(role, pattern)| (json!(role).as_str().unwrap_or_default().to_owned(), json!(pattern)))
        .collect();
    let mut body = serde_json::to_value(lan.status.health()).map_err(ApiError::internal)?;
    let extra = json!({
        "name": config.device.name,
        "leds": leds,
        "number": config.twilio.phone_number.as_ref().map(|n| n.masked()),
        "answer": format!("{:?}", config.calls.answer).to_lowercase(),
        "do_not_disturb": config.calls.do_not_disturb,
        "tunnel": format!("{:?}", config.tunnel.provider).to_lowercase(),
        "twilio_configured": config.twilio.has_credentials(),
        "messages": waiting,
        "settings_error": config.settings_error,
    });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    Ok(Json(body))
}

// ---- calls ----

/// A call as the page shows it: the other party as a contact's name, else the number masked.
fn call_json(record: &CallRecord, config: &Config) -> Value {
    let outbound = record.direction.starts_with("outbound");
    let remote = if outbound { &record.to_number } else { &record.from_number };
    let contact = config.contacts.iter().find(|c| c.number.as_str() == remote).map(|c| c.name.clone());
    json!({
        "call_sid": record.call_sid,
        "direction": if outbound { "outbound" } else { "inbound" },
        "remote": mask_phone(remote),
        "contact": contact,
        "created_at": record.created_at,
        "answered_at": record.answered_at,
        "ended_at": record.ended_at,
        "duration_ms": record.duration_ms,
        "outcome": record.outcome,
        "reason": record.reason,
        "voicemail": record.voicemail.is_some(),
        "voicemail_transcript": record.voicemail_transcript,
        "waiting": record.waiting,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallsQuery {
    limit: Option<usize>,
}

async fn calls(
    State(lan): State<Lan>,
    query: Result<Query<CallsQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Json<Value>> {
    let Query(query) = query
        .map_err(|e| ApiError::bad("limit", format!("{}: expected ?limit=N (1 to {CALLS_MAX})", e.body_text())))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=CALLS_MAX).contains(&limit) {
        return Err(ApiError::bad("limit", format!("{limit} is out of range: expected 1 to {CALLS_MAX}")));
    }
    let config = lan.settings.live().get();
    let calls: Vec<Value> = lan.store.recent_calls(limit).await?.iter().map(|r| call_json(r, &config)).collect();
    Ok(Json(json!({ "calls": calls })))
}

fn sid(raw: &str) -> Answer<CallSid> {
    CallSid::parse(raw).map_err(|e| ApiError::bad("sid", e))
}

async fn record(lan: &Lan, raw: &str) -> Answer<CallRecord> {
    let sid = sid(raw)?;
    lan.store.call(sid.as_str()).await?.ok_or_else(|| ApiError::not_found(format!("no call {sid} in the call log")))
}

async fn call(State(lan): State<Lan>, Path(raw): Path<String>) -> Answer<Json<Value>> {
    let record = record(&lan, &raw).await?;
    let config = lan.settings.live().get();
    let turns: Vec<Value> = lan
        .store
        .turns(&record.call_sid)
        .await?
        .into_iter()
        .map(|(speaker, text)| json!({ "speaker": speaker, "text": text }))
        .collect();
    let mut body = call_json(&record, &config);
    body["turns"] = Value::Array(turns);
    body["live"] = Value::Bool(
        record.outcome.is_none()
            && lan.status.registry.list(std::time::Instant::now()).iter().any(|c| c.call_sid == record.call_sid),
    );
    Ok(Json(body))
}

async fn hang_up(State(lan): State<Lan>, Path(raw): Path<String>) -> Answer<StatusCode> {
    let sid = sid(&raw)?;
    if lan.status.registry.hang_up(&sid) {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::not_found(format!("call {sid} is not in progress")))
    }
}

async fn heard(State(lan): State<Lan>, Path(raw): Path<String>) -> Answer<StatusCode> {
    let record = record(&lan, &raw).await?;
    lan.store.mark_heard(vec![record.call_sid]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The file of a call's message, only if it lies in the voicemail folder.
fn voicemail_file(lan: &Lan, record: &CallRecord) -> Answer<std::path::PathBuf> {
    let missing = || ApiError::not_found(format!("call {} left no message", record.call_sid));
    let named = record.voicemail.as_ref().ok_or_else(missing)?;
    lan.voicemail
        .file(named)
        .ok_or_else(|| ApiError::not_found(format!("the message of call {} is no longer on the box", record.call_sid)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoicemailQuery {
    #[serde(default)]
    download: bool,
}

async fn voicemail(
    State(lan): State<Lan>,
    Path(raw): Path<String>,
    Query(query): Query<VoicemailQuery>,
) -> Answer<Response> {
    let record = record(&lan, &raw).await?;
    let path = voicemail_file(&lan, &record)?;
    let bytes =
        tokio::fs::read(&path).await.map_err(|e| ApiError::internal(format!("cannot read {}: {e}", path.display())))?;
    let disposition = format!(
        "{}; filename=\"voicemail-{}.wav\"",
        if query.download { "attachment" } else { "inline" },
        record.call_sid
    );
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
        ],
        bytes,
    )
        .into_response())
}

async fn delete_voicemail(State(lan): State<Lan>, Path(raw): Path<String>) -> Answer<StatusCode> {
    let record = record(&lan, &raw).await?;
    let path = voicemail_file(&lan, &record)?;
    // The file first: a row that names a missing file is shown as "no longer on the box"; a row
    // forgotten before its file would leave audio nobody can find.
    tokio::fs::remove_file(&path)
        .await
        .map_err(|e| ApiError::internal(format!("cannot remove {}: {e}", path.display())))?;
    lan.store.voicemail_removed(&record.call_sid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    days: Option<u32>,
}

async fn usage(State(lan): State<Lan>, Query(query): Query<UsageQuery>) -> Answer<Json<Value>> {
    let days = query.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::bad("days", format!("{days} is out of range: expected 1 to 366")));
    }
    Ok(Json(json!({ "days": lan.store.usage(days).await? })))
}

// ---- contacts ----

/// A contact as the page sends and shows it; its id is its place in the list, from 1.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactBody {
    name: String,
    number: String,
    #[serde(default)]
    button: Option<u8>,
    #[serde(default)]
    emergency: bool,
    /// Where it goes in the list (the emergency chain calls in this order), from 1.
    #[serde(default, skip_serializing)]
    position: Option<usize>,
}

fn contact_json(id: usize, c: &Contact) -> Value {
    json!({ "id": id, "name": c.name, "number": c.number.as_str(), "button": c.button, "emergency": c.emergency })
}

/// The contacts as the settings layer stores them.
fn contacts_list(contacts: &[Contact]) -> Vec<Value> {
    contacts
        .iter()
        .map(|c| json!({ "name": c.name, "number": c.number.as_str(), "button": c.button, "emergency": c.emergency }))
        .collect()
}

/// Validates and stores `changes` off the runtime (the settings file is synced to the card).
async fn save(lan: &Lan, changes: Map<String, Value>) -> Result<crate::config::settings::Saved, SettingsError> {
    let settings = lan.settings.clone();
    match tokio::task::spawn_blocking(move || settings.update(&changes)).await {
        Ok(saved) => saved,
        Err(e) => {
            Err(SettingsError::Write { path: "settings.toml".into(), source: std::io::Error::other(e.to_string()) })
        }
    }
}

/// Stores a new contact list; errors about `contacts[i].x` are told as about the field `x`.
async fn store_contacts(lan: &Lan, list: Value, edited: usize) -> Answer<()> {
    let mut changes = Map::new();
    changes.insert("contacts".into(), list);
    save(lan, changes).await.map(drop).map_err(|e| {
        let mut error = ApiError::from(e);
        if let Some(field) = &error.field {
            let prefix = format!("contacts[{edited}].");
            error.field = Some(field.strip_prefix(&prefix).map_or_else(|| field.clone(), str::to_owned));
        }
        error
    })
}

async fn contacts(State(lan): State<Lan>) -> Json<Value> {
    let list: Vec<Value> = lan.settings.contacts().iter().enumerate().map(|(i, c)| contact_json(i + 1, c)).collect();
    let buttons: Vec<Value> = lan
        .appliance
        .call_slots()
        .into_iter()
        .map(|(button, slot)| json!({ "button": button, "slot": slot }))
        .collect();
    Json(json!({ "contacts": list, "buttons": buttons }))
}

fn place(list: &mut Vec<Value>, entry: Value, position: Option<usize>) -> Answer<usize> {
    let at = match position {
        None => list.len(),
        Some(p) if (1..=list.len() + 1).contains(&p) => p - 1,
        Some(p) => {
            return Err(ApiError::bad("position", format!("{p} is out of range: expected 1 to {}", list.len() + 1)))
        }
    };
    list.insert(at, entry);
    Ok(at)
}

fn entry(body: &ContactBody) -> Value {
    json!({ "name": body.name.trim(), "number": body.number, "button": body.button, "emergency": body.emergency })
}

async fn add_contact(State(lan): State<Lan>, Body(body): Body<ContactBody>) -> Answer<(StatusCode, Json<Value>)> {
    let mut list = contacts_list(&lan.settings.contacts());
    let at = place(&mut list, entry(&body), body.position)?;
    store_contacts(&lan, Value::Array(list), at).await?;
    let contact = lan.settings.contacts().get(at).map(|c| contact_json(at + 1, c));
    Ok((StatusCode::CREATED, Json(contact.unwrap_or(Value::Null))))
}

fn index(id: usize, len: usize) -> Answer<usize> {
    (1..=len)
        .contains(&id)
        .then(|| id - 1)
        .ok_or_else(|| ApiError::not_found(format!("no contact {id}: there are {len}")))
}

async fn edit_contact(
    State(lan): State<Lan>,
    Path(id): Path<usize>,
    Body(body): Body<ContactBody>,
) -> Answer<Json<Value>> {
    let mut list = contacts_list(&lan.settings.contacts());
    let i = index(id, list.len())?;
    list.remove(i);
    let at = place(&mut list, entry(&body), body.position.or(Some(i + 1)))?;
    store_contacts(&lan, Value::Array(list), at).await?;
    let contact = lan.settings.contacts().get(at).map(|c| contact_json(at + 1, c));
    Ok(Json(contact.unwrap_or(Value::Null)))
}

async fn delete_contact(State(lan): State<Lan>, Path(id): Path<usize>) -> Answer<StatusCode> {
    let mut list = contacts_list(&lan.settings.contacts());
    let i = index(id, list.len())?;
    list.remove(i);
    store_contacts(&lan, Value::Array(list), i).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CallNow {
    #[serde(default)]
    emergency: bool,
}

/// "Call now": the box calls the contact, and the call plays on its speaker (as the button does).
async fn call_contact(
    State(lan): State<Lan>,
    Path(id): Path<usize>,
    body: axum::body::Bytes,
) -> Answer<(StatusCode, Json<Value>)> {
    let body: CallNow = optional_body(&body)?;
    let contacts = lan.settings.contacts();
    let contact = contacts[index(id, contacts.len())?].clone();
    if !lan.settings.live().get().twilio.has_credentials() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Twilio is not set up: fill in the account SID, auth token and number in Settings",
        ));
    }
    let emergency = body.emergency;
    let appliance = lan.appliance.clone();
    let name = contact.name.clone();
    tokio::spawn(async move {
        appliance.call_contact(&contact, emergency).await;
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "calling": name }))))
}

// ---- settings and checks ----

async fn settings(State(lan): State<Lan>) -> Json<Value> {
    let config = lan.settings.live().get();
    Json(json!({
        "fields": lan.settings.fields(),
        "source": config.source,
        "settings_error": config.settings_error,
        "languages": crate::speech::prompts::codes(),
    }))
}

async fn change_settings(State(lan): State<Lan>, Body(changes): Body<Map<String, Value>>) -> Answer<Json<Value>> {
    let saved = save(&lan, changes).await?;
    Ok(Json(json!({ "changed": saved.changed, "restart": saved.restart, "fields": lan.settings.fields() })))
}

/// `voca check`'s checks, run by the box on itself.
async fn check(State(lan): State<Lan>) -> Json<Value> {
    let config = lan.settings.live().get();
    let fault = lan.status.state.snapshot().fault;
    let report = crate::check::run_in_box(&config, fault.as_deref()).await;
    Json(json!({ "passed": report.passed(), "summary": report.summary(), "outcomes": report.outcomes }))
}

/// The Twilio checks, with the settings in effect or with the (unsaved) ones in the body.
async fn check_twilio(State(lan): State<Lan>, body: axum::body::Bytes) -> Answer<Json<Value>> {
    let changes: Map<String, Value> = optional_body(&body)?;
    let config = lan.settings.preview(&changes)?;
    let outcomes = crate::check::twilio_checks(&config).await;
    let passed = outcomes.iter().all(|o| o.status != crate::check::Status::Fail);
    Ok(Json(json!({ "passed": passed, "outcomes": outcomes })))
}

// ---- the box's speaker and microphone ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Say {
    text: String,
}

async fn say(State(lan): State<Lan>, Body(body): Body<Say>) -> Answer<StatusCode> {
    let text = body.text.trim().to_owned();
    if text.is_empty() || text.chars().count() > SAY_MAX {
        return Err(ApiError::bad("text", format!("expected 1 to {SAY_MAX} characters to say")));
    }
    if !lan.appliance.can_speak() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the box has no voice now (speech is off: calls.answer = \"tones\")",
        ));
    }
    let appliance = lan.appliance.clone();
    tokio::spawn(async move { appliance.say(&text).await });
    Ok(StatusCode::ACCEPTED)
}

async fn speaker_test(State(lan): State<Lan>) -> StatusCode {
    lan.appliance.speaker().play(&crate::call::responder::chime());
    StatusCode::ACCEPTED
}

async fn play_messages(State(lan): State<Lan>) -> StatusCode {
    let appliance = lan.appliance.clone();
    tokio::spawn(async move { appliance.play_messages().await });
    StatusCode::ACCEPTED
}

/// How long the microphone test lasts, for [`super::live`].
pub fn microphone_test_length() -> Duration {
    MIC_TEST
}
