//! The wall clock steps by a year after the box started (NTP setting a Pi's clock): a call-for-help
//! queued before keeps its 24 hours, and the call log shows when calls really were.
//! (Its own test binary: it moves this process's wall clock.)

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

const DAY: i64 = 24 * 3600 * 1000;
const YEAR: i64 = 365 * DAY;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_step_moves_pending_call_outs_and_this_runs_records_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("voca.toml");
    std::fs::write(
        &path,
        format!(
            "[device]\ncapture = \"null\"\nplayback = \"null\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [twilio]\naccount_sid = \"{}\"\nauth_token = \"{}\"\nphone_number = \"{}\"\napi_base = \"http://127.0.0.1:9\"\n\
             [calls]\nanswer = \"tones\"\n[[contacts]]\nname = \"Alice\"\nnumber = \"+15557654321\"\nemergency = true\n",
            dir.path().join("data").display(),
            common::ACCOUNT_SID,
            common::AUTH_TOKEN,
            common::NUMBER
        ),
    )
    .expect("config");
    let config = voca::config::Config::load(Some(&path), &HashMap::new()).expect("config");
    let running = voca::app::start(config).await.expect("box starts");
    // Offline (no tunnel): the call for help waits in the queue, for a day.
    let contact = running.appliance.contacts()[0].clone();
    let id = running.callout.request(&contact, true).await.expect("queued");
    let sid = voca::twilio::media::CallSid::parse(&voca::twilio::simulator::random_sid("CA")).expect("a call SID");
    running.store.call_started(&sid, "inbound", "+15550001111", common::NUMBER).await.expect("log");
    let before = running.store.callouts().await.expect("rows").into_iter().find(|r| r.id == id).expect("row");
    let call_before = running.store.call(&sid).await.expect("get").expect("row").created_at;

    voca::clock::step(YEAR);
    let deadline = Instant::now() + Duration::from_secs(30);
    let moved = loop {
        let row = running.store.callouts().await.expect("rows").into_iter().find(|r| r.id == id).expect("row");
        if row.deadline > before.deadline + YEAR / 2 {
            break row;
        }
        assert!(Instant::now() < deadline, "the call-out's deadline never followed the clock: {row:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(moved.state, "pending", "not expired by the step: {moved:?}");
    let left = moved.deadline - voca::clock::now_ms();
    assert!((DAY - 60_000..=DAY).contains(&left), "still about a day to place it: {left} ms");
    let call_after = running.store.call(&sid).await.expect("get").expect("row").created_at;
    assert!((call_after - call_before - YEAR).abs() < 5_000, "the call's time moved with the clock");

    // A step back (a wrong NTP server corrected) does not make it wait a year either.
    voca::clock::step(-YEAR);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = running.store.callouts().await.expect("rows").into_iter().find(|r| r.id == id).expect("row");
        let left = row.deadline - voca::clock::now_ms();
        if (DAY - 120_000..=DAY).contains(&left) && row.deadline < before.deadline + YEAR / 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the step back was not followed: {row:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await.expect("stops");
}
