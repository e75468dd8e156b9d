//! VOCA Box: a Raspberry Pi home voice appliance that owns a Twilio phone number.
//!
//! The crate is built in floors, and this file is its map: a module uses only modules on its own
//! floor or below (`tests/layering.rs` fails otherwise), so it reads from the bottom up. The whole
//! picture, with the data flow of one call, is in `docs/architecture.md`.
//!
//! ```text
//! Twilio --POST /twilio/voice (signed)--> call::webhook: verify, admit --> TwiML <Connect><Stream>
//! Twilio ==wss /twilio/media==> call::session: mu-law 8k -> 16k -> VAD -> ear -> VOSK -> assistant -> TTS -> 8k mu-law -> pacer
//! stop / hang-up -> store (SQLite) -> events -> LEDs, web page, Home Assistant, metrics
//! ```

// Floor 0, vocabulary: what every other floor speaks.
/// Wall-clock time, and what to do when NTP steps it.
pub mod clock;
/// Typed configuration: defaults, one TOML file, the page's settings, the environment.
pub mod config;
/// The state snapshot everything else shows (LEDs, page, Home Assistant).
pub mod events;
/// The HTTP/WebSocket server loop and the one retry policy.
pub mod net;
/// A value many read and one replaces whole (the public URL, the greeting).
pub mod swap;
/// Logging, and the counters behind `/metrics`.
pub mod telemetry;

// Floor 1, engines and resources: each owns one blocking thing or one protocol.
/// Offline intents and skills, the optional LLM.
pub mod assistant;
/// G.711, resampling, pacing, VAD, WAV files, ALSA devices.
pub mod audio;
/// LEDs and buttons: GPIO or simulated.
pub mod panel;
/// VOSK recognition, the listening loop, Piper and espeak-ng speech, models, voices, prompts.
pub mod speech;
/// The SQLite owner thread: call log, voicemail rows, call-out queue, sync cursor.
pub mod store;
/// Twilio's protocols only: signatures, TwiML, Media Streams, the REST client, a simulator.
pub mod twilio;

// Floor 2, the domain: calls and the appliance.
/// What the buttons, LEDs, speaker and microphone do on the box, intercom and ringing among them.
pub mod appliance;
/// Webhook routes, active calls, sessions, conversations, voicemail, call-outs, missed-call sync.
pub mod call;

// Floor 3, the faces: how the box is reached and seen.
/// `voca check`, the doctor-style self-test.
pub mod check;
/// Home Assistant over MQTT discovery.
pub mod home;
/// systemd's notify protocol and the watchdog.
pub mod service;
/// Reaching Twilio from behind NAT: ngrok or an external URL, the connectivity monitor.
pub mod tunnel;
/// The LAN page, its API, events, metrics and health.
pub mod web;

// Floor 4, wiring: `voca run` and the other subcommands.
/// Builds the subsystems of `voca run`, restarts them for settings, shuts down in order.
pub mod app;
/// Every `voca` subcommand but `run`.
pub mod commands;
