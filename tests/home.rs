//! The box in Home Assistant: a real MQTT broker (mosquitto) and a test client playing Home
//! Assistant, against the real box (file-backed ALSA, Twilio's API played by Prism).

mod common;

use std::time::{Duration, Instant};

use common::broker::{Broker, HomeAssistant};
use common::rig::{wait_ready, Rig};
use common::AUTH_TOKEN;
use serde_json::Value;
use voca::twilio::simulator::{self, SimCall};

const BASE: &str = "voca/voca_box";
const PREFIX: &str = "homeassistant";

fn config_topic(component: &str, object: &str) -> String {
    format!("{PREFIX}/{component}/voca_voca_box/{object}/config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_sees_the_box_and_drives_it() {
    let mut broker = Broker::start();
    let ha = HomeAssistant::connect(broker.port).await;
    let rig = Rig::new(&[]).await;
    let running =
        voca::app::start(rig.config(&format!("[calls]\nanswer = \"assistant\"\n[mqtt]\nurl = \"{}\"\n", broker.url())))
            .await
            .expect("box starts");
    wait_ready(&running).await;

    // Discovery: retained configs with the keys Home Assistant requires, one device.
    let required: &[(&str, &str, &[&str])] = &[
        ("sensor", "state", &["state_topic"]),
        ("sensor", "messages_waiting", &["state_topic"]),
        ("sensor", "last_caller", &["state_topic"]),
        ("sensor", "calls_today", &["state_topic"]),
        ("binary_sensor", "in_call", &["state_topic"]),
        ("binary_sensor", "reachable", &["state_topic"]),
        ("binary_sensor", "fault", &["state_topic"]),
        ("button", "call_alice", &["command_topic"]),
        ("button", "call_bob", &["command_topic"]),
        ("button", "call_for_help", &["command_topic"]),
        ("button", "hang_up", &["command_topic"]),
        ("button", "play_messages", &["command_topic"]),
        ("switch", "do_not_disturb", &["command_topic", "state_topic"]),
        ("select", "answer_mode", &["command_topic", "options"]),
        ("notify", "say", &["command_topic"]),
        ("event", "call", &["state_topic", "event_types"]),
    ];
    for (component, object, keys) in required {
        let topic = config_topic(component, object);
        let m = ha.wait_for(&topic, |m| m.topic == topic).await;
        let config: Value = serde_json::from_str(&m.payload).expect("JSON config");
        for key in keys.iter().chain(&["unique_id", "availability_topic", "device", "name"]) {
            assert!(config.get(*key).is_some(), "{topic} lacks {key}: {config}");
        }
        assert_eq!(config["device"]["identifiers"][0], "voca_voca_box");
        assert_eq!(config["availability_topic"], format!("{BASE}/availability"));
    }
    ha.wait_state(&format!("{BASE}/availability"), "online").await;
    ha.wait_state(&format!("{BASE}/state/reachable"), "ON").await;
    ha.wait_state(&format!("{BASE}/state/in_call"), "OFF").await;

    // A late Home Assistant gets everything retained.
    let late = HomeAssistant::connect(broker.port).await;
    let m = late.wait_for("retained availability", |m| m.topic == format!("{BASE}/availability")).await;
    assert!(m.retain && m.payload == "online");
    late.wait_for("retained config", |m| m.topic == config_topic("switch", "do_not_disturb") && m.retain).await;

    // "Call Alice": a call Twilio's spec accepts.
    ha.send(&format!("{BASE}/command/call_alice"), "PRESS").await;
    let placed = rig
        .wait_for_request(|s| {
            s.method == "POST" && s.path.ends_with("/Calls.json") && s.body.contains("%2B15557654321")
        })
        .await;
    assert_eq!(placed.status, 201, "{}", placed.answer);

    // A bad payload: logged, nothing done, the box fine.
    ha.send(&format!("{BASE}/command/answer_mode"), "sing").await;
    ha.send(&format!("{BASE}/command/do_not_disturb"), "maybe").await;
    ha.send(&format!("{BASE}/command/reboot"), "PRESS").await;
    ha.send(&format!("{BASE}/command/say"), "").await;
    // Do-not-disturb on: the state follows, and the next call goes to voicemail.
    ha.send(&format!("{BASE}/command/do_not_disturb"), "ON").await;
    ha.wait_state(&format!("{BASE}/state/do_not_disturb"), "ON").await;
    let config = running.appliance.contacts();
    assert_eq!(config.len(), 2, "nothing else changed");
    ha.wait_state(&format!("{BASE}/state/answer_mode"), "assistant").await;

    ha.clear();
    let mut call = SimCall::new(&rig.base, Some(AUTH_TOKEN));
    call.from = "+15557654321".into();
    let mut audio = vec![0i16; 8000 * 6];
    audio.extend(common::say("내일 다시 전화할게요", 8000));
    audio.extend(vec![0i16; 8000 * 2]);
    call.audio = audio;
    let sid = call.call_sid.clone();
    let caller = tokio::spawn(async move { simulator::run(&call).await });
    let event = ha
        .wait_for("the incoming-call event", |m| {
            m.topic == format!("{BASE}/event") && m.payload.contains("incoming_call")
        })
        .await;
    let event: Value = serde_json::from_str(&event.payload).expect("json");
    assert_eq!(
        (event["caller"].as_str(), event["call_sid"].as_str()),
        (Some("Alice"), Some(sid.as_str())),
        "a contact by name"
    );
    ha.wait_state(&format!("{BASE}/state/in_call"), "ON").await;
    caller.await.expect("caller").expect("the call runs");
    ha.wait_state(&format!("{BASE}/state/in_call"), "OFF").await;
    ha.wait_for("the new-voicemail event", |m| {
        m.topic == format!("{BASE}/event") && m.payload.contains("new_voicemail")
    })
    .await;
    ha.wait_state(&format!("{BASE}/state/messages_waiting"), "1").await;
    ha.wait_state(&format!("{BASE}/state/last_caller"), "Alice").await;

    // "Say": speech in the speaker's file-backed PCM.
    let before = rig.speaker().len();
    ha.send(&format!("{BASE}/command/say"), "안녕하세요").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.speaker()[before.min(rig.speaker().len())..].iter().filter(|s| s.unsigned_abs() > 1000).count() < 1600 {
        assert!(Instant::now() < deadline, "the box never said it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The broker goes away, and a message is left meanwhile: Home Assistant hears of it once the
    // broker is back (events that matter later are held; the states are sent again anyway).
    broker.stop();
    let mut call = SimCall::new(&rig.base, Some(AUTH_TOKEN));
    call.from = "+15559876543".into();
    let mut audio = vec![0i16; 8000 * 6];
    audio.extend(common::say("나중에 전화 주세요", 8000));
    audio.extend(vec![0i16; 8000 * 2]);
    call.audio = audio;
    let away = voca::twilio::media::CallSid::parse(&call.call_sid).expect("a call SID");
    simulator::run(&call).await.expect("the call runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.store.call(&away).await.expect("store").and_then(|c| c.voicemail).is_none() {
        assert!(Instant::now() < deadline, "the message was not saved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.restart();
    let ha = HomeAssistant::connect(broker.port).await;
    let held = ha
        .wait_for("the message left while the broker was away", |m| {
            m.topic == format!("{BASE}/event")
                && m.payload.contains("new_voicemail")
                && m.payload.contains(away.as_str())
        })
        .await;
    let held: Value = serde_json::from_str(&held.payload).expect("json");
    assert_eq!(held["caller"], "Bob", "{held}");
    ha.wait_state(&format!("{BASE}/state/messages_waiting"), "2").await;

    // A contact removed on the page: its button leaves Home Assistant.
    let mut changes = serde_json::Map::new();
    changes.insert("contacts".into(), serde_json::json!([{ "name": "Alice", "number": "+15557654321", "button": 1 }]));
    running_settings(&running).update(&changes).expect("saved");
    let bob = config_topic("button", "call_bob");
    ha.wait_for("Bob's button removed", |m| m.topic == bob && m.payload.is_empty()).await;
    running.stop().await.expect("stops");
    ha.wait_state(&format!("{BASE}/availability"), "offline").await;
    let late = HomeAssistant::connect(broker.port).await;
    let kept = late.wait_for("offline, retained", |m| m.topic == format!("{BASE}/availability")).await;
    assert!(kept.retain && kept.payload == "offline", "{kept:?}");
}

fn running_settings(running: &voca::app::Running) -> voca::config::settings::Settings {
    running.settings.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_box_goes_offline_and_a_restarted_broker_is_told_everything_again() {
    let mut broker = Broker::start();
    let ha = HomeAssistant::connect(broker.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::debian::free_port();
    std::fs::write(
        dir.path().join("voca.toml"),
        format!(
            "[device]\ncapture = \"null\"\nplayback = \"null\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[calls]\nanswer = \"tones\"\n[mqtt]\nurl = \"{}\"\n",
            broker.url()
        ),
    )
    .expect("config");
    let log = dir.path().join("box.log");
    let start = || {
        let stderr = std::fs::File::options().create(true).append(true).open(&log).expect("log");
        common::voca(dir.path())
            .args(["--config", "voca.toml", "run"])
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .map(common::Spawned)
            .expect("voca runs")
    };
    let availability = format!("{BASE}/availability");
    let mut child = start();
    ha.wait_state(&availability, "online").await;
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    ha.wait_state(&availability, "offline").await;
    let late = HomeAssistant::connect(broker.port).await;
    late.wait_state(&availability, "offline").await;
    drop(late);

    let mut child = start();
    ha.wait_state(&availability, "online").await;
    // The broker restarts with nothing retained: the box reconnects and tells it all again.
    broker.restart();
    let fresh = HomeAssistant::connect(broker.port).await;
    fresh.wait_state(&availability, "online").await;
    fresh.wait_for("the configs again", |m| m.topic == config_topic("select", "answer_mode")).await;
    fresh.wait_for("the states again", |m| m.topic == format!("{BASE}/state/calls_today")).await;
    let check = HomeAssistant::connect(broker.port).await;
    check.wait_for("the configs retained", |m| m.topic == config_topic("select", "answer_mode") && m.retain).await;
    check.wait_for("the states retained", |m| m.topic == format!("{BASE}/state/state") && m.retain).await;
    // Home Assistant restarting asks for everything again through its status topic.
    fresh.clear();
    fresh.send(&format!("{PREFIX}/status"), "online").await;
    fresh.wait_for("announced again", |m| m.topic == config_topic("sensor", "state")).await;
    // A bad payload on a command topic: logged with what was expected, nothing changed.
    fresh.send(&format!("{BASE}/command/answer_mode"), "sing").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("`answer_mode`: expected one of assistant, ring")
    {
        assert!(
            Instant::now() < deadline,
            "the refusal was not logged: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fresh.last(&format!("{BASE}/state/answer_mode")).as_deref(), Some("tones"), "nothing changed");
    assert!(common::debian::healthz(port).is_some(), "the box is fine");
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_commands_are_not_obeyed_at_connect_and_a_huge_one_does_not_break_the_link() {
    let broker = Broker::start();
    let stranger = HomeAssistant::connect(broker.port).await;
    // Left on the broker before the box connects: a call for help, do-not-disturb, and a 100 KB
    // message to say. Were they obeyed, every start of the box would call for help again.
    let retain = |topic: &str, payload: Vec<u8>| {
        let client = stranger.client.clone();
        let topic = format!("{BASE}/command/{topic}");
        async move { client.publish(topic, rumqttc::QoS::AtLeastOnce, true, payload).await.expect("publish") }
    };
    retain("call_for_help", b"PRESS".to_vec()).await;
    retain("do_not_disturb", b"ON".to_vec()).await;
    retain("say", vec![b'a'; 100 * 1024]).await;
    let check = HomeAssistant::connect(broker.port).await;
    // (`publish` only queues: wait until the broker has them.)
    check.wait_for("the retained say", |m| m.topic == format!("{BASE}/command/say")).await;

    let rig = Rig::new(&[]).await;
    let running =
        voca::app::start(rig.config(&format!("[mqtt]\nurl = \"{}\"\n", broker.url()))).await.expect("box starts");
    wait_ready(&running).await;
    let ha = HomeAssistant::connect(broker.port).await;
    ha.wait_state(&format!("{BASE}/availability"), "online").await;
    // A command sent now is obeyed: the link is up and came past the retained ones (a broker
    // delivers them at subscription, before anything sent later).
    ha.send(&format!("{BASE}/command/answer_mode"), "voicemail").await;
    ha.wait_state(&format!("{BASE}/state/answer_mode"), "voicemail").await;
    assert_eq!(
        ha.last(&format!("{BASE}/state/do_not_disturb")).as_deref(),
        Some("OFF"),
        "the retained ON was not obeyed"
    );
    assert!(
        // (A GET of the call list is the box's call-log sync, not a call.)
        !rig.log.lock().expect("log").iter().any(|s| s.method == "POST" && s.path.ends_with("/Calls.json")),
        "no call for help was placed"
    );
    // The box cleared them: the next start finds nothing to refuse.
    for topic in ["call_for_help", "do_not_disturb", "say"] {
        let topic = format!("{BASE}/command/{topic}");
        check.wait_for("the retained command cleared", |m| m.topic == topic && m.payload.is_empty()).await;
    }
    assert_eq!(ha.last(&format!("{BASE}/availability")).as_deref(), Some("online"), "the link stayed up");
    running.stop().await.expect("stop");
}
