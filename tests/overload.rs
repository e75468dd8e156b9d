//! Overload and abuse against the real binary: twice `calls.max_concurrent` callers at once (the
//! excess get busy TwiML at once), and while the admitted calls talk, 1,000 unsigned webhook
//! requests a second for 10 s, 500 idle connections held open (slowloris), a Media Stream flooding
//! messages as fast as it can, and a stranger's WebSocket sending garbage. The admitted calls keep
//! their 20 ms rhythm, every abusive request gets its clear refusal, the page still answers, and
//! the box's memory and file descriptors come back to where they were.
//!
//! Figures go to `target/overload-figures.txt` (docs/reliability.md quotes them).
//! The test asserts behaviour only (no frame later than 250 ms); `make bench` runs it against the
//! release binary (`VOCA_BIN`), where the p99 frame gap's 25 ms bar is.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Spawned, AUTH_TOKEN};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use voca::twilio::simulator::{self, SimCall};

const MAX_CONCURRENT: usize = 3;
const ABUSE: Duration = Duration::from_secs(10);

struct Usage {
    rss_kib: u64,
    fds: usize,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the box is running");
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    Usage { rss_kib, fds: std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fds").count() }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len().saturating_sub(1)) as f64 * p).round() as usize).copied().unwrap_or(f64::NAN)
}

fn start(dir: &std::path::Path, port: u16) -> Spawned {
    // The box talks for the whole call: a long greeting, so every frame gap is measured.
    let greeting = dir.join("greeting.wav");
    let tone: Vec<i16> = (0..8000 * 30).map(|i| ((i as f32 * 0.07).sin() * 6000.0) as i16).collect();
    voca::audio::wav::write(&greeting, 8000, &tone).expect("greeting");
    std::fs::write(
        dir.join("voca.toml"),
        format!(
            "[device]\ncapture = \"null\"\nplayback = \"null\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [twilio]\nauth_token = \"{AUTH_TOKEN}\"\napi_base = \"http://127.0.0.1:9\"\n\
             [calls]\nanswer = \"tones\"\nmax_concurrent = {MAX_CONCURRENT}\nrate_limit_per_hour = 0\ngreeting_wav = \"{greeting}\"\n",
            data = dir.join("data").display(),
            greeting = greeting.display(),
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.join("box.log")).expect("log");
    let mut voca = common::voca(dir);
    if let Some(release) = std::env::var_os("VOCA_BIN") {
        voca = std::process::Command::new(release);
        voca.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).current_dir(dir);
    }
    voca.args(["--config", "voca.toml", "run"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Spawned)
        .expect("voca runs")
}

/// The box on a free port, once it answers: (process, port, base URL).
async fn start_answering(dir: &std::path::Path) -> (Spawned, u16, String) {
    let port = common::debian::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = start(dir, port);
    let http = reqwest::Client::new();
    wait_until("the box answers", Duration::from_secs(60), || healthy(&http, &base)).await;
    (child, port, base)
}

async fn healthy(http: &reqwest::Client, base: &str) -> bool {
    http.get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn active_calls(http: &reqwest::Client, base: &str) -> usize {
    let Ok(r) = http.get(format!("{base}/metrics")).send().await else { return 0 };
    let text = r.text().await.unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("voca_active_calls ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> F,
) {
    let until = Instant::now() + deadline;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 1,000 unsigned `POST /twilio/voice` a second for [`ABUSE`]: counts the answers by status.
async fn webhook_flood(base: String) -> (usize, usize, f64) {
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client");
    let (forbidden, other) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let began = Instant::now();
    let senders: Vec<_> = (0..20)
        .map(|_| {
            let (http, base, forbidden, other) = (http.clone(), base.clone(), forbidden.clone(), other.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for _ in 0..(ABUSE.as_millis() / 20) {
                    tick.tick().await;
                    let sent = http
                        .post(format!("{base}/twilio/voice"))
                        .form(&[("CallSid", simulator::random_sid("CA").as_str()), ("From", "+15550001111")])
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 403 => forbidden.fetch_add(1, Ordering::Relaxed),
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for s in senders {
        s.await.expect("sender");
    }
    let (f, o) = (forbidden.load(Ordering::Relaxed), other.load(Ordering::Relaxed));
    (f, o, (f + o) as f64 / began.elapsed().as_secs_f64())
}

/// 500 connections that start a request and then send one header line every 2 s, never finishing
/// it; returns how many the box closed by itself, and how long the last one took.
async fn slowloris(port: u16) -> (usize, Duration) {
    let began = Instant::now();
    let held: Vec<_> = (0..500)
        .map(|i| {
            tokio::spawn(async move {
                let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return None };
                if conn.write_all(b"GET / HTTP/1.1\r\nHost: box\r\n").await.is_err() {
                    return Some(Instant::now());
                }
                let mut buf = [0u8; 256];
                for n in 0.. {
                    tokio::select! {
                        read = conn.read(&mut buf) => match read {
                            // Closed by the box (or answered with an error, then closed).
                            Ok(0) | Err(_) => return Some(Instant::now()),
                            Ok(_) => {}
                        },
                        () = tokio::time::sleep(Duration::from_secs(2)) => {
                            if conn.write_all(format!("X-Slow-{i}-{n}: x\r\n").as_bytes()).await.is_err() {
                                return Some(Instant::now());
                            }
                        }
                    }
                    if n > 30 {
                        return None; // held for a minute: the box never closed it
                    }
                }
                None
            })
        })
        .collect();
    let mut closed = 0;
    let mut last = Duration::ZERO;
    for h in held {
        if let Some(at) = h.await.expect("slow client") {
            closed += 1;
            last = last.max(at - began);
        }
    }
    (closed, last)
}

/// An admitted call whose Media Stream sends messages as fast as the connection takes them for
/// [`ABUSE`] (media frames, with a malformed one now and then), then `stop`; returns how many it
/// sent (into the connection: the box reads them at its own rate).
async fn media_flood(base: String) -> usize {
    let http = reqwest::Client::new();
    let sid = simulator::random_sid("CA");
    let params = vec![
        ("CallSid".to_owned(), sid.clone()),
        ("From".to_owned(), "+15550002222".to_owned()),
        ("To".to_owned(), "+15550003333".to_owned()),
    ];
    let (status, body) =
        simulator::post_webhook(&http, &format!("{base}/twilio/voice"), &Some(AUTH_TOKEN.into()), &params)
            .await
            .expect("webhook");
    assert_eq!(status, 200);
    let answer = simulator::parse_twiml(&body).expect("twiml");
    assert_eq!(answer.reject, None, "the flooding call is admitted");
    let token = answer.parameters.iter().find(|(n, _)| n == "token").map(|(_, v)| v.clone()).expect("token");
    let request = answer.stream_url.expect("stream").into_client_request().expect("request");
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("stream opens");
    let (mut tx, mut rx) = ws.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    let stream = simulator::random_sid("MZ");
    let start = simulator::start_message(&sid, &stream, [("token".to_owned(), token.into())].into_iter().collect());
    tx.send(Message::text(start)).await.expect("start");
    let payload = base64_frame();
    let began = Instant::now();
    let mut sent = 0usize;
    while began.elapsed() < ABUSE {
        let text = if sent % 100 == 99 {
            "{\"event\":\"media\",\"media\":{\"payload\":\"not base64!\"}}".to_owned()
        } else {
            format!("{{\"event\":\"media\",\"streamSid\":\"{stream}\",\"media\":{{\"track\":\"inbound\",\"chunk\":\"{sent}\",\"timestamp\":\"{}\",\"payload\":\"{payload}\"}}}}", sent * 20)
        };
        if tx.send(Message::text(text)).await.is_err() {
            break;
        }
        sent += 1;
    }
    let _ = tx.send(Message::text(serde_json::json!({"event": "stop", "streamSid": stream}).to_string())).await;
    let _ = tx.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    sent
}

/// 160 bytes of µ-law noise, base64.
fn base64_frame() -> String {
    use base64::Engine;
    let frame: Vec<u8> = (0..160u32).map(|i| (i * 37 % 251) as u8).collect();
    base64::engine::general_purpose::STANDARD.encode(frame)
}

/// A stranger's WebSocket on the media route: garbage before any `start`. The box closes it.
async fn stranger(base: String) -> bool {
    let url = format!("{}/twilio/media", base.replace("http://", "ws://"));
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await else { return true };
    let (mut tx, mut rx) = ws.split();
    let flood = tokio::spawn(async move {
        for n in 0..100_000u32 {
            if tx.send(Message::text(format!("{{\"event\":\"hello {n}\"}}"))).await.is_err() {
                break;
            }
        }
    });
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(Ok(m)) = rx.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await
    .is_ok();
    flood.abort();
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_load_and_a_flood_of_abuse_leave_live_calls_paced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, port, base) = start_answering(dir.path()).await;
    let http = reqwest::Client::new();
    assert!(child.try_wait().expect("wait").is_none());
    let pid = child.id();

    // Two calls that will be measured, then the flooding one: the box is full.
    let paced: Vec<_> = (0..MAX_CONCURRENT - 1)
        .map(|_| {
            let mut call = SimCall::new(&base, Some(AUTH_TOKEN));
            call.hang_up_after = Some(ABUSE + Duration::from_secs(6));
            tokio::spawn(async move { simulator::run(&call).await })
        })
        .collect();
    wait_until("two calls are live", Duration::from_secs(30), || async {
        active_calls(&http, &base).await == MAX_CONCURRENT - 1
    })
    .await;
    let before = usage(pid);
    let flood = tokio::spawn(media_flood(base.clone()));
    wait_until("the flooding call is live", Duration::from_secs(30), || async {
        active_calls(&http, &base).await == MAX_CONCURRENT
    })
    .await;

    // Twice max_concurrent: the excess callers are turned away with busy, at once.
    let busy: Vec<_> = (0..MAX_CONCURRENT)
        .map(|_| {
            let call = SimCall::new(&base, Some(AUTH_TOKEN));
            tokio::spawn(async move {
                let t = Instant::now();
                let r = simulator::run(&call).await.expect("busy call");
                (r, t.elapsed())
            })
        })
        .collect();
    let mut busy_ms = Vec::new();
    for b in busy {
        let (r, took) = b.await.expect("task");
        assert_eq!((r.webhook_status, r.rejected.as_deref()), (200, Some("busy")), "{r:?}");
        busy_ms.push(took.as_secs_f64() * 1000.0);
    }

    // The abuse, all at once, while the admitted calls talk.
    let webhooks = tokio::spawn(webhook_flood(base.clone()));
    let slow = tokio::spawn(slowloris(port));
    let strangers: Vec<_> = (0..4).map(|_| tokio::spawn(stranger(base.clone()))).collect();
    // The page keeps answering through it all.
    let mut page_answers = 0;
    let abuse_began = Instant::now();
    while abuse_began.elapsed() < ABUSE {
        assert!(healthy(&http, &base).await, "the page stopped answering under abuse");
        page_answers += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (forbidden, other, rate) = webhooks.await.expect("flood");
    assert_eq!(other, 0, "every unsigned webhook is refused with 403 ({forbidden} were)");
    for s in strangers {
        assert!(s.await.expect("stranger"), "a WebSocket sending garbage before start was not closed");
    }
    let flooded = flood.await.expect("media flood");
    let (closed, last_closed) = slow.await.expect("slowloris");
    assert_eq!(closed, 500, "the box closes connections that never finish their headers");

    // The measured calls: all frames kept their rhythm through the abuse.
    let mut gaps = Vec::new();
    for p in paced {
        let r = p.await.expect("task").expect("call");
        assert_eq!(r.rejected, None);
        assert!(r.frames_received > 500, "the call was answered and talked: {} frames", r.frames_received);
        // The pacer sends its 60 ms lead at once by design: skip each call's first frames.
        gaps.extend(r.frame_gaps_ms.iter().skip(3).copied());
    }
    gaps.sort_by(f64::total_cmp);
    let (p50, p99, max) = (percentile(&gaps, 0.5), percentile(&gaps, 0.99), gaps.last().copied().unwrap_or(0.0));

    // Everything let go: descriptors back where they were, memory did not run away.
    let ended = Instant::now() + Duration::from_secs(30);
    while active_calls(&http, &base).await != 0 {
        if Instant::now() > ended {
            let log = std::fs::read_to_string(dir.path().join("box.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "calls still live 30 s after the abuse; the box's log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut after = usage(pid);
    let settle = Instant::now() + Duration::from_secs(30);
    while after.fds > before.fds + 4 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = usage(pid);
    }
    assert!(after.fds <= before.fds + 4, "file descriptors: {} before the abuse, {} after", before.fds, after.fds);
    let grown_kib = after.rss_kib.saturating_sub(before.rss_kib);
    // Nothing is buffered without bound: what a flood leaves behind is allocator slack, not data.
    assert!(grown_kib < 48 * 1024, "RSS grew by {grown_kib} KiB under abuse");
    assert!(child.try_wait().expect("wait").is_none(), "the box is still running");

    let figures = format!(
        "overload: max_concurrent {MAX_CONCURRENT}, {} callers at once: {} busy (answered in {:.0}-{:.0} ms)\n\
         abuse for {} s: {forbidden} unsigned webhooks refused with 403 ({rate:.0}/s), 500 slowloris connections \
         (all closed by the box, the last after {:.1} s), a Media Stream flooding {flooded} messages ({:.0}/s), \
         4 garbage WebSockets closed; the page answered {page_answers} times meanwhile\n\
         live calls' outbound frame gaps: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms over {} gaps\n\
         box memory {:.1} -> {:.1} MiB RSS, file descriptors {} -> {}\n",
        2 * MAX_CONCURRENT,
        busy_ms.len(),
        busy_ms.iter().copied().fold(f64::INFINITY, f64::min),
        busy_ms.iter().copied().fold(0.0, f64::max),
        ABUSE.as_secs(),
        last_closed.as_secs_f64(),
        flooded as f64 / ABUSE.as_secs_f64(),
        gaps.len(),
        before.rss_kib as f64 / 1024.0,
        after.rss_kib as f64 / 1024.0,
        before.fds,
        after.fds,
    );
    print!("{figures}");
    std::fs::write(common::repo().join("target/overload-figures.txt"), &figures).expect("figures");
    // What the test asserts is behaviour: the admitted calls' audio never stalls long enough to
    // break (no frame later than 250 ms), however busy the machine. The speed bar, p99 <= 25 ms
    // for the release build the box runs, is `make bench`'s (it runs this with VOCA_BIN set).
    assert!(max < 250.0, "an admitted call's audio stalled: {figures}");
    if std::env::var_os("VOCA_BIN").is_some() {
        assert!(p99 <= 25.0, "make bench: the release build's p99 frame gap is over its 25 ms bar: {figures}");
    }

    child.terminate();
    assert!(child.wait().expect("stops").success());
}

/// Oversized and malformed requests, each answered with a clear refusal; the box carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_get_clear_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, port, base) = start_answering(dir.path()).await;
    // Each refusal may close its connection: one connection per request.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");

    // A webhook body of a megabyte: 413 before anything reads it.
    let big = http.post(format!("{base}/twilio/voice")).body(vec![b'a'; 1 << 20]).send().await.expect("sent");
    assert_eq!(big.status(), 413);
    assert!(big.text().await.unwrap_or_default().contains("length limit"), "the answer says why");
    // A form that is not one, unsigned: 403, nothing logged as a call.
    let junk = http.post(format!("{base}/twilio/voice")).body("%%%&&&==\u{0}").send().await.expect("sent");
    assert_eq!(junk.status(), 403);
    // Headers of 200 KB: refused by the HTTP layer (431) or the connection closed, never buffered.
    let huge_header = http.get(format!("{base}/healthz")).header("X-Big", "b".repeat(200_000)).send().await;
    assert!(huge_header.map_or(true, |r| r.status() == 431), "oversized headers are refused");
    // Not HTTP at all.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    raw.write_all(b"\x16\x03\x01 hello, is this TLS?\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), raw.read_to_end(&mut answer)).await.expect("closed in time");
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    // A Media Stream message over 64 KB: the stream is closed.
    let url = format!("{}/twilio/media", base.replace("http://", "ws://"));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("upgrade");
    let (mut tx, mut rx) = ws.split();
    let _ = tx.send(Message::text("x".repeat(100_000))).await;
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(Ok(m)) = rx.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an oversized WebSocket message closes the stream");

    assert!(healthy(&http, &base).await, "the box carries on");
    assert!(child.try_wait().expect("wait").is_none());
    let calls = http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(!calls.contains("voca_calls_total{direction=\"inbound\""), "no call was logged from junk:\n{calls}");
    child.terminate();
    assert!(child.wait().expect("stops").success());
}
