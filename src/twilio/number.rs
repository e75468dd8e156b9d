//! Pointing the box's Twilio number at the box: its voice webhook and status callback (and, if
//! configured, a fallback URL), confirmed by reading the number back. A number bound to a TwiML
//! application or a SIP trunk is left alone unless the owner consented (`twilio.force_number_setup`).

use thiserror::Error;

use super::rest::{IncomingNumber, NumberWebhooks, RestClient, RestError};
use crate::config::E164;

/// What the number's configuration is, seen from this box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// It already pointed here: nothing was changed.
    AlreadySet,
    /// It now points here (confirmed by reading it back).
    Updated { previous_voice_url: Option<String> },
}

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{number} is not a number of this Twilio account: check TWILIO_PHONE_NUMBER")]
    NotOwned { number: String },
    #[error(
        "{number} is bound to the TwiML application {sid}, which overrides its webhooks: the box leaves it alone. \
         Remove the application from the number in the Twilio console, or set `twilio.force_number_setup = true`"
    )]
    BoundToApplication { number: String, sid: String },
    #[error(
        "{number} is bound to the SIP trunk {sid}: the box leaves it alone. Take it off the trunk in the Twilio \
         console, or set `twilio.force_number_setup = true`"
    )]
    BoundToTrunk { number: String, sid: String },
    #[error("Twilio accepted the update of {number} but reading it back shows voice URL {found:?}")]
    NotConfirmed { number: String, found: Option<String> },
    #[error(transparent)]
    Rest(#[from] RestError),
}

/// The webhook URLs for a public base URL.
pub fn webhooks_for(base: &url::Url) -> (String, String) {
    let base = base.as_str().trim_end_matches('/');
    (format!("{base}/twilio/voice"), format!("{base}/twilio/status"))
}

/// Whether the number already sends its calls to `base`.
pub fn points_at(number: &IncomingNumber, base: &url::Url) -> bool {
    let (voice, status) = webhooks_for(base);
    number.voice_url.as_deref() == Some(voice.as_str()) && number.status_callback.as_deref() == Some(status.as_str())
}

fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Points `number` at `base` (and `fallback`, if any). `force`: the owner consented to taking the
/// number over from an application or trunk.
pub async fn point_at_box(
    rest: &RestClient,
    number: &E164,
    base: &url::Url,
    fallback: Option<&url::Url>,
    force: bool,
) -> Result<Setup, SetupError> {
    let shown = number.to_string();
    let current = rest.find_number(number).await?.ok_or_else(|| SetupError::NotOwned { number: shown.clone() })?;
    if !force {
        if let Some(sid) = set(&current.voice_application_sid) {
            return Err(SetupError::BoundToApplication { number: shown, sid: sid.to_owned() });
        }
        if let Some(sid) = set(&current.trunk_sid) {
            return Err(SetupError::BoundToTrunk { number: shown, sid: sid.to_owned() });
        }
    }
    if points_at(&current, base) && !force {
        return Ok(Setup::AlreadySet);
    }
    let (voice, status) = webhooks_for(base);
    let hooks =
        NumberWebhooks { voice_url: &voice, status_callback: &status, fallback_url: fallback.map(url::Url::as_str) };
    rest.set_number_webhooks(&current.sid, &hooks).await?;
    let confirmed = rest.find_number(number).await?.ok_or_else(|| SetupError::NotOwned { number: shown.clone() })?;
    if !points_at(&confirmed, base) {
        return Err(SetupError::NotConfirmed { number: shown, found: confirmed.voice_url });
    }
    Ok(Setup::Updated { previous_voice_url: current.voice_url })
}
