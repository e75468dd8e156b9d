//! The REST client's error handling and retries, against a small local stub (Twilio's spec defines
//! no error bodies, so the Prism mock cannot produce them).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{ACCOUNT_SID, AUTH_TOKEN};
use voca::config::E164;
use voca::twilio::rest::{CallFilter, NewCall, RestClient, RestError};

type Script = Arc<dyn Fn(usize, &Uri) -> Response + Send + Sync>;

/// Serves `script(n, uri)` for the n-th request (from 0); returns the base URL and the request count.
async fn stub(script: Script) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, _headers: HeaderMap| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let response = script(n, &uri);
        async move { response }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), count)
}

fn client(base: &str) -> RestClient {
    common::rest_client(base).with_backoff(Duration::from_millis(10))
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn call_json() -> serde_json::Value {
    serde_json::json!({"sid": "CA0123456789abcdef0123456789abcdef", "status": "queued"})
}

fn number(s: &str) -> E164 {
    s.parse().expect("number")
}

async fn place(client: &RestClient) -> Result<voca::twilio::rest::CallResource, RestError> {
    let (to, from) = (number("+15551230001"), number("+15551230002"));
    client
        .place_call(&NewCall {
            to: &to,
            from: &from,
            url: "https://box.example.com/twilio/voice",
            status_callback: None,
            timeout: None,
            detect_machine: false,
        })
        .await
}

#[tokio::test]
async fn too_many_requests_is_retried_after_the_time_twilio_asks() {
    let (base, count) = stub(Arc::new(|n, _| {
        if n == 0 {
            let body = serde_json::json!({"code": 20429, "message": "Too Many Requests", "status": 429});
            ([("Retry-After", "1")], json(StatusCode::TOO_MANY_REQUESTS, body)).into_response()
        } else {
            json(StatusCode::CREATED, call_json())
        }
    }))
    .await;
    let started = Instant::now();
    let call = place(&client(&base)).await.expect("placed after one retry");
    assert_eq!(call.sid, "CA0123456789abcdef0123456789abcdef");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() >= Duration::from_millis(950), "Retry-After: 1 honoured: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_failed_call_placement_is_not_blindly_retried() {
    let (base, count) =
        stub(Arc::new(|_, _| json(StatusCode::BAD_GATEWAY, serde_json::json!({"message": "upstream"})))).await;
    let e = place(&client(&base)).await.expect_err("502");
    assert!(matches!(e, RestError::Api { status: 502, .. }), "{e:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "a POST that may have rung must not be sent twice");
}

#[tokio::test]
async fn idempotent_requests_are_retried_through_server_errors() {
    let (base, count) = stub(Arc::new(|n, _| {
        if n < 2 {
            (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response()
        } else {
            json(StatusCode::OK, serde_json::json!({"calls": [call_json()], "next_page_uri": null}))
        }
    }))
    .await;
    let calls = client(&base).list_calls(&CallFilter::default()).await.expect("third try works");
    assert_eq!(calls.len(), 1);
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retries_give_up_with_the_last_error() {
    let (base, count) = stub(Arc::new(|_, _| (StatusCode::INTERNAL_SERVER_ERROR, "").into_response())).await;
    let e = client(&base).account().await.expect_err("always 500");
    assert!(e.to_string().contains("HTTP 500"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn both_error_shapes_and_bad_credentials_are_explained() {
    let (base, _) = stub(Arc::new(|n, _| match n {
        0 => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}),
        ),
        1 => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"type": "https://www.twilio.com/docs/errors/20404", "title": "Not Found", "status": 404, "code": 20404, "detail": "No such call"}),
        ),
        _ => json(StatusCode::UNAUTHORIZED, serde_json::json!({"code": 20003, "message": "Authenticate", "status": 401})),
    }))
    .await;
    let c = client(&base);
    let e = place(&c).await.expect_err("400");
    assert!(
        matches!(&e, RestError::Api { code: Some(21211), .. }) && e.to_string().contains("not a valid phone number"),
        "{e}"
    );
    let sid = voca::twilio::media::CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("sid");
    let e = c.hang_up(&sid).await.expect_err("404");
    assert!(e.to_string().contains("No such call") && e.to_string().contains("20404"), "{e}");
    let e = c.account().await.expect_err("401");
    assert!(matches!(e, RestError::Unauthorized { .. }) && !e.to_string().contains(AUTH_TOKEN), "{e}");
}

#[tokio::test]
async fn call_lists_follow_next_page_uri() {
    let (base, _) = stub(Arc::new(|_, uri| {
        let page = uri.query().unwrap_or("").contains("Page=1");
        let next = if page {
            serde_json::Value::Null
        } else {
            format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json?Page=1&PageSize=2").into()
        };
        let sid = if page { "CA00000000000000000000000000000002" } else { "CA00000000000000000000000000000001" };
        json(StatusCode::OK, serde_json::json!({"calls": [{"sid": sid}], "next_page_uri": next}))
    }))
    .await;
    let calls = client(&base).list_calls(&CallFilter { limit: 5, ..CallFilter::default() }).await.expect("list");
    assert_eq!(
        calls.iter().map(|c| c.sid.as_str()).collect::<Vec<_>>(),
        ["CA00000000000000000000000000000001", "CA00000000000000000000000000000002"]
    );
}

#[tokio::test]
async fn an_unreachable_api_is_a_transport_error() {
    // Port 9 on loopback refuses at once; connection failures are retried (nothing was sent).
    let e = place(&client("http://127.0.0.1:9")).await.expect_err("refused");
    assert!(matches!(e, RestError::Transport { .. }), "{e:?}");
}

#[tokio::test]
async fn a_recording_sid_that_is_not_one_never_names_a_file_or_a_path() {
    let good = "RE0123456789abcdef0123456789abcdef";
    let (base, _) = stub(Arc::new(move |_, _| {
        let body = serde_json::json!({"recordings": [
            {"sid": "../../../etc/passwd", "duration": "3"},
            {"sid": "RE0123456789abcdef0123456789abcdef/../x", "duration": "3"},
            {"sid": good, "duration": "4"},
        ]});
        json(StatusCode::OK, body)
    }))
    .await;
    let call = voca::twilio::media::CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("sid");
    let listed = client(&base).list_recordings(&call).await.expect("the good one is listed");
    let sids: Vec<&str> = listed.iter().map(|r| r.sid.as_str()).collect();
    assert_eq!(sids, vec![good], "the odd entries are left out, the good one kept");
}
