//! VOCA Box: a Raspberry Pi home voice appliance that owns a Twilio phone number.
//!
//! Module map (see DESIGN.md for the whole picture):
//! - [`config`]: typed configuration from defaults, one TOML file and the environment.
//! - [`telemetry`]: logging set-up (plain lines under systemd, RUST_LOG honoured).
//! - [`events`]: the state snapshot everything else shows (LEDs, status page).
//! - [`app`]: wiring and orderly shutdown of `voca run`; [`commands`]: the other subcommands.
//! - [`service`]: systemd's notify protocol and a watchdog fed only while the box answers.
//! - [`web`]: the HTTP server loop and the LAN routes (`/healthz`).
//! - [`twilio`]: signatures, TwiML, Media Streams wire types, webhook routes, REST client, simulator.
//! - [`call`]: active calls, one session per Media Stream, responders.
//! - [`assistant`]: offline intents and skills, optional LLM.
//! - [`store`]: the SQLite call log, call-out queue and sync cursor.
//! - [`tunnel`]: reaching Twilio from behind NAT (ngrok, external URL), the connectivity monitor.
//! - [`callout`]: durable call-outs; [`sync`]: calls missed while offline.
//! - [`panel`]: LEDs and buttons (GPIO or simulated); [`appliance`]: what they do on the box.
//! - [`speech`]: VOSK models, the listening loop (VAD, backlog) and recognizer pool, the espeak-ng TTS
//!   thread, prompts per language.
//! - [`audio`]: G.711, resampling, pacing, VAD, WAV files, ALSA devices.
//! - [`check`]: `voca check`, the doctor-style self-test.
//! - [`settings`]: what the LAN page changes, layered over the config file; [`web`]: the LAN page,
//!   its API, events and metrics; [`home`]: Home Assistant over MQTT discovery; [`metrics`]: the
//!   counters behind `/metrics`.
//!
//! Data flow of one answered call:
//! ```text
//! Twilio --POST /twilio/voice (signed)--> http: verify, admit --> TwiML <Connect><Stream>
//! Twilio ==wss /twilio/media==> session: mu-law 8k -> 16k -> VAD -> ear -> VOSK -> assistant -> TTS -> 8k mu-law -> pacer
//! stop / hang-up -> call log (SQLite) -> events -> LEDs, web page, metrics
//! ```

pub mod app;
pub mod appliance;
pub mod assistant;
pub mod audio;
pub mod call;
pub mod callout;
pub mod check;
pub mod clock;
pub mod commands;
pub mod config;
pub mod events;
pub mod home;
pub mod metrics;
pub mod panel;
pub mod service;
pub mod settings;
pub mod speech;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod tunnel;
pub mod twilio;
pub mod web;
