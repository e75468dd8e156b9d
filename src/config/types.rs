//! Typed configuration values: each one parses itself and says what it expects when it cannot.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Which engine speaks (`speech.tts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TtsKind {
    /// A Piper voice (`speech.voice` names it), espeak-ng if it cannot load.
    #[default]
    Piper,
    Espeak,
}

/// How the box recognises speech (`speech.recognition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recognition {
    /// The assistant's own phrases first (a closed grammar: exact and cheap); an utterance the
    /// grammar cannot place is decoded again, free-form, so words outside it are still caught.
    GrammarFirst,
    /// Only the assistant's phrases.
    Grammar,
    /// Free-form only (the model's whole vocabulary, on every frame).
    Free,
}

/// How the box decides that a caller has finished their turn (`speech.end_of_turn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndOfTurn {
    /// At a short pause the end-of-turn model decides; the hangover if it is not installed.
    Model,
    /// A fixed `speech.endpoint_hangover` of quiet.
    Hangover,
}

/// A secret (auth token, API key). It has no `Display`, and its `Debug` never shows the value,
/// so it cannot leak through logs, errors or `{:?}` dumps of the configuration.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send it (an HTTP header, an HMAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "[redacted]" } else { "[unset]" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Secret(s.trim().to_owned()))
    }
}

/// A phone number in E.164 form (`+` and 2 to 15 digits, no leading zero).
///
/// `Display` and `Debug` mask all but the last 4 digits, so a number can be logged safely;
/// `as_str` gives the full number for the wire.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `+*******4567`: what logs and status pages show.
    pub fn masked(&self) -> String {
        mask_phone(&self.0)
    }
}

/// Masks all but the last 4 digits of anything that may be a phone number (`From` values can also
/// be `client:alice` or `anonymous`; those are masked the same way, never shown whole).
pub fn mask_phone(number: &str) -> String {
    // Outside text (a caller ID) reaches logs and terminals: nothing but digits, letters and `+`
    // passes, so an escape sequence at its end cannot.
    let chars: Vec<char> =
        number.chars().map(|c| if c.is_ascii_alphanumeric() || c == '+' { c } else { '?' }).collect();
    let keep = chars.len().min(4);
    let hidden = chars.len() - keep;
    let prefix = if chars.first() == Some(&'+') && hidden > 0 { "+" } else { "" };
    let stars = hidden.saturating_sub(prefix.len());
    let tail: String = chars[hidden..].iter().collect();
    format!("{prefix}{}{tail}", "*".repeat(stars))
}

impl FromStr for E164 {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let compact: String = s.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.')).collect();
        let digits = compact.strip_prefix('+').ok_or_else(|| {
            format!("invalid phone number \"{s}\": expected E.164 form with a leading +, like \"+15551234567\"")
        })?;
        let ok =
            (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
        if ok {
            Ok(E164(compact))
        } else {
            Err(format!(
                "invalid phone number \"{s}\": expected E.164 form, + then 2 to 15 digits with no leading 0, like \"+15551234567\""
            ))
        }
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164({})", self.masked())
    }
}

/// A Twilio Account SID: `AC` followed by 32 hex digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AccountSid(String);

impl AccountSid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AccountSid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let hex = s.strip_prefix("AC").unwrap_or("");
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(AccountSid(s.to_owned()))
        } else {
            Err(format!(
                "invalid account SID \"{}\": expected AC followed by 32 hex digits (see the Twilio console)",
                abbreviate(s)
            ))
        }
    }
}

/// An account SID is not a secret, but shown in full it is noise: `AC…1234`.
impl fmt::Display for AccountSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&abbreviate(&self.0))
    }
}

impl fmt::Debug for AccountSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountSid({})", abbreviate(&self.0))
    }
}

fn abbreviate(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 8 {
        return s.to_owned();
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// A duration written as text: `"500ms"`, `"20s"`, `"5m"`, `"1h 30m"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim()).map(Duration).map_err(|_| {
            format!("invalid duration \"{s}\": expected a number with a unit, like \"500ms\", \"20s\", \"5m\" or \"1h 30m\"")
        })
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Deserializes any `FromStr` type from a TOML string, keeping the type's own error message.
macro_rules! deserialize_from_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(E164, AccountSid, Duration);

/// An optional value where the empty string means "not set" (so every key can appear in the
/// defaults, and an environment variable can clear a value).
pub(crate) fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        Ok(None)
    } else {
        text.trim().parse().map(Some).map_err(de::Error::custom)
    }
}

/// An optional path where the empty string means "not set".
pub(crate) fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::path::PathBuf>, D::Error> {
    let text = String::deserialize(d)?;
    Ok(if text.trim().is_empty() { None } else { Some(text.trim().into()) })
}

/// An `http`/`https` URL with a host and no query or fragment: a base that paths are appended to.
pub(crate) fn base_url<'de, D: Deserializer<'de>>(d: D) -> Result<url::Url, D::Error> {
    let text = String::deserialize(d)?;
    parse_base_url(&text).map_err(de::Error::custom)
}

pub(crate) fn optional_base_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_base_url(&text).map(Some).map_err(de::Error::custom)
}

/// `mqtt://host[:port]` or `mqtts://host[:port]` (TLS, rustls with the system's roots).
pub(crate) fn optional_broker_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let expected = "expected a broker URL like \"mqtt://homeassistant.local:1883\" or \"mqtts://broker.example:8883\"";
    let url = url::Url::parse(text.trim())
        .map_err(|e| de::Error::custom(format!("invalid URL \"{}\" ({e}): {expected}", shown_url(&text))))?;
    let fine = matches!(url.scheme(), "mqtt" | "mqtts")
        && url.host().is_some()
        && matches!(url.path(), "" | "/")
        && url.query().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if fine {
        Ok(Some(url))
    } else {
        Err(de::Error::custom(format!(
            "invalid broker URL \"{}\": {expected}, credentials in mqtt.username and mqtt.password",
            shown_url(&text)
        )))
    }
}

fn parse_base_url(text: &str) -> Result<url::Url, String> {
    let expected = "expected an http:// or https:// base URL like \"https://box.example.com\"";
    let url =
        url::Url::parse(text.trim()).map_err(|e| format!("invalid URL \"{}\" ({e}): {expected}", shown_url(text)))?;
    let fine = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if fine {
        Ok(url)
    } else {
        Err(format!("invalid URL \"{}\": {expected}, with no query, fragment or credentials", shown_url(text)))
    }
}

/// A URL as an error message may show it: any `user:password@` replaced by `***@` (a password
/// must not reach a log or a terminal because it was put in the wrong place), control characters
/// escaped.
pub fn shown_url(text: &str) -> String {
    let text = text.trim();
    let start = text.find("://").map_or(0, |i| i + 3);
    let end = text[start..].find(['/', '?', '#']).map_or(text.len(), |i| start + i);
    let shown = match text[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &text[start + at..]),
        None => text.to_owned(),
    };
    shown.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_accepts_common_spellings_and_rejects_the_rest() {
        assert_eq!("+1 (555) 123-4567".parse::<E164>().map(|n| n.0), Ok("+15551234567".into()));
        assert!("+821012345678".parse::<E164>().is_ok());
        for bad in ["5551234567", "+0123", "+1", "+1234567890123456", "+1555abc4567", ""] {
            let err = bad.parse::<E164>().expect_err(bad);
            assert!(err.contains("E.164"), "{err}");
        }
    }

    #[test]
    fn phone_numbers_are_masked_to_their_last_four_digits() {
        let n: E164 = "+15551234567".parse().expect("valid");
        assert_eq!(n.to_string(), "+*******4567");
        assert_eq!(format!("{n:?}"), "E164(+*******4567)");
        assert_eq!(mask_phone("anonymous"), "*****mous");
        assert_eq!(mask_phone("123"), "123");
        // A caller ID ending in a terminal escape sequence (set the title, clear the screen).
        let hostile = "+1555\u{1b}]0;owned\u{7}\u{1b}[2J";
        let masked = mask_phone(hostile);
        assert!(masked.chars().all(|c| c.is_ascii_graphic()), "{masked:?}");
        assert!(masked.ends_with("??2J") && masked.starts_with('+'), "{masked:?}");
    }

    #[test]
    fn credentials_in_a_mistyped_url_never_reach_an_error() {
        assert_eq!(shown_url("https://user:s3cret@exa mple.com/x"), "https://***@exa mple.com/x");
        assert_eq!(shown_url("mqtt://voca:pw@host:99999"), "mqtt://***@host:99999");
        assert_eq!(shown_url("https://box.example.com/a@b"), "https://box.example.com/a@b");
        assert_eq!(shown_url("http://x\u{1b}[2J/"), "http://x\\u{1b}[2J/");
        let e = parse_base_url("https://u:s3cretPW@ho st/").expect_err("invalid");
        assert!(!e.contains("s3cretPW"), "{e}");
        let e = parse_base_url("https://u:s3cretPW@host/").expect_err("credentials");
        assert!(!e.contains("s3cretPW"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = Secret::new("0123456789abcdef");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Secret::default()), "[unset]");
        assert_eq!(s.expose(), "0123456789abcdef");
    }

    #[test]
    fn durations_need_units() {
        assert_eq!("20s".parse::<Duration>().map(|d| d.0.as_secs()), Ok(20));
        assert_eq!("1h 30m".parse::<Duration>().map(|d| d.0.as_secs()), Ok(5400));
        assert_eq!("500ms".parse::<Duration>().map(|d| d.0.as_millis()), Ok(500));
        for bad in ["20", "soon", "-5s"] {
            assert!(bad.parse::<Duration>().expect_err(bad).contains("\"20s\""));
        }
    }

    #[test]
    fn account_sids_are_checked_and_abbreviated() {
        let sid: AccountSid = "AC0123456789abcdef0123456789abcdef".parse().expect("valid");
        assert_eq!(sid.to_string(), "AC…cdef");
        assert!("AC123".parse::<AccountSid>().is_err());
        assert!("XX0123456789abcdef0123456789abcdef".parse::<AccountSid>().is_err());
    }

    #[test]
    fn base_urls_reject_queries_and_other_schemes() {
        assert!(parse_base_url("https://box.example.com").is_ok());
        assert!(parse_base_url("http://127.0.0.1:4010").is_ok());
        for bad in ["ftp://x", "https://x/?a=1", "not a url", "https://user:pw@x"] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }
}
