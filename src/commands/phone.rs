//! `voca call NUMBER` and `voca hangup SID`: the phone through Twilio's REST API.

use std::process::ExitCode;

use anyhow::Context;

use crate::config::{Config, E164};
use crate::twilio::media::CallSid;
use crate::twilio::rest::{NewCall, RestClient};

fn rest(config: &Config) -> anyhow::Result<RestClient> {
    Ok(RestClient::new(&config.twilio)?)
}

pub async fn call(config: &Config, number: &str) -> anyhow::Result<ExitCode> {
    let to: E164 = number.parse().map_err(|e: String| anyhow::anyhow!("{e}"))?;
    let from = config
        .twilio
        .phone_number
        .as_ref()
        .context("`twilio.phone_number` is needed to call out (TWILIO_PHONE_NUMBER)")?;
    let base = config.twilio.public_url.as_ref().context(
        "`twilio.public_url` is needed to call out: Twilio must reach the box's webhook to connect the call",
    )?;
    let base = base.as_str().trim_end_matches('/');
    let (voice, status) = (format!("{base}/twilio/voice"), format!("{base}/twilio/status"));
    let call =
        NewCall { to: &to, from, url: &voice, status_callback: Some(&status), timeout: None, detect_machine: false };
    let placed = rest(config)?.place_call(&call).await?;
    println!("calling {to}: {} ({})", placed.sid, placed.status.as_deref().unwrap_or("queued"));
    Ok(ExitCode::SUCCESS)
}

pub async fn hang_up(config: &Config, sid: &str) -> anyhow::Result<ExitCode> {
    let sid = CallSid::parse(sid).map_err(|e| anyhow::anyhow!("{e}"))?;
    let call = rest(config)?.hang_up(&sid).await?;
    println!("{}: {}", call.sid, call.status.as_deref().unwrap_or("completed"));
    Ok(ExitCode::SUCCESS)
}
