//! Pointing the number at the box (tunnel provider `external`), against a stateful stand-in for
//! Twilio's number API; the request shapes themselves are checked against Prism in prism.rs.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, Uri};
use common::{ACCOUNT_SID, AUTH_TOKEN, NUMBER};
use voca::config::Config;
use voca::twilio::number::{point_at_box, Setup, SetupError};
use voca::twilio::rest::RestClient;

#[derive(Default)]
struct NumberState {
    fields: HashMap<String, String>,
    posts: Vec<String>,
}

type Shared = Arc<Mutex<NumberState>>;

async fn api(State(state): State<Shared>, method: Method, uri: Uri, body: String) -> axum::Json<serde_json::Value> {
    let mut s = state.lock().expect("lock");
    if method == Method::POST {
        assert!(uri.path().ends_with("/IncomingPhoneNumbers/PN0123456789abcdef0123456789abcdef.json"), "{uri}");
        for (k, v) in url::form_urlencoded::parse(body.as_bytes()) {
            s.fields.insert(k.into_owned(), v.into_owned());
        }
        s.posts.push(body);
    }
    let field = |k: &str| s.fields.get(k).cloned().map_or(serde_json::Value::Null, serde_json::Value::from);
    let number = serde_json::json!({
        "sid": "PN0123456789abcdef0123456789abcdef", "phone_number": NUMBER,
        "voice_url": field("VoiceUrl"), "status_callback": field("StatusCallback"),
        "voice_application_sid": field("VoiceApplicationSid"), "trunk_sid": field("TrunkSid")});
    // An update answers with the number; a look-up with a page of numbers.
    axum::Json(if method == Method::POST { number } else { serde_json::json!({"incoming_phone_numbers": [number]}) })
}

async fn stub(initial: &[(&str, &str)]) -> (String, Shared) {
    let state: Shared = Arc::default();
    state.lock().expect("lock").fields = initial.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    let app = axum::Router::new().fallback(api).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

fn client(base: &str) -> RestClient {
    common::rest_client(base)
}

#[tokio::test]
async fn the_number_is_pointed_at_the_box_once_and_confirmed() {
    let (api, state) = stub(&[("VoiceUrl", "https://old.example.com/voice")]).await;
    let rest = client(&api);
    let box_url: url::Url = "https://box.example.com".parse().expect("url");
    let number = NUMBER.parse().expect("number");
    let fallback: url::Url = "https://fallback.example.com/voice".parse().expect("url");
    let first = point_at_box(&rest, &number, &box_url, Some(&fallback), false).await.expect("set up");
    assert_eq!(first, Setup::Updated { previous_voice_url: Some("https://old.example.com/voice".into()) });
    {
        let s = state.lock().expect("lock");
        assert_eq!(s.fields["VoiceUrl"], "https://box.example.com/twilio/voice");
        assert_eq!(s.fields["StatusCallback"], "https://box.example.com/twilio/status");
        assert_eq!(s.fields["VoiceFallbackUrl"], "https://fallback.example.com/voice");
        assert_eq!(s.fields["VoiceMethod"], "POST");
    }
    let second = point_at_box(&rest, &number, &box_url, Some(&fallback), false).await.expect("set up");
    assert_eq!(second, Setup::AlreadySet);
    assert_eq!(state.lock().expect("lock").posts.len(), 1, "nothing rewritten when it already points here");
}

#[tokio::test]
async fn a_number_bound_to_an_application_or_trunk_is_left_alone_without_consent() {
    let number = NUMBER.parse().expect("number");
    let box_url: url::Url = "https://box.example.com".parse().expect("url");
    let (api, state) = stub(&[("VoiceApplicationSid", "AP0123456789abcdef0123456789abcdef")]).await;
    let e = point_at_box(&client(&api), &number, &box_url, None, false).await.expect_err("refused");
    assert!(matches!(e, SetupError::BoundToApplication { .. }), "{e}");
    assert!(e.to_string().contains("force_number_setup") && e.to_string().contains("+*******4567"), "{e}");
    assert!(state.lock().expect("lock").posts.is_empty(), "no write without consent");
    point_at_box(&client(&api), &number, &box_url, None, true).await.expect("with consent");
    assert_eq!(state.lock().expect("lock").posts.len(), 1);

    let (api, state) = stub(&[("TrunkSid", "TK0123456789abcdef0123456789abcdef")]).await;
    let e = point_at_box(&client(&api), &number, &box_url, None, false).await.expect_err("refused");
    assert!(matches!(e, SetupError::BoundToTrunk { .. }), "{e}");
    assert!(state.lock().expect("lock").posts.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_box_sets_its_number_up_and_takes_calls_at_its_public_url() {
    let (api, state) = stub(&[]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let public = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("voca.toml");
    std::fs::write(
        &path,
        format!(
            "[device]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[tunnel]\nprovider = \"external\"\n\
             [twilio]\naccount_sid = \"{ACCOUNT_SID}\"\nauth_token = \"{AUTH_TOKEN}\"\nphone_number = \"{NUMBER}\"\n\
             api_base = \"{api}\"\npublic_url = \"{public}\"\n[calls]\nanswer = \"tones\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write config");
    let config = Config::load(Some(&path), &HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
    let running = voca::app::start(config).await.expect("starts");
    let expected = format!("{public}/twilio/voice");
    for _ in 0..100 {
        if state.lock().expect("lock").fields.get("VoiceUrl") == Some(&expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state.lock().expect("lock").fields.get("VoiceUrl"), Some(&expected), "the number points at the box");
    // Twilio signs for the public URL: the simulator posts there, the box checks against it.
    let mut call = voca::twilio::simulator::SimCall::new(&public, Some(AUTH_TOKEN));
    call.dtmf = vec![(Duration::from_millis(300), '4')];
    call.linger = Duration::from_millis(800);
    let r = voca::twilio::simulator::run(&call).await.expect("call");
    assert_eq!(r.webhook_status, 200);
    assert!(r.marks_echoed.contains(&"dtmf-4".to_owned()), "{:?}", r.marks_echoed);
    running.stop().await.expect("stops");
}

#[tokio::test]
async fn each_new_tunnel_url_is_put_on_the_number() {
    let (api, state) = stub(&[("VoiceUrl", "https://old.example.com/voice")]).await;
    let bus = voca::events::StateBus::default();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(voca::tunnel::keep_number_pointed(
        client(&api),
        NUMBER.parse().expect("e164"),
        None,
        false,
        bus.clone(),
        Duration::from_millis(100),
        shutdown.clone(),
    ));
    let voice_url = || state.lock().expect("lock").fields.get("VoiceUrl").cloned().unwrap_or_default();
    for host in ["first-1a2b.ngrok-free.app", "second-3c4d.ngrok-free.app"] {
        bus.update(|s| s.network.public_url = Some(format!("https://{host}/")));
        let wanted = format!("https://{host}/twilio/voice");
        for _ in 0..100 {
            if voice_url() == wanted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(voice_url(), wanted, "the number follows the tunnel");
    }
    // The tunnel goes down: the number is left as it was (Twilio's fallback URL covers the gap).
    bus.update(|s| s.network.public_url = None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(voice_url(), "https://second-3c4d.ngrok-free.app/twilio/voice");
    assert_eq!(state.lock().expect("lock").posts.len(), 2, "one update per new URL");
    shutdown.cancel();
    task.await.expect("stops");
}
