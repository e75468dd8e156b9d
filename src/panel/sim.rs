//! The simulated panel: the same LEDs and buttons with no hardware. Buttons are pressed with
//! `POST /sim/buttons/{name}` and `{"press": "short"|"long"|"double"|"down"|"up"}` (`down`/`up` go
//! through the same press detector as GPIO edges, so holding works); `GET /sim/leds` returns each
//! LED's pattern. Every change is also logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::broadcast;
use tracing::info;

use super::board::Profile;
use super::press::{Detector, Timing};
use super::{ButtonEvent, ButtonRole, LedRole, Panel, Pattern, Press};

#[derive(Debug)]
pub struct SimPanel {
    profile: Profile,
    leds: Mutex<BTreeMap<LedRole, Pattern>>,
    detectors: Mutex<BTreeMap<String, Detector>>,
    events: broadcast::Sender<ButtonEvent>,
}

impl SimPanel {
    pub fn new(profile: Profile) -> Self {
        let leds = profile.leds.iter().map(|l| (l.role, Pattern::Off)).collect();
        let detectors = profile.buttons.iter().map(|b| (b.name.clone(), Detector::new(Timing::default()))).collect();
        Self { profile, leds: Mutex::new(leds), detectors: Mutex::new(detectors), events: broadcast::channel(64).0 }
    }

    /// Presses a button as a person would. Unknown buttons are an error naming the known ones.
    pub fn press(self: &Arc<Self>, button: &str, press: Press) -> Result<(), String> {
        let known = self.profile.buttons.iter().any(|b| b.name == button);
        if !known {
            let names: Vec<&str> = self.profile.buttons.iter().map(|b| b.name.as_str()).collect();
            return Err(format!("no button {button:?} on the sim board: it has {}", names.join(", ")));
        }
        info!(button, ?press, "sim panel: button");
        let presses = match press {
            Press::Down | Press::Up => {
                let mut detectors = self.detectors.lock().unwrap_or_else(|e| e.into_inner());
                let detector = detectors.entry(button.to_owned()).or_default();
                let presses = detector.edge(press == Press::Down, Instant::now());
                if press == Press::Up {
                    if let Some(deadline) = detector.deadline() {
                        self.classify_later(button.to_owned(), deadline);
                    }
                }
                presses
            }
            other => vec![other],
        };
        for press in presses {
            let _ = self.events.send(ButtonEvent { button: button.to_owned(), press });
        }
        Ok(())
    }

    /// Reports the pending short press once no second press can make it a double.
    fn classify_later(self: &Arc<Self>, button: String, deadline: Instant) {
        let panel = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            let short = {
                let mut detectors = panel.detectors.lock().unwrap_or_else(|e| e.into_inner());
                detectors.get_mut(&button).and_then(|d| d.tick(Instant::now()))
            };
            if let Some(press) = short {
                let _ = panel.events.send(ButtonEvent { button, press });
            }
        });
    }

    /// Each LED's pattern, by role name.
    pub fn leds(&self) -> BTreeMap<LedRole, Pattern> {
        self.leds.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Panel for SimPanel {
    fn board(&self) -> &str {
        &self.profile.name
    }

    fn set_led(&self, role: LedRole, pattern: Pattern) {
        let mut leds = self.leds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = leds.get_mut(&role) {
            if *current != pattern {
                info!(led = ?role, ?pattern, "sim panel: LED");
                *current = pattern;
            }
        }
    }

    fn events(&self) -> broadcast::Receiver<ButtonEvent> {
        self.events.subscribe()
    }

    fn buttons(&self) -> Vec<(String, ButtonRole, Option<u8>)> {
        self.profile.buttons.iter().map(|b| (b.name.clone(), b.role, b.slot)).collect()
    }

    fn shutdown(&self) {
        for pattern in self.leds.lock().unwrap_or_else(|e| e.into_inner()).values_mut() {
            *pattern = Pattern::Off;
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PressBody {
    press: Press,
}

/// `POST /sim/buttons/{name}` and `GET /sim/leds`.
pub fn routes(panel: Arc<SimPanel>) -> Router {
    Router::new().route("/sim/buttons/{name}", post(press)).route("/sim/leds", get(leds)).with_state(panel)
}

async fn press(State(panel): State<Arc<SimPanel>>, Path(name): Path<String>, body: axum::body::Bytes) -> Response {
    let body: PressBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            let msg = format!(
                "POST /sim/buttons/{name}: {e}; expected {{\"press\": \"short\"|\"long\"|\"double\"|\"down\"|\"up\"}}\n"
            );
            return (StatusCode::BAD_REQUEST, msg).into_response();
        }
    };
    match panel.press(&name, body.press) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    }
}

async fn leds(State(panel): State<Arc<SimPanel>>) -> Json<BTreeMap<LedRole, Pattern>> {
    Json(panel.leds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn held_buttons_report_edges_then_the_classified_press() {
        let panel = Arc::new(SimPanel::new(Profile::sim()));
        let mut events = panel.events();
        panel.press("talk", Press::Down).expect("down");
        panel.press("talk", Press::Up).expect("up");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = tokio::time::timeout(std::time::Duration::from_secs(2), events.recv()).await.expect("in time");
            seen.push(e.expect("event").press);
        }
        assert_eq!(seen, [Press::Down, Press::Up, Press::Short]);
        let e = panel.press("doorbell", Press::Short).expect_err("unknown");
        assert!(e.contains("call, call2, talk"), "{e}");
        panel.set_led(LedRole::Missed, Pattern::Solid);
        assert_eq!(panel.leds()[&LedRole::Missed], Pattern::Solid);
        panel.shutdown();
        assert_eq!(panel.leds()[&LedRole::Missed], Pattern::Off);
    }
}
