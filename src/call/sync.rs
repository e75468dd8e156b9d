//! Catching up after being offline: calls to the box's number that Twilio handled while the box was
//! away (its fallback answered, or nobody did) are fetched from the REST API, their recordings
//! downloaded as voicemail, and merged into the call log as waiting (the missed-call LED lights).
//! The cursor (start time of the newest call seen) lives in SQLite; calls are keyed by their SID,
//! so running it twice, or after a restart, adds nothing twice.

use crate::store::Folder;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{mask_phone, E164};
use crate::events::{DeviceState, StateBus};
use crate::store::{ImportedCall, Store};
use crate::twilio::media::CallSid;
use crate::twilio::rest::{CallFilter, RestClient};

const CURSOR: &str = "missed_calls_since";
/// With no cursor yet (first run), look back this far.
const FIRST_LOOK_BACK: chrono::Duration = chrono::Duration::hours(24);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub calls: usize,
    pub recordings: usize,
}

/// Twilio's call start times are RFC 2822 (`Tue, 24 Nov 2026 09:00:00 +0000`).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s).or_else(|_| DateTime::parse_from_rfc3339(s)).ok().map(|t| t.to_utc())
}

/// One pass: imports missed calls and recordings since the cursor, then moves the cursor.
pub async fn missed_calls(
    rest: &RestClient,
    number: &E164,
    store: &Store,
    voicemail: &Folder,
) -> anyhow::Result<Report> {
    let since = match store.sync_value(CURSOR).await? {
        Some(cursor) => cursor,
        None => (Utc::now() - FIRST_LOOK_BACK).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let filter =
        CallFilter { to: Some(number.as_str()), started_after: Some(&since), limit: 200, ..Default::default() };
    let calls = rest.list_calls(&filter).await?;
    let mut report = Report::default();
    let mut newest: Option<DateTime<Utc>> = None;
    let mut oldest_open: Option<DateTime<Utc>> = None;
    for call in calls {
        let started = call.start_time.as_deref().and_then(parse_time);
        let status = call.status.clone().unwrap_or_default();
        if matches!(status.as_str(), "queued" | "ringing" | "in-progress") {
            // Still going: the box may be handling it right now. Look again next time.
            oldest_open = oldest_open.min(started).or(started);
            continue;
        }
        if let Some(t) = started {
            newest = newest.max(Some(t));
        }
        let sid = match CallSid::parse(&call.sid) {
            Ok(sid) => sid,
            Err(e) => {
                warn!("sync: Twilio listed a call with {e}: skipped");
                continue;
            }
        };
        let from = call.from.clone().unwrap_or_default();
        let imported = store
            .import_call(ImportedCall {
                call_sid: sid.clone(),
                from: from.clone(),
                to: call.to.clone().unwrap_or_default(),
                started_at: started.map_or(0, |t| t.timestamp_millis()),
                duration_ms: call.duration.as_deref().and_then(|d| d.parse::<i64>().ok()).unwrap_or(0) * 1000,
                outcome: status,
            })
            .await?;
        if imported {
            report.calls += 1;
            info!(call = %sid, from = %mask_phone(&from), "missed while offline: added to the call log");
            report.recordings += fetch_recordings(rest, &sid, store, voicemail).await?;
        }
    }
    // Never move past a call that is still open; otherwise up to the newest one seen.
    let cursor = match (oldest_open, newest) {
        (Some(open), _) => Some(open - chrono::Duration::seconds(1)),
        (None, newest) => newest,
    };
    if let Some(cursor) = cursor {
        store.set_sync_value(CURSOR, cursor.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).await?;
    } else if store.sync_value(CURSOR).await?.is_none() {
        store.set_sync_value(CURSOR, since).await?;
    }
    Ok(report)
}

/// Downloads a call's recordings into the voicemail folder (a file already there is not fetched
/// again) and notes the first on the call. Returns how many were downloaded.
async fn fetch_recordings(rest: &RestClient, sid: &CallSid, store: &Store, folder: &Folder) -> anyhow::Result<usize> {
    let mut fetched = 0;
    for recording in rest.list_recordings(sid).await? {
        let mut path = folder.download_path(&recording.sid);
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            let audio = rest.download_recording(&recording.sid).await?;
            let room = store.make_room(folder, audio.len() as u64).await?;
            if !room.fits {
                warn!(
                    call = %sid,
                    "voicemail folder full of messages not yet heard (calls.voicemail_folder_mb): a recording \
                     made by Twilio stays there, not downloaded"
                );
                continue;
            }
            let (folder, name) = (folder.clone(), recording.sid.clone());
            path = tokio::task::spawn_blocking(move || folder.write_download(&name, &audio)).await??;
            fetched += 1;
        }
        store.voicemail_saved(sid, &path).await?;
    }
    Ok(fetched)
}

/// Runs a sync pass each time the box comes online, and publishes how many calls wait to be heard.
pub async fn run(
    rest: RestClient,
    number: E164,
    store: Store,
    voicemail: Folder,
    bus: StateBus,
    shutdown: CancellationToken,
) {
    let mut watch = bus.watch();
    loop {
        tokio::select! {
            ready = watch.wait_for(|s| s.state == DeviceState::Ready) => if ready.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        match missed_calls(&rest, &number, &store, &voicemail).await {
            Ok(report) if report.calls > 0 => {
                info!(calls = report.calls, recordings = report.recordings, "caught up with calls missed while offline")
            }
            Ok(_) => {}
            Err(e) => warn!("missed-call sync: {e:#}"),
        }
        if let Ok(waiting) = store.waiting_count().await {
            bus.set_waiting(waiting);
        }
        // Wait until the box goes offline before the next pass (it runs again on reconnecting).
        tokio::select! {
            offline = watch.wait_for(|s| s.state != DeviceState::Ready) => if offline.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}
