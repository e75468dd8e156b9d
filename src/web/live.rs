//! Server-Sent Events for the page: `GET /api/events` sends the box's status whenever the state
//! bus changes (and every second while calls are live, for their durations), each conversation
//! turn as the call log stores it, and call changes; `GET /api/microphone/level` streams the
//! microphone's level for the page's microphone test.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::Lan;

/// How long the microphone test streams levels.
const MIC_TEST: Duration = Duration::from_secs(30);

/// A status event at least this often while calls are live (their durations tick).
const TICK: Duration = Duration::from_secs(1);

fn event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default().event(name).json_data(data).unwrap_or_else(|_| Event::default().event(name).data("null"))
}

/// The status the page's *Home* shows, as it changes.
pub async fn events(State(lan): State<Lan>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut bus = lan.status.state.watch();
    let mut feed = lan.store.feed();
    let mut settings = lan.settings.live().watch();
    let stream = async_stream(move |tx| async move {
        let send_status = |lan: &Lan| event("status", &lan.status.health());
        if tx.send(send_status(&lan)).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(TICK);
        // Whether the last tick saw live calls: one more status once they are gone.
        let mut had_calls = false;
        loop {
            let next = tokio::select! {
                changed = bus.changed() => match changed {
                    Ok(()) => send_status(&lan),
                    Err(_) => return,
                },
                changed = settings.changed() => match changed {
                    Ok(()) => Event::default().event("settings").data("{}"),
                    Err(_) => return,
                },
                written = feed.recv() => match written {
                    Ok(written) => event("log", &written),
                    // Fell behind: the page reloads what it shows.
                    Err(RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
                    Err(RecvError::Closed) => return,
                },
                () = lan.shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let has_calls = !lan.status.registry.is_empty();
                    if !has_calls && !had_calls { continue }
                    had_calls = has_calls;
                    send_status(&lan)
                }
            };
            if tx.send(next).await.is_err() {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The microphone's level (dBFS of each 100 ms) for half a minute.
pub async fn microphone(State(lan): State<Lan>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut frames = lan.appliance.mic().listen(None);
    let stream = async_stream(move |tx| async move {
        let until = Instant::now() + MIC_TEST;
        let (mut sum, mut count) = (0f64, 0usize);
        while Instant::now() < until && !lan.shutdown.is_cancelled() {
            let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(2), frames.recv()).await else {
                let _ =
                    tx.send(Event::default().event("silent").data("{\"why\":\"no sound from the microphone\"}")).await;
                return;
            };
            sum += frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>();
            count += frame.len();
            if count >= 1600 {
                let rms = (sum / count as f64).sqrt() / 32768.0;
                let db = if rms > 0.0 { (20.0 * rms.log10()).max(-90.0) } else { -90.0 };
                if tx.send(event("level", &serde_json::json!({ "dbfs": (db * 10.0).round() / 10.0 }))).await.is_err() {
                    return;
                }
                (sum, count) = (0.0, 0);
            }
        }
        let _ = tx.send(Event::default().event("done").data("{}")).await;
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A stream fed by a task through a small channel; the task ends when the client goes away.
fn async_stream<F, Fut>(produce: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) })
}
