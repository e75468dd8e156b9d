//! The device: settings, the self-test, saying a text, the speaker test, playing messages.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::contacts::save;
use super::{optional_body, Answer, ApiError, Body};
use crate::web::Lan;

/// The longest text `POST /api/say` speaks.
pub(super) const SAY_MAX: usize = 500;
pub(super) async fn settings(State(lan): State<Lan>) -> Json<Value> {
    let config = lan.settings.live().get();
    Json(json!({
        "fields": lan.settings.fields(),
        "source": config.source,
        "settings_error": config.settings_error,
        "languages": crate::speech::prompts::codes(),
    }))
}

pub(super) async fn change_settings(
    State(lan): State<Lan>,
    Body(changes): Body<Map<String, Value>>,
) -> Answer<Json<Value>> {
    let saved = save(&lan, changes).await?;
    Ok(Json(json!({ "changed": saved.changed, "restart": saved.restart, "fields": lan.settings.fields() })))
}

/// `voca check`'s checks, run by the box on itself.
pub(super) async fn check(State(lan): State<Lan>) -> Json<Value> {
    let config = lan.settings.live().get();
    let fault = lan.status.state.snapshot().fault;
    let report = crate::check::run_in_box(&config, fault.as_deref()).await;
    Json(json!({ "passed": report.passed(), "summary": report.summary(), "outcomes": report.outcomes }))
}

/// The Twilio checks, with the settings in effect or with the (unsaved) ones in the body.
pub(super) async fn check_twilio(State(lan): State<Lan>, body: axum::body::Bytes) -> Answer<Json<Value>> {
    let changes: Map<String, Value> = optional_body(&body)?;
    let config = lan.settings.preview(&changes)?;
    let outcomes = crate::check::twilio_checks(&config).await;
    let passed = outcomes.iter().all(|o| o.status != crate::check::Status::Fail);
    Ok(Json(json!({ "passed": passed, "outcomes": outcomes })))
}

// ---- the box's speaker and microphone ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Say {
    text: String,
}

pub(super) async fn say(State(lan): State<Lan>, Body(body): Body<Say>) -> Answer<StatusCode> {
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
    match lan.appliance.try_say(text) {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(busy) => {
            let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, busy.to_string());
            error.retry_after = Some(5);
            Err(error)
        }
    }
}

pub(super) async fn speaker_test(State(lan): State<Lan>) -> StatusCode {
    lan.appliance.speaker().play(&crate::call::responder::chime());
    StatusCode::ACCEPTED
}

pub(super) async fn play_messages(State(lan): State<Lan>) -> StatusCode {
    let appliance = lan.appliance.clone();
    tokio::spawn(async move { appliance.play_messages().await });
    StatusCode::ACCEPTED
}
