//! One Media Stream session over channels: pacing, marks, barge-in, hang-up, the call log.

use super::*;
use crate::call::registry::{Admission, Direction};
use crate::call::responder::{Responder, ToneResponder};
use crate::config::Config;
use futures_util::stream;
use tokio::sync::mpsc;

const CA: &str = "CA0123456789abcdef0123456789abcdef";
const MZ: &str = "MZ0123456789abcdef0123456789abcdef";

fn context(dir: &std::path::Path) -> SessionContext {
    let mut calls = Config::defaults().calls;
    calls.max_concurrent = 4;
    SessionContext {
        registry: Arc::new(Registry::new(calls)),
        store: Store::open(dir).expect("store"),
        responders: Arc::new(|_: &CallSid, _| Box::new(ToneResponder::new(None)) as Box<dyn Responder>),
        max_duration: Duration::from_secs(30),
        silence_timeout: Duration::from_secs(30),
        shutdown: CancellationToken::new(),
        rest: None,
    }
}

fn start_message(token: &str) -> String {
    format!(
        r#"{{"event":"start","streamSid":"{MZ}","start":{{"callSid":"{CA}","customParameters":{{"token":"{token}"}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}}}}"#
    )
}

/// A whole call through channels: no sockets, no HTTP.
#[tokio::test]
async fn a_call_runs_over_plain_channels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path());
    let sid = CallSid::parse(CA).expect("sid");
    ctx.store
        .call_started(&CallSid::parse(CA).expect("sid"), "inbound", "+15550000001", "+15550000002")
        .await
        .expect("log");
    let Admission::Accept { token } =
        ctx.registry.admit(&sid, Purpose::Incoming, Direction::Inbound, "+15550000001", std::time::Instant::now())
    else {
        panic!("not admitted")
    };
    let (in_tx, in_rx) = mpsc::channel::<String>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<String>(1024);
    let inbound = Box::pin(stream::unfold(in_rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }));
    let outbound = Box::pin(futures_util::sink::unfold(out_tx, |tx: mpsc::Sender<String>, m: String| async move {
        match tx.send(m).await {
            Ok(()) => Ok(tx),
            Err(_) => Err("receiver gone"),
        }
    }));
    let driver = async move {
        in_tx.send(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.into()).await.expect("send");
        in_tx.send(start_message(&token)).await.expect("send");
        // Wait for the greeting to be sent in full, mark included.
        let mut media = 0;
        loop {
            let m = out_rx.recv().await.expect("box output");
            if m.contains(r#""event":"media""#) {
                media += 1;
            }
            if m.contains(r#""name":"greeting""#) {
                break;
            }
        }
        assert_eq!(media, 35, "0.7 s of greeting in 20 ms frames");
        in_tx
            .send(format!(r#"{{"event":"mark","streamSid":"{MZ}","mark":{{"name":"greeting"}}}}"#))
            .await
            .expect("send");
        in_tx.send(format!(r#"{{"event":"dtmf","streamSid":"{MZ}","dtmf":{{"digit":"1"}}}}"#)).await.expect("send");
        loop {
            let m = out_rx.recv().await.expect("box output");
            if m.contains(r#""name":"dtmf-1""#) {
                break;
            }
        }
        in_tx.send(format!(r#"{{"event":"stop","streamSid":"{MZ}"}}"#)).await.expect("send");
    };
    let (ended, ()) = tokio::join!(run(inbound, outbound, &ctx), driver);
    match ended {
        Ended::Call { outcome, stats, .. } => {
            assert_eq!(outcome, Outcome::Completed);
            assert_eq!((stats.marks_played, stats.dtmf, stats.frames_out), (1, 1, 45));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ctx.store.call(&CallSid::parse(CA).expect("sid")).await.expect("store").and_then(|c| c.outcome).as_deref(),
        Some("completed")
    );
}

#[tokio::test]
async fn a_refused_token_allocates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path());
    let inbound = stream::iter(vec![start_message("forged")]);
    let outbound = futures_util::sink::drain().sink_map_err(|e| -> std::convert::Infallible { match e {} });
    assert!(matches!(run(inbound, outbound, &ctx).await, Ended::Refused(TokenError::Unknown)));
    assert!(ctx.registry.is_empty());
}

#[tokio::test]
async fn a_stream_that_floods_before_start_is_closed_without_waiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path());
    // Endless messages that are not `start` (some not even JSON), as fast as they can come.
    let garbage =
        ["{\"event\":\"connected\",\"protocol\":\"Call\",\"version\":\"1.0.0\"}", "{not json", "{\"event\":\"mark\"}"];
    let inbound = stream::iter(garbage.into_iter().cycle().map(str::to_owned));
    let outbound = futures_util::sink::drain().sink_map_err(|e| -> std::convert::Infallible { match e {} });
    let ended = tokio::time::timeout(Duration::from_secs(5), run(inbound, outbound, &ctx)).await;
    assert!(matches!(ended, Ok(Ended::NoStart)), "closed after a few messages, not at the start timeout");
    assert!(ctx.registry.is_empty());
}

#[tokio::test]
async fn a_silent_caller_is_hung_up_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ctx = context(dir.path());
    ctx.silence_timeout = Duration::from_millis(500);
    let sid = CallSid::parse(CA).expect("sid");
    let Admission::Accept { token } =
        ctx.registry.admit(&sid, Purpose::Incoming, Direction::Inbound, "+15550000001", std::time::Instant::now())
    else {
        panic!("not admitted")
    };
    // The caller says nothing and never hangs up.
    let inbound = stream::iter(vec![start_message(&token)]).chain(stream::pending());
    let outbound = futures_util::sink::drain().sink_map_err(|e| -> std::convert::Infallible { match e {} });
    let started = std::time::Instant::now();
    match run(inbound, outbound, &ctx).await {
        Ended::Call { reason, .. } => assert_eq!(reason, "silence timeout"),
        other => panic!("{other:?}"),
    }
    // 0.7 s of greeting, then 0.5 s of silence.
    assert!(started.elapsed() >= Duration::from_millis(1100), "{:?}", started.elapsed());
}
