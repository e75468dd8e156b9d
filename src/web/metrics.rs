//! `/metrics` in Prometheus' text format (0.0.4), on the LAN listener only; with
//! `web.metrics_token` set it asks for `Authorization: Bearer <token>`.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::Lan;
use crate::telemetry::metrics as m;

pub fn routes(lan: Lan) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(lan)
}

fn authorized(lan: &Lan, headers: &HeaderMap) -> bool {
    let config = lan.settings.live().get();
    let token = &config.web.metrics_token;
    if !token.is_set() {
        return true;
    }
    let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    sent.is_some_and(|s| super::auth::constant_time_eq(s.as_bytes(), token.expose().as_bytes()))
}

async fn metrics(State(lan): State<Lan>, headers: HeaderMap) -> Response {
    if !authorized(&lan, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "expected Authorization: Bearer <web.metrics_token>\n",
        )
            .into_response();
    }
    let calls = match lan.store.call_counts().await {
        Ok(calls) => calls,
        Err(e) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("the call log does not answer: {e}\n")).into_response()
        }
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&lan, &calls)).into_response()
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &m::Histogram) {
        self.family(name, "histogram", help);
        let (buckets, sum, count) = h.read();
        for (bound, n) in buckets {
            self.sample(&format!("{name}_bucket"), &[("le", &bound.to_string())], n);
        }
        self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], count);
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], count);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn render(lan: &Lan, calls: &[(String, String, u64)]) -> String {
    let mut out = Out(String::new());
    let snapshot = lan.status.state.snapshot();
    out.family("voca_build_info", "gauge", "The box's software version.");
    out.sample("voca_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    out.one(
        "voca_uptime_seconds",
        "gauge",
        "Seconds since the box's engine started.",
        lan.status.started.elapsed().as_secs(),
    );

    out.family(
        "voca_calls_total",
        "counter",
        "Calls in the call log by direction and outcome (in-progress while open).",
    );
    for (direction, outcome, n) in calls {
        out.sample("voca_calls_total", &[("direction", direction), ("outcome", outcome)], n);
    }
    out.one("voca_active_calls", "gauge", "Calls in progress now.", lan.status.registry.len());
    out.one("voca_messages_waiting", "gauge", "Missed calls and voicemails not yet heard.", snapshot.waiting);
    out.histogram(
        "voca_turn_latency_seconds",
        "From the caller's transcript to the first audio of the reply.",
        &m::TURN_LATENCY,
    );
    out.one(
        "voca_barge_ins_total",
        "counter",
        "Replies cut because the caller spoke over them or pressed a key.",
        m::BARGE_INS.get(),
    );
    out.one(
        "voca_replies_resumed_total",
        "counter",
        "Replies picked up again where the caller stopped hearing them, after a sound without words cut them.",
        m::REPLIES_RESUMED.get(),
    );
    out.family("voca_turn_decisions_total", "counter", "End-of-turn model decisions at a caller's pause, by answer.");
    for (answer, n) in [
        ("finished", m::TURN_DECISIONS_FINISHED.get()),
        ("not_yet", m::TURN_DECISIONS_NOT_YET.get()),
        ("skipped", m::TURN_DECISIONS_SKIPPED.get()),
        ("late", m::TURN_DECISIONS_LATE.get()),
        ("phrase", m::TURN_ENDED_BY_PHRASE.get()),
    ] {
        out.sample("voca_turn_decisions_total", &[("answer", answer)], n);
    }

    let audio = m::DECODED_AUDIO_MICROS.get() as f64 / 1e6;
    let busy = m::DECODING_MICROS.get() as f64 / 1e6;
    out.one("voca_recognizer_audio_seconds_total", "counter", "Caller audio decoded by the recognizers.", audio);
    out.one("voca_recognizer_busy_seconds_total", "counter", "Time the recognizers spent decoding it.", busy);
    out.one(
        "voca_recognizer_real_time_factor",
        "gauge",
        "Decoding time over audio time since the start (below 1: faster than real time).",
        if audio > 0.0 { busy / audio } else { 0.0 },
    );
    out.histogram(
        "voca_recognizer_lag_seconds",
        "How far recognition was behind the caller when a turn ended.",
        &m::RECOGNIZER_LAG,
    );

    let model = lan.status.speech.as_ref().map_or("off", |s| s.state().as_str());
    out.family("voca_speech_model_state", "gauge", "The speech model's state (1 for the current one).");
    for state in ["off", "downloading", "loading", "warming", "ready", "failed"] {
        out.sample("voca_speech_model_state", &[("state", state)], u8::from(state == model));
    }
    out.one(
        "voca_tunnel_up",
        "gauge",
        "1 while the tunnel is up and Twilio can reach the box.",
        u8::from(snapshot.network.public_url.is_some()),
    );
    out.one(
        "voca_tunnel_reconnects_total",
        "counter",
        "Tunnel sessions lost and opened again.",
        m::TUNNEL_RECONNECTS.get(),
    );
    out.one(
        "voca_twilio_api_reachable",
        "gauge",
        "1 when Twilio's API answered the last probe.",
        u8::from(snapshot.network.api_reachable),
    );
    out.family("voca_twilio_api_errors_total", "counter", "Twilio API requests that failed, by kind.");
    out.sample("voca_twilio_api_errors_total", &[("kind", "refused")], m::TWILIO_ERRORS_4XX.get());
    out.sample("voca_twilio_api_errors_total", &[("kind", "server")], m::TWILIO_ERRORS_5XX.get());
    out.sample("voca_twilio_api_errors_total", &[("kind", "transport")], m::TWILIO_ERRORS_TRANSPORT.get());
    out.one("voca_audio_device_faults_total", "counter", "Times an audio device went wrong.", m::AUDIO_FAULTS.get());
    out.one(
        "voca_fault",
        "gauge",
        "1 while something needs attention (see /healthz).",
        u8::from(snapshot.fault.is_some()),
    );
    out.0
}
