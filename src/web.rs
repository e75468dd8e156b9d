//! The box's HTTP listener routes that are not Twilio's: health and status for the LAN.

use std::time::Instant;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::events::{DeviceState, StateBus};

/// What the status routes read.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub state: StateBus,
    pub started: Instant,
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    state: DeviceState,
    name: String,
    version: &'static str,
    uptime_seconds: u64,
}

pub fn router(status: Status) -> Router {
    Router::new().route("/healthz", get(healthz)).with_state(status)
}

async fn healthz(State(status): State<Status>) -> Json<Health> {
    Json(Health {
        status: "ok",
        state: status.state.current(),
        name: status.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: status.started.elapsed().as_secs(),
    })
}
