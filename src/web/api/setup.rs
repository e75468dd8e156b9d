//! The first set-up (with a press of the box's button) and logging in and out.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{no_store, Answer, ApiError, Body};
use crate::net::Peer;
use crate::web::auth::{self, AuthError};
use crate::web::Lan;

pub(super) fn with_cookie(mut response: Response, cookie: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    no_store(response)
}

pub(super) fn opened(opened: auth::Opened) -> Response {
    let cookie = auth::set_cookie(&opened.cookie, opened.max_age);
    with_cookie(Json(json!({ "csrf": opened.csrf })).into_response(), cookie)
}

// ---- first set-up, login ----

pub(super) async fn setup_status(State(lan): State<Lan>) -> Json<Value> {
    Json(json!({ "password_set": lan.auth.password_set() }))
}

/// Starts the first set-up: the box speaks a code and waits for a press of any of its buttons.
pub(super) async fn setup_start(State(lan): State<Lan>, headers: HeaderMap) -> Answer<Json<Value>> {
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
            appliance.say_privately(&format!("{}: {code}.", appliance.language().setup_code)).await;
        }
    });
    Ok(Json(json!({
        "token": started.token,
        "how": "press any button on the box, or type the code the box speaks",
    })))
}

pub(super) async fn setup_progress(State(lan): State<Lan>, Path(token): Path<String>) -> Answer<Json<Value>> {
    Ok(Json(json!({ "button_pressed": lan.auth.setup_state(&token)? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Finish {
    token: String,
    password: String,
    #[serde(default)]
    code: Option<String>,
}

pub(super) async fn setup_finish(
    State(lan): State<Lan>,
    headers: HeaderMap,
    Body(body): Body<Finish>,
) -> Answer<Response> {
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
pub(super) struct Login {
    password: String,
}

pub(super) async fn login(
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

pub(super) async fn logout(State(lan): State<Lan>, headers: HeaderMap) -> Answer<Response> {
    auth::same_origin(&headers)?;
    if let Some(cookie) = auth::session_cookie(&headers) {
        lan.auth.logout(&cookie);
    }
    Ok(with_cookie(StatusCode::NO_CONTENT.into_response(), auth::set_cookie("", Duration::ZERO)))
}

/// Whether this browser is logged in (and its CSRF token, for a page that was reloaded).
pub(super) async fn session(State(lan): State<Lan>, headers: HeaderMap) -> Answer<Response> {
    let csrf = auth::session_cookie(&headers).and_then(|c| lan.auth.session(&c)).ok_or(AuthError::NoSession)?;
    Ok(no_store(Json(json!({ "csrf": csrf })).into_response()))
}

// ---- status ----
