//! The call log on the page: status, calls, one call, hanging up, messages heard, voicemail
//! served and removed, the usage chart.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{Answer, ApiError};
use crate::config::{mask_phone, Config};
use crate::store::CallRecord;
use crate::twilio::media::CallSid;
use crate::web::Lan;

/// The most calls one `GET /api/calls` returns.
pub(super) const CALLS_MAX: usize = 500;
/// The box now: the health snapshot, the LEDs, the number and where its calls go, the messages
/// waiting.
pub(super) async fn status(State(lan): State<Lan>) -> Answer<Json<Value>> {
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
pub(super) fn call_json(record: &CallRecord, config: &Config) -> Value {
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
pub(super) struct CallsQuery {
    limit: Option<usize>,
}

pub(super) async fn calls(
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

pub(super) fn sid(raw: &str) -> Answer<CallSid> {
    CallSid::parse(raw).map_err(|e| ApiError::bad("sid", e))
}

pub(super) async fn record(lan: &Lan, raw: &str) -> Answer<CallRecord> {
    let sid = sid(raw)?;
    lan.store.call(&sid).await?.ok_or_else(|| ApiError::not_found(format!("no call {sid} in the call log")))
}

pub(super) async fn call(State(lan): State<Lan>, Path(raw): Path<String>) -> Answer<Json<Value>> {
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

pub(super) async fn hang_up(State(lan): State<Lan>, Path(raw): Path<String>) -> Answer<StatusCode> {
    let sid = sid(&raw)?;
    if lan.status.registry.hang_up(&sid) {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::not_found(format!("call {sid} is not in progress")))
    }
}

pub(super) async fn heard(State(lan): State<Lan>, Path(raw): Path<String>) -> Answer<StatusCode> {
    let record = record(&lan, &raw).await?;
    lan.store.mark_heard(vec![record.call_sid]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The file of a call's message, only if it lies in the voicemail folder.
pub(super) fn voicemail_file(lan: &Lan, record: &CallRecord) -> Answer<std::path::PathBuf> {
    let missing = || ApiError::not_found(format!("call {} left no message", record.call_sid));
    let named = record.voicemail.as_ref().ok_or_else(missing)?;
    lan.voicemail
        .file(named)
        .ok_or_else(|| ApiError::not_found(format!("the message of call {} is no longer on the box", record.call_sid)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VoicemailQuery {
    #[serde(default)]
    download: bool,
}

pub(super) async fn voicemail(
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

pub(super) async fn delete_voicemail(State(lan): State<Lan>, Path(raw): Path<String>) -> Answer<StatusCode> {
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
pub(super) struct UsageQuery {
    days: Option<u32>,
}

pub(super) async fn usage(State(lan): State<Lan>, Query(query): Query<UsageQuery>) -> Answer<Json<Value>> {
    let days = query.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::bad("days", format!("{days} is out of range: expected 1 to 366")));
    }
    Ok(Json(json!({ "days": lan.store.usage(days).await? })))
}

// ---- contacts ----
