//! Twilio: request signatures, TwiML, the Media Streams wire format and the REST API client.

pub mod media;
pub mod number;
pub mod rest;
pub mod signature;
pub mod simulator;
pub mod twiml;
pub mod webhook;
