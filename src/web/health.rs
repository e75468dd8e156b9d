//! `/healthz`: what the box is doing, as JSON, for scripts and the service tests (no login).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::call::registry::{CallSummary, Registry};
use crate::events::{DeviceState, StateBus};

/// What the status routes read.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub state: StateBus,
    pub started: Instant,
    pub registry: Arc<Registry>,
    /// The speech model's state, when the assistant answers calls.
    pub speech: Option<crate::speech::stt::Stt>,
    /// Who speaks (and why not the configured Piper voice), when the assistant answers calls.
    pub voice: Option<crate::speech::tts::VoiceStatus>,
    /// The end-of-turn model, when the assistant answers calls.
    pub turns: Option<crate::speech::turn::Turns>,
}

/// What the box is doing now: `/healthz`, and the heart of the page's `/api/status`.
#[derive(Debug, Serialize)]
pub struct Health {
    status: &'static str,
    state: DeviceState,
    name: String,
    version: &'static str,
    uptime_seconds: u64,
    /// `downloading`, `loading`, `warming`, `ready`, `failed` or `off`.
    speech: &'static str,
    /// How far the model's download has come (percent), while the box downloads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    speech_download_percent: Option<u64>,
    /// The voice: `engine` (`piper` or `espeak`), `voice`, and `fallback` (why not the configured
    /// Piper voice, and how to install it).
    tts: Option<crate::speech::tts::VoiceStatus>,
    /// Who ends a caller's turn: `ready` (the end-of-turn model), `loading`, `hangover` (no model:
    /// quiet alone; `end_of_turn_why` says why) or `off` (no assistant).
    end_of_turn: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_of_turn_why: Option<String>,
    /// What the box is busy with, and how many missed calls and voicemails wait to be heard.
    activity: crate::events::Activity,
    waiting: u32,
    /// The public URL (while the tunnel is up), why the tunnel last went down, Twilio's API reachable.
    network: crate::events::Network,
    /// Something needing attention (e.g. an audio device is missing).
    fault: Option<String>,
    calls: Vec<CallSummary>,
}

pub fn routes(status: Status) -> Router {
    Router::new().route("/healthz", get(healthz)).with_state(status)
}

async fn healthz(State(status): State<Status>) -> Json<Health> {
    Json(status.health())
}

impl Status {
    pub fn health(&self) -> Health {
        let status = self;
        let snapshot = status.state.snapshot();
        Health {
            status: "ok",
            state: snapshot.state,
            activity: snapshot.activity,
            waiting: snapshot.waiting,
            network: snapshot.network,
            fault: snapshot.fault,
            name: status.name.clone(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: status.started.elapsed().as_secs(),
            // loading (no call can be heard yet), warming (calls heard; the pool still warming), ready.
            speech: status.speech.as_ref().map_or("off", |s| s.state().as_str()),
            speech_download_percent: status.speech.as_ref().and_then(|s| s.download_percent()),
            tts: status.voice.clone(),
            end_of_turn: status.turns.as_ref().map_or("off", |t| t.state().as_str()),
            end_of_turn_why: status.turns.as_ref().and_then(|t| match t.state() {
                crate::speech::turn::TurnState::Off(why) => Some(why),
                _ => None,
            }),
            calls: status.registry.list(Instant::now()),
        }
    }
}
