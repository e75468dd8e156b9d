//! `voca calls`: the recent call log, numbers masked.

use std::process::ExitCode;

use crate::config::{mask_phone, Config};

pub async fn list(config: &Config, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    // Read only: the box may be running, and its open calls are its own to finish.
    let store = crate::store::Store::open_read_only(&config.device.data_dir)?;
    let mut calls = store.recent_calls(limit).await?;
    for call in &mut calls {
        call.from_number = mask_phone(&call.from_number);
        call.to_number = mask_phone(&call.to_number);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&calls)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<34}  {:<8}  {:<13}  {:<13}  {:>6}  {:<11}  reason", "call", "dir", "from", "to", "secs", "outcome");
    for c in calls {
        let secs = c.duration_ms.map_or("-".into(), |ms| format!("{:.0}", ms as f64 / 1000.0));
        println!(
            "{:<34}  {:<8}  {:<13}  {:<13}  {:>6}  {:<11}  {}",
            c.call_sid,
            c.direction,
            c.from_number,
            c.to_number,
            secs,
            c.outcome.as_deref().unwrap_or("in progress"),
            c.reason.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
