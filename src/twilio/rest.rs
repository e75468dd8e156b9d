//! Twilio's REST API (2010-04-01) over reqwest + rustls: the requests the box makes, and Twilio's
//! error bodies turned into errors that say what went wrong.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use thiserror::Error;

use crate::config::{AccountSid, Secret, TwilioConfig, E164};
use crate::net::Backoff;
use crate::twilio::media::{CallSid, RecordingSid};

const API_VERSION: &str = "2010-04-01";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Error)]
pub enum RestError {
    #[error("Twilio credentials are not configured: set `twilio.account_sid` and `twilio.auth_token` (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)")]
    NotConfigured,
    #[error("Twilio rejected the credentials for account {account} (HTTP {status}): check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")]
    Unauthorized { account: String, status: u16 },
    #[error("Twilio answered {what} with HTTP {status}{}: {message}", code.map(|c| format!(" (error {c})")).unwrap_or_default())]
    Api { what: String, status: u16, code: Option<u32>, message: String, more_info: Option<String> },
    #[error("cannot reach the Twilio API at {base} for {what}: {reason}")]
    Transport {
        what: String,
        base: String,
        reason: String,
        /// The connection failed: nothing reached Twilio, so sending again cannot do anything twice.
        nothing_sent: bool,
    },
    #[error("Twilio's answer to {what} is not what the box expects: {reason}")]
    Decode { what: String, reason: String },
}

/// Twilio's error JSON in either shape: `{code, message, more_info, status}` or the newer
/// `{type, title, status, code, detail}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: Option<u32>,
    message: Option<String>,
    more_info: Option<String>,
    title: Option<String>,
    detail: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub sid: String,
    pub friendly_name: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IncomingNumber {
    pub sid: String,
    pub phone_number: String,
    pub voice_url: Option<String>,
    pub voice_application_sid: Option<String>,
    pub status_callback: Option<String>,
    pub trunk_sid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IncomingNumberPage {
    incoming_phone_numbers: Vec<IncomingNumber>,
}

/// A call as the API reports it. Numbers are whole here: mask them before logging.
#[derive(Debug, Clone, Deserialize)]
pub struct CallResource {
    pub sid: String,
    pub status: Option<String>,
    pub direction: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub start_time: Option<String>,
    pub duration: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CallPage {
    calls: Vec<CallResource>,
    next_page_uri: Option<String>,
}

/// A recording Twilio made of a call. Its SID names a file on the box and a path on the API: only
/// `RE` and 32 hex digits is taken (see [`RestClient::list_recordings`]).
#[derive(Debug, Clone)]
pub struct Recording {
    pub sid: RecordingSid,
    pub duration: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RecordingPage {
    recordings: Vec<RawRecording>,
}

/// A recording as the API lists it, before its SID is checked.
#[derive(Debug, Deserialize)]
struct RawRecording {
    sid: String,
    duration: Option<String>,
}

/// What `place_call` sends: the box's webhook answers the call once it connects.
#[derive(Debug, Clone)]
pub struct NewCall<'a> {
    pub to: &'a E164,
    pub from: &'a E164,
    /// The box's `/twilio/voice` URL.
    pub url: &'a str,
    /// The box's `/twilio/status` URL, for initiated/ringing/answered/completed.
    pub status_callback: Option<&'a str>,
    /// Seconds to let it ring.
    pub timeout: Option<u32>,
    /// Answering-machine detection (`Enable`), to skip voicemail in an emergency chain.
    pub detect_machine: bool,
}

/// Filters for `list_calls`.
#[derive(Debug, Clone, Default)]
pub struct CallFilter<'a> {
    pub to: Option<&'a str>,
    pub from: Option<&'a str>,
    pub status: Option<&'a str>,
    /// RFC 3339 date-time, e.g. `2026-01-01T00:00:00Z`: calls that started after it.
    pub started_after: Option<&'a str>,
    /// Stop after this many.
    pub limit: usize,
}

/// Webhook URLs to put on the box's number.
#[derive(Debug, Clone)]
pub struct NumberWebhooks<'a> {
    pub voice_url: &'a str,
    pub status_callback: &'a str,
    pub fallback_url: Option<&'a str>,
}

/// Whether a request may be sent again after a failure that could have happened after Twilio
/// acted on it (a 5xx, a timeout). 429 and connection failures are always safe to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Idempotent,
    Once,
    /// A probe: one attempt, the answer is whether it worked now.
    Never,
}

const ATTEMPTS: u32 = 4;

/// A client for one account. `Debug` shows the base URL and account only, never the token.
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: url::Url,
    account: AccountSid,
    token: Secret,
    backoff: Duration,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient").field("base", &self.base.as_str()).field("account", &self.account).finish()
    }
}

impl RestClient {
    pub fn new(config: &TwilioConfig) -> Result<Self, RestError> {
        let account = config.account_sid.clone().ok_or(RestError::NotConfigured)?;
        if !config.auth_token.is_set() {
            return Err(RestError::NotConfigured);
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("voca-box/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RestError::Transport {
                what: "client set-up".into(),
                base: config.api_base.to_string(),
                reason: e.to_string(),
                nothing_sent: true,
            })?;
        Ok(Self {
            http,
            base: config.api_base.clone(),
            account,
            token: config.auth_token.clone(),
            backoff: Duration::from_millis(500),
        })
    }

    /// The first pause between retries (doubling, with jitter); tests make it short.
    pub fn with_backoff(mut self, first: Duration) -> Self {
        self.backoff = first;
        self
    }

    fn account_path(&self, rest: &str) -> String {
        format!("Accounts/{}{rest}", self.account.as_str())
    }

    /// `GET /Accounts/{AC}.json`: proves the credentials work.
    pub async fn account(&self) -> Result<Account, RestError> {
        self.send("the account look-up", Method::GET, &self.account_path(".json"), &[], Retry::Idempotent).await
    }

    /// One quick `GET /Accounts/{AC}.json`, not retried: can the box reach Twilio's API right now?
    pub async fn probe(&self) -> Result<Account, RestError> {
        self.send("the reachability probe", Method::GET, &self.account_path(".json"), &[], Retry::Never).await
    }

    /// Finds the account's incoming number equal to `number`, if the account owns it.
    pub async fn find_number(&self, number: &E164) -> Result<Option<IncomingNumber>, RestError> {
        let path = self.account_path("/IncomingPhoneNumbers.json");
        let page: IncomingNumberPage = self
            .send(
                "the phone number look-up",
                Method::GET,
                &path,
                &[("PhoneNumber", number.as_str())],
                Retry::Idempotent,
            )
            .await?;
        Ok(page.incoming_phone_numbers.into_iter().find(|n| n.phone_number == number.as_str()))
    }

    /// Points a number's voice webhook, status callback and (optionally) fallback at the box.
    pub async fn set_number_webhooks(
        &self,
        number_sid: &str,
        hooks: &NumberWebhooks<'_>,
    ) -> Result<IncomingNumber, RestError> {
        let path = self.account_path(&format!("/IncomingPhoneNumbers/{number_sid}.json"));
        let mut form = vec![
            ("VoiceUrl", hooks.voice_url),
            ("VoiceMethod", "POST"),
            ("StatusCallback", hooks.status_callback),
            ("StatusCallbackMethod", "POST"),
        ];
        if let Some(fallback) = hooks.fallback_url {
            form.extend([("VoiceFallbackUrl", fallback), ("VoiceFallbackMethod", "POST")]);
        }
        // Setting the same URLs twice changes nothing: safe to retry.
        self.send("the number update", Method::POST, &path, &form, Retry::Idempotent).await
    }

    /// Places a call. Never retried after it may have reached Twilio: a second POST could ring twice.
    pub async fn place_call(&self, call: &NewCall<'_>) -> Result<CallResource, RestError> {
        let timeout = call.timeout.map(|t| t.to_string());
        let mut form =
            vec![("To", call.to.as_str()), ("From", call.from.as_str()), ("Url", call.url), ("Method", "POST")];
        if let Some(cb) = call.status_callback {
            form.extend([("StatusCallback", cb), ("StatusCallbackMethod", "POST")]);
            for event in ["initiated", "ringing", "answered", "completed"] {
                form.push(("StatusCallbackEvent", event));
            }
        }
        if let Some(t) = &timeout {
            form.push(("Timeout", t));
        }
        if call.detect_machine {
            form.push(("MachineDetection", "Enable"));
        }
        self.send("placing the call", Method::POST, &self.account_path("/Calls.json"), &form, Retry::Once).await
    }

    /// Ends a call: `Status=completed` (a call that is not yet answered is cancelled by Twilio).
    pub async fn hang_up(&self, call: &CallSid) -> Result<CallResource, RestError> {
        let path = self.account_path(&format!("/Calls/{}.json", call.as_str()));
        self.send("the hang-up", Method::POST, &path, &[("Status", "completed")], Retry::Idempotent).await
    }

    /// Replaces a live call's instructions with `twiml` (e.g. a `<Dial>` to transfer the caller).
    pub async fn redirect(&self, call: &CallSid, twiml: &str) -> Result<CallResource, RestError> {
        let path = self.account_path(&format!("/Calls/{}.json", call.as_str()));
        self.send("the call transfer", Method::POST, &path, &[("Twiml", twiml)], Retry::Idempotent).await
    }

    /// Lists calls, newest first, following `next_page_uri` until `filter.limit` are found.
    pub async fn list_calls(&self, filter: &CallFilter<'_>) -> Result<Vec<CallResource>, RestError> {
        let limit = if filter.limit == 0 { 50 } else { filter.limit };
        let page_size = limit.min(1000).to_string();
        let mut query: Vec<(&str, &str)> = vec![("PageSize", &page_size)];
        let pairs =
            [("To", filter.to), ("From", filter.from), ("Status", filter.status), ("StartTime>", filter.started_after)];
        query.extend(pairs.iter().filter_map(|(k, v)| v.map(|v| (*k, v))));
        let mut page: CallPage = self
            .send("the call list", Method::GET, &self.account_path("/Calls.json"), &query, Retry::Idempotent)
            .await?;
        let mut calls = Vec::new();
        loop {
            calls.extend(page.calls);
            let Some(next) = page.next_page_uri.filter(|_| calls.len() < limit) else { break };
            // next_page_uri is absolute from the host: /2010-04-01/Accounts/…?Page=1&…
            let next = next.trim_start_matches('/').trim_start_matches(API_VERSION).trim_start_matches('/').to_owned();
            page = self.send("the call list", Method::GET, &next, &[], Retry::Idempotent).await?;
        }
        calls.truncate(limit);
        Ok(calls)
    }

    /// The recordings of one call (voicemail left while the box was away).
    pub async fn list_recordings(&self, call: &CallSid) -> Result<Vec<Recording>, RestError> {
        let path = self.account_path(&format!("/Calls/{}/Recordings.json", call.as_str()));
        let page: RecordingPage = self.send("the recording list", Method::GET, &path, &[], Retry::Idempotent).await?;
        // One odd entry costs that entry, not the others (its SID would name a file and a URL).
        let recordings = page.recordings.into_iter().filter_map(|r| match RecordingSid::parse(&r.sid) {
            Ok(sid) => Some(Recording { sid, duration: r.duration }),
            Err(e) => {
                tracing::warn!(call = %call, "the recording list: {e}: left out");
                None
            }
        });
        Ok(recordings.collect())
    }

    /// A recording's audio as a WAV file.
    pub async fn download_recording(&self, recording_sid: &RecordingSid) -> Result<bytes::Bytes, RestError> {
        let path = self.account_path(&format!("/Recordings/{}.wav", recording_sid.as_str()));
        self.send_raw("the recording download", Method::GET, &path, &[], Retry::Idempotent).await
    }

    fn url(&self, path: &str) -> url::Url {
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        url.set_path(&format!("{base_path}/{API_VERSION}/{path}"));
        url.set_query(Some(query).filter(|q| !q.is_empty()));
        url
    }

    /// Sends a request, retrying 429 (honouring Retry-After) always, and 5xx and timeouts only when
    /// `retry` says the request is idempotent; connection failures (nothing was sent) always.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        retry: Retry,
    ) -> Result<T, RestError> {
        let body = self.send_raw(what, method, path, params, retry).await?;
        serde_json::from_slice(&body).map_err(|e| RestError::Decode { what: what.into(), reason: e.to_string() })
    }

    /// Like `send`, returning the body as it came (recordings are audio, not JSON).
    async fn send_raw(
        &self,
        what: &str,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        retry: Retry,
    ) -> Result<bytes::Bytes, RestError> {
        let mut attempt = 0;
        let mut backoff = Backoff::new(self.backoff, self.backoff * 2u32.pow(ATTEMPTS));
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), self.url(path))
                .basic_auth(self.account.as_str(), Some(self.token.expose()));
            request = if method == Method::GET { request.query(params) } else { request.form(params) };
            let (wait, error) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(60)));
                    let body = response.bytes().await.map_err(|e| self.transport(what, &e))?;
                    if status.is_success() {
                        return Ok(body);
                    }
                    let error = self.api_error(what, status, &body);
                    if status.is_server_error() {
                        crate::telemetry::metrics::TWILIO_ERRORS_5XX.inc();
                    } else {
                        crate::telemetry::metrics::TWILIO_ERRORS_4XX.inc();
                    }
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || (status.is_server_error() && retry == Retry::Idempotent);
                    if !retryable || retry == Retry::Never {
                        return Err(error);
                    }
                    (retry_after, error)
                }
                Err(e) => {
                    crate::telemetry::metrics::TWILIO_ERRORS_TRANSPORT.inc();
                    let error = self.transport(what, &e);
                    if retry == Retry::Never || !(e.is_connect() || retry == Retry::Idempotent) {
                        return Err(error);
                    }
                    (None, error)
                }
            };
            if attempt >= ATTEMPTS {
                return Err(error);
            }
            let nominal = backoff.pause();
            let pause = wait.unwrap_or(nominal);
            tracing::warn!("{error}: retrying in {} ms (attempt {attempt} of {ATTEMPTS})", pause.as_millis());
            tokio::time::sleep(pause).await;
        }
    }

    fn transport(&self, what: &str, e: &reqwest::Error) -> RestError {
        // reqwest's own message names the URL; the URL never carries credentials (they go in a header).
        // The innermost cause says what went wrong ("Connection refused", "Name or service not known").
        let mut cause: &dyn std::error::Error = e;
        let mut dns = false;
        while let Some(inner) = cause.source() {
            dns |= inner.to_string().starts_with("dns error");
            cause = inner;
        }
        let reason = if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() && dns {
            let host = self.base.host_str().unwrap_or("the API host");
            format!("cannot look up {host} ({cause}): no network or no DNS, or wrong `twilio.api_base`")
        } else if e.is_connect() {
            format!("connection failed ({cause}): no network, or wrong `twilio.api_base`")
        } else {
            e.to_string()
        };
        RestError::Transport { what: what.into(), base: self.base.to_string(), reason, nothing_sent: e.is_connect() }
    }

    fn api_error(&self, what: &str, status: StatusCode, body: &[u8]) -> RestError {
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN && body.is_empty() {
            return RestError::Unauthorized { account: self.account.to_string(), status: status.as_u16() };
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let (code, message, more_info) = match parsed {
            Some(b) => {
                let message = [b.message, b.detail, b.title].into_iter().flatten().next();
                (b.code, message, b.more_info)
            }
            None => (None, None, None),
        };
        let message = message.unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("no details").to_owned()
            } else {
                text.chars().take(200).collect()
            }
        });
        if status == StatusCode::UNAUTHORIZED || code == Some(20003) {
            return RestError::Unauthorized { account: self.account.to_string(), status: status.as_u16() };
        }
        RestError::Api { what: what.into(), status: status.as_u16(), code, message, more_info }
    }
}

/// Decodes `body` as every answer the box reads from Twilio's API (account, numbers, calls,
/// recordings, errors): what the fuzz target feeds with arbitrary bytes. Returns how many decoded.
pub fn decode_answers(body: &[u8]) -> usize {
    let ok = |r: bool| usize::from(r);
    ok(serde_json::from_slice::<Account>(body).is_ok())
        + ok(serde_json::from_slice::<IncomingNumberPage>(body).is_ok())
        + ok(serde_json::from_slice::<CallResource>(body).is_ok())
        + ok(serde_json::from_slice::<CallPage>(body).is_ok())
        + ok(serde_json::from_slice::<RecordingPage>(body).is_ok())
        + ok(serde_json::from_slice::<ErrorBody>(body).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn client() -> RestClient {
        let mut c = Config::defaults().twilio;
        c.account_sid = Some("AC0123456789abcdef0123456789abcdef".parse().expect("sid"));
        c.auth_token = Secret::new("tok-should-not-leak");
        RestClient::new(&c).expect("client")
    }

    #[test]
    fn urls_are_built_under_the_api_base() {
        let c = client();
        assert_eq!(c.url("Accounts/AC1.json").as_str(), "https://api.twilio.com/2010-04-01/Accounts/AC1.json");
        assert!(!format!("{c:?}").contains("tok-should-not-leak"));
    }

    #[test]
    fn both_error_shapes_are_understood() {
        let c = client();
        let old = br#"{"code":21201,"message":"No 'To' number is specified","more_info":"https://www.twilio.com/docs/errors/21201","status":400}"#;
        match c.api_error("placing a call", StatusCode::BAD_REQUEST, old) {
            RestError::Api { code: Some(21201), message, more_info: Some(_), status: 400, .. } => {
                assert!(message.contains("'To'"))
            }
            other => panic!("unexpected {other:?}"),
        }
        let new = br#"{"type":"https://x/errors/20404","title":"Not Found","status":404,"code":20404,"detail":"The requested resource was not found"}"#;
        match c.api_error("a look-up", StatusCode::NOT_FOUND, new) {
            RestError::Api { code: Some(20404), message, .. } => assert!(message.contains("not found")),
            other => panic!("unexpected {other:?}"),
        }
        let auth = br#"{"code":20003,"message":"Authenticate","status":401}"#;
        let e = c.api_error("the account look-up", StatusCode::UNAUTHORIZED, auth);
        assert!(matches!(e, RestError::Unauthorized { status: 401, .. }), "{e:?}");
        assert!(!e.to_string().contains("tok-should-not-leak"));
        let html = c.api_error("x", StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert!(html.to_string().contains("HTTP 502"), "{html}");
    }
}
