//! Twilio: the REST API client (webhooks, TwiML and Media Streams come with the phone path).

pub mod rest;
