//! Wall-clock time, and what to do when it jumps. A Pi has no real-time clock: at boot its clock is
//! the last saved time (fake-hwclock) and NTP may step it by days, or years, once the network is
//! up. Everything that measures time spans (sessions, rate limits, timeouts, retry pauses) uses
//! monotonic time; what must be stored as a date (call records, call-out deadlines) uses
//! [`now_ms`], and [`follow_steps`] corrects the records made before a step: their times move with
//! the clock (whoever keeps the records says how, see [`Step`]), so a call-for-help queued before NTP set the clock neither expires at once (clock
//! stepped forward) nor waits years (stepped back), and the call log shows when calls really were.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

/// How often the wall clock is compared with the monotonic one.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// A difference larger than this between the two is a step, not drift.
const STEP: i64 = 2_000;

/// Added to the system's clock: moved only by [`step`] (tests and simulations).
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> i64 {
    let system = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    system + OFFSET_MS.load(Ordering::Relaxed)
}

/// Steps this process's wall clock by `ms`, as NTP would step the system's: for tests and
/// simulations of a box whose clock is set after boot.
pub fn step(ms: i64) {
    OFFSET_MS.fetch_add(ms, Ordering::Relaxed);
}

/// The last look at both clocks, and since when this run's records were made by the clock then.
struct Look {
    wall: i64,
    mono: Instant,
    since: i64,
}

static LOOK: tokio::sync::Mutex<Option<Look>> = tokio::sync::Mutex::const_new(None);

/// A step of the wall clock: what was recorded since `since` and before `before` (both by the
/// old clock) was timed by the old clock and moves by `jump` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub jump: i64,
    pub since: i64,
    pub before: i64,
}

/// A run of the box begins: records from now on are this run's (see [`settle`]).
pub async fn begin() {
    let wall = now_ms();
    *LOOK.lock().await = Some(Look { wall, mono: Instant::now(), since: wall });
}

/// Compares the wall clock with the monotonic one since the last look; after a step, moves the
/// times recorded since this run began (calls, turns, call-outs still to be placed) by the step
/// before returning. The call-out queue settles before it decides what is due or expired, so a
/// step cannot expire a call-out between two looks. `follow` moves the records; it answers how
/// many moved, or why it could not.
pub async fn settle<F>(follow: impl FnOnce(Step) -> F)
where
    F: Future<Output = Result<usize, String>>,
{
    let mut look = LOOK.lock().await;
    let Some(last) = look.as_mut() else { return };
    let (wall, mono) = (now_ms(), Instant::now());
    let jump = (wall - last.wall) - mono.duration_since(last.mono).as_millis() as i64;
    (last.wall, last.mono) = (wall, mono);
    if jump.abs() <= STEP {
        return;
    }
    // Everything recorded before this look, since the run began, was timed by the old clock.
    match follow(Step { jump, since: last.since, before: wall - jump }).await {
        Ok(moved) => tracing::info!(
            "the wall clock stepped by {} s (NTP?): {moved} record(s) and pending call-outs moved with it",
            jump / 1000
        ),
        Err(e) => tracing::warn!("the wall clock stepped by {} s, but the records could not follow: {e}", jump / 1000),
    }
    last.since += jump;
}

/// Looks for steps every second until `shutdown`; `follow` moves the records after one.
pub async fn follow_steps<F>(follow: impl Fn(Step) -> F, shutdown: CancellationToken)
where
    F: Future<Output = Result<usize, String>>,
{
    let mut tick = tokio::time::interval(LOOK_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => settle(&follow).await,
            () = shutdown.cancelled() => return,
        }
    }
}
