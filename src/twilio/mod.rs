//! Twilio: request signatures, TwiML, the Media Streams wire format and the REST API client.

pub mod media;
pub mod number;
pub mod rest;
pub mod signature;
pub mod simulator;
pub mod twiml;

/// The base URL Twilio reaches the box at. It changes when a tunnel reconnects with a new address;
/// webhooks are verified against the current one. Cheap to clone (one shared value).
#[derive(Debug, Clone)]
pub struct PublicUrl(crate::swap::Swap<url::Url>);

impl PublicUrl {
    pub fn new(url: url::Url) -> Self {
        Self(crate::swap::Swap::new(url))
    }

    pub fn get(&self) -> url::Url {
        self.0.get()
    }

    pub fn set(&self, url: url::Url) {
        self.0.set(url);
    }

    /// `path` (e.g. `/twilio/voice`) under the current base.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.get().as_str().trim_end_matches('/'))
    }
}
