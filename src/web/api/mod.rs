//! The JSON API under `/api/` that the page itself uses (so scripts can too). Every route but the
//! set-up and login ones needs a session; every state-changing one also the box's Origin and the
//! session's CSRF token (see [`super::auth`]). Errors are `{"error": "...", "field": "..."}` with a
//! message that names the field and what is expected. The routes are grouped by what they serve:
//! [`setup`] (first set-up, login), [`calls`] (the call log, voicemail, usage), [`contacts`], and
//! [`device`] (settings, self-test, speaker, messages).

mod calls;
mod contacts;
mod device;
mod setup;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::AuthError;
use super::Lan;
use crate::config::settings::SettingsError;

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
            AuthError::NotSetUp
            | AuthError::AlreadySetUp
            | AuthError::NotProven
            | AuthError::NoChallenge
            | AuthError::SetupPending(_) => StatusCode::CONFLICT,
            AuthError::WeakPassword | AuthError::WrongCode(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AuthError::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut error = Self::new(status, e.to_string());
        error.field = match e {
            AuthError::WeakPassword | AuthError::WrongPassword => Some("password".into()),
            AuthError::WrongCode(_) => Some("code".into()),
            _ => None,
        };
        if let AuthError::TooMany(seconds) | AuthError::SetupPending(seconds) = e {
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
pub(super) fn optional_body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("the body does not fit: {e}")))
}

pub(super) type Answer<T> = Result<T, ApiError>;

pub fn routes(lan: Lan) -> Router {
    let open = Router::new()
        .route("/api/setup", get(setup::setup_status))
        .route("/api/setup/start", post(setup::setup_start))
        .route("/api/setup/{token}", get(setup::setup_progress))
        .route("/api/setup/finish", post(setup::setup_finish))
        .route("/api/login", post(setup::login))
        .route("/api/logout", post(setup::logout))
        .route("/api/session", get(setup::session));
    let guarded = Router::new()
        .route("/api/status", get(calls::status))
        .route("/api/calls", get(calls::calls))
        .route("/api/calls/{sid}", get(calls::call))
        .route("/api/calls/{sid}/hangup", post(calls::hang_up))
        .route("/api/calls/{sid}/heard", post(calls::heard))
        .route("/api/calls/{sid}/voicemail", get(calls::voicemail).delete(calls::delete_voicemail))
        .route("/api/usage", get(calls::usage))
        .route("/api/contacts", get(contacts::contacts).post(contacts::add_contact))
        .route("/api/contacts/{id}", put(contacts::edit_contact).delete(contacts::delete_contact))
        .route("/api/contacts/{id}/call", post(contacts::call_contact))
        .route("/api/settings", get(device::settings).put(device::change_settings))
        .route("/api/check", post(device::check))
        .route("/api/check/twilio", post(device::check_twilio))
        .route("/api/say", post(device::say))
        .route("/api/speaker/test", post(device::speaker_test))
        .route("/api/microphone/level", get(super::live::microphone))
        .route("/api/events", get(super::live::events))
        .route("/api/messages/play", post(device::play_messages))
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

pub(super) fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
