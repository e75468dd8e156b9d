//! Twilio's REST API (2010-04-01) over reqwest + rustls: the requests the box makes, and Twilio's
//! error bodies turned into errors that say what went wrong.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use thiserror::Error;

use crate::config::{AccountSid, Secret, TwilioConfig, E164};
use crate::twilio::media::CallSid;

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
    Transport { what: String, base: String, reason: String },
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
}

#[derive(Debug, Deserialize)]
struct IncomingNumberPage {
    incoming_phone_numbers: Vec<IncomingNumber>,
}

/// A client for one account. `Debug` shows the base URL and account only, never the token.
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: url::Url,
    account: AccountSid,
    token: Secret,
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
            })?;
        Ok(Self { http, base: config.api_base.clone(), account, token: config.auth_token.clone() })
    }

    /// `GET /Accounts/{AC}.json`: proves the credentials work.
    pub async fn account(&self) -> Result<Account, RestError> {
        let path = format!("Accounts/{}.json", self.account.as_str());
        self.get("the account look-up", &path, &[]).await
    }

    /// Finds the account's incoming number equal to `number`, if the account owns it.
    pub async fn find_number(&self, number: &E164) -> Result<Option<IncomingNumber>, RestError> {
        let path = format!("Accounts/{}/IncomingPhoneNumbers.json", self.account.as_str());
        let page: IncomingNumberPage =
            self.get("the phone number look-up", &path, &[("PhoneNumber", number.as_str())]).await?;
        Ok(page.incoming_phone_numbers.into_iter().find(|n| n.phone_number == number.as_str()))
    }

    /// Ends a call: `Status=completed` (a call that is not yet answered is cancelled by Twilio).
    pub async fn hang_up(&self, call: &CallSid) -> Result<(), RestError> {
        let path = format!("Accounts/{}/Calls/{}.json", self.account.as_str(), call.as_str());
        let _: serde_json::Value = self.post("the hang-up", &path, &[("Status", "completed")]).await?;
        Ok(())
    }

    fn url(&self, path: &str) -> url::Url {
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}/{API_VERSION}/{path}"));
        url
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, RestError> {
        let request =
            self.http.get(self.url(path)).query(query).basic_auth(self.account.as_str(), Some(self.token.expose()));
        let response = request.send().await.map_err(|e| self.transport(what, &e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport(what, &e))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| RestError::Decode { what: what.into(), reason: e.to_string() });
        }
        Err(self.api_error(what, status, &body))
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<T, RestError> {
        let request =
            self.http.post(self.url(path)).form(form).basic_auth(self.account.as_str(), Some(self.token.expose()));
        let response = request.send().await.map_err(|e| self.transport(what, &e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport(what, &e))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| RestError::Decode { what: what.into(), reason: e.to_string() });
        }
        Err(self.api_error(what, status, &body))
    }

    fn transport(&self, what: &str, e: &reqwest::Error) -> RestError {
        // reqwest's own message names the URL; the URL never carries credentials (they go in a header).
        let reason = if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            "connection failed (no network, or wrong `twilio.api_base`)".to_owned()
        } else {
            e.to_string()
        };
        RestError::Transport { what: what.into(), base: self.base.to_string(), reason }
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
