//! The REST client's requests against Twilio's own OpenAPI spec, served by the Prism mock: a request
//! that breaks the schema gets 422, so every call here proves its shape.

mod common;

use common::{ACCOUNT_SID, AUTH_TOKEN};
use voca::config::E164;
use voca::twilio::rest::{CallFilter, NewCall, NumberWebhooks, RestClient};

fn client(base: &str) -> RestClient {
    common::rest_client(base)
}

#[tokio::test]
async fn every_request_the_box_makes_matches_twilios_spec() {
    let prism = common::start_prism();
    let c = client(&prism.base);

    let account = c.account().await.expect("GET Accounts/{AC}.json");
    assert!(account.sid.starts_with("AC"));

    let ours: E164 = "+15551234567".parse().expect("number");
    // Prism answers with the spec's example list; whether it holds our number does not matter here.
    c.find_number(&ours).await.expect("GET IncomingPhoneNumbers.json?PhoneNumber=");
    let hooks = NumberWebhooks {
        voice_url: "https://box.example.com/twilio/voice",
        status_callback: "https://box.example.com/twilio/status",
        fallback_url: Some("https://fallback.example.com/voice"),
    };
    c.set_number_webhooks("PN0123456789abcdef0123456789abcdef", &hooks)
        .await
        .expect("POST IncomingPhoneNumbers/{PN}.json");

    let to: E164 = "+15557654321".parse().expect("number");
    let placed = c
        .place_call(&NewCall {
            to: &to,
            from: &ours,
            url: "https://box.example.com/twilio/voice",
            status_callback: Some("https://box.example.com/twilio/status"),
            timeout: Some(25),
            detect_machine: true,
        })
        .await
        .expect("POST Calls.json with every option");
    assert!(placed.sid.starts_with("CA"));

    let sid = voca::twilio::media::CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("sid");
    c.hang_up(&sid).await.expect("POST Calls/{CA}.json Status=completed");
    // limit 1: the spec's example page links a next page whose own query breaks the spec
    // (StartTime=2008-01-02 is no date-time); following pages is tested against the stub in rest.rs.
    let filter = CallFilter {
        to: Some("+15551234567"),
        status: Some("no-answer"),
        started_after: Some("2026-01-01T00:00:00Z"),
        limit: 1,
        ..CallFilter::default()
    };
    c.list_calls(&filter).await.expect("GET Calls.json with filters");

    // The mock is strict: a call without `To` is refused, so the successes above mean something.
    let raw = reqwest::Client::new()
        .post(format!("{}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json", prism.base))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .form(&[("From", "+15551234567"), ("Url", "https://box.example.com/twilio/voice")])
        .send()
        .await
        .expect("post");
    assert_eq!(raw.status().as_u16(), 422);
}
