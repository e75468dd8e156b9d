//! The box in Home Assistant, over MQTT discovery: one device with sensors, buttons, a switch, a
//! select, a notify entity and call events ([`discovery`]); commands from the box's own command
//! topics ([`command`]); availability through a last will.
//!
//! One task drives the connection (rumqttc's event loop, never interrupted mid-read) and hands what
//! arrives to the link's task. Nothing else waits on either: states and events are queued without
//! waiting (`try_publish`). While the broker is away, events (a missed call, a new message) wait in
//! the queue and go out when it is back; states are not queued but all published again, retained,
//! after each reconnect. It reconnects with jittered backoff, and announces itself again when Home
//! Assistant's status topic says `online`.

pub mod command;
pub mod discovery;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, Transport};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::appliance::Appliance;
use crate::call::registry::Registry;
use crate::config::settings::Settings;
use crate::config::{mask_phone, Config};
use crate::events::{Activity, DeviceState, StateBus};
use crate::store::{Store, Written};
use command::Command;
use discovery::Topics;

/// How often states are looked at even without a change notice (live calls come and go).
const REFRESH: Duration = Duration::from_millis(500);
/// How often the figures read from the call log are read again without a change in it (calls
/// today starts over at midnight).
const LOG_REFRESH: Duration = Duration::from_secs(60);
/// Queued messages while the broker is slow, before new ones are dropped.
const QUEUE: usize = 256;

/// What the Home Assistant link works with.
#[derive(Debug, Clone)]
pub struct Parts {
    pub settings: Settings,
    pub bus: StateBus,
    pub store: Store,
    pub registry: Arc<Registry>,
    pub appliance: Appliance,
}

/// Connects to `mqtt.url` (if set) and serves Home Assistant until `shutdown`.
pub async fn run(parts: Parts, shutdown: CancellationToken) {
    let config = parts.settings.live().get();
    let Some(url) = config.mqtt.url.clone() else { return };
    let topics = Topics::new(&config);
    let options = match options(&config, &url, &topics) {
        Ok(options) => options,
        Err(e) => {
            warn!("Home Assistant: {e}");
            parts.bus.set_fault_of(crate::events::Part::Mqtt, Some(format!("Home Assistant: {e}")));
            return;
        }
    };
    info!(broker = %url, base = %topics.base, "Home Assistant: connecting over MQTT");
    let (client, events) = AsyncClient::new(options, QUEUE);
    Link {
        parts,
        topics,
        client,
        published: BTreeMap::new(),
        announced: BTreeSet::new(),
        told: VecDeque::new(),
        from_log: Vec::new(),
    }
    .serve(events, shutdown)
    .await;
}

fn options(config: &Config, url: &url::Url, topics: &Topics) -> Result<MqttOptions, String> {
    let host = url.host_str().ok_or("the broker URL has no host")?;
    let tls = url.scheme() == "mqtts";
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    let mut options = MqttOptions::new(format!("{}-{}", topics.node, std::process::id()), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    // Incoming: room for a stranger's large retained message to arrive and be refused, instead of
    // breaking the connection at every connect; outgoing: the box's own messages are small.
    options.set_max_packet_size(MAX_INCOMING, 64 * 1024);
    options.set_last_will(LastWill::new(topics.availability(), "offline", QoS::AtLeastOnce, true));
    if !config.mqtt.username.is_empty() {
        options.set_credentials(config.mqtt.username.clone(), config.mqtt.password.expose().to_owned());
    }
    if tls {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err("no trusted certificates on this system for mqtts:// (install ca-certificates)".into());
        }
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        options.set_transport(Transport::tls_with_config(tls.into()));
    }
    Ok(options)
}

struct Link {
    parts: Parts,
    topics: Topics,
    client: AsyncClient,
    /// What each state topic was last given (cleared on reconnect: everything is sent again).
    published: BTreeMap<String, String>,
    /// The contact buttons announced, to remove those of contacts that are gone.
    announced: BTreeSet<String>,
    /// Events already told (call SID, kind), so a row changing twice tells once.
    told: VecDeque<(crate::twilio::media::CallSid, &'static str)>,
    /// The states read from the call log (last caller, calls today): read again when the log
    /// changes or `LOG_REFRESH` passes, not at every look at the live state.
    from_log: Vec<(&'static str, String)>,
}

/// The largest MQTT packet the box takes from the broker.
const MAX_INCOMING: usize = 1024 * 1024;
/// A connection that lasted this long was a good one: the next failure starts the pauses over.
const STAYED_UP: Duration = Duration::from_secs(30);

/// What the connection's task hands over.
enum Arrived {
    Connected,
    Message(rumqttc::Publish),
    Lost(String),
    /// The disconnect asked for at shutdown went out.
    Closed,
}

/// Drives rumqttc's event loop (which must not be interrupted mid-read) and hands over what
/// arrives; after a failure it pauses (jittered, doubling to a minute) before the next attempt.
async fn drive(mut events: EventLoop, to_link: tokio::sync::mpsc::Sender<Arrived>) {
    let mut backoff = crate::net::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    // Pauses start over only after a connection that lasted: one the broker (or a message it
    // keeps sending) breaks at once is retried ever more slowly, not twice a second for ever.
    let mut up_since: Option<tokio::time::Instant> = None;
    loop {
        let arrived = match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                up_since = Some(tokio::time::Instant::now());
                Arrived::Connected
            }
            Ok(Event::Incoming(Packet::Publish(message))) => Arrived::Message(message),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => Arrived::Closed,
            Ok(_) => continue,
            Err(e) => {
                if up_since.take().is_some_and(|since| since.elapsed() >= STAYED_UP) {
                    backoff.reset();
                }
                if to_link.send(Arrived::Lost(e.to_string())).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff.pause()).await;
                continue;
            }
        };
        if to_link.send(arrived).await.is_err() {
            return;
        }
    }
}

impl Link {
    async fn serve(mut self, events: EventLoop, shutdown: CancellationToken) {
        let mut bus = self.parts.bus.watch();
        let mut settings = self.parts.settings.live().watch();
        let mut feed = self.parts.store.feed();
        let mut refresh = tokio::time::interval(REFRESH);
        let mut log_refresh = tokio::time::interval(LOG_REFRESH);
        let (to_link, mut arrivals) = tokio::sync::mpsc::channel(QUEUE);
        let driver = tokio::spawn(drive(events, to_link));
        let mut connected = false;
        // The first failure to reach the broker is worth a warning; the retries after it are not.
        let mut warned = false;
        loop {
            tokio::select! {
                arrived = arrivals.recv() => match arrived {
                    Some(Arrived::Connected) => {
                        info!("Home Assistant: connected to the broker");
                        connected = true;
                        self.parts.bus.set_fault_of(crate::events::Part::Mqtt, None);
                        self.on_connect().await;
                    }
                    Some(Arrived::Message(message)) => {
                        self.on_message(&message.topic, &message.payload, message.retain).await
                    }
                    Some(Arrived::Lost(e)) => {
                        if connected {
                            warn!("Home Assistant: the broker connection ended ({e}): reconnecting");
                        } else if !warned {
                            warn!("Home Assistant: cannot reach the broker ({e}): retrying in the background");
                            warned = true;
                        } else {
                            debug!("Home Assistant: cannot reach the broker: {e}");
                        }
                        connected = false;
                        self.published.clear();
                    }
                    Some(Arrived::Closed) | None => {}
                },
                // While the broker is away only events are queued (states and configs are all sent
                // again on connect), so the queue keeps room for what happened meanwhile.
                changed = bus.changed() => if changed.is_ok() && connected { self.publish_states() },
                changed = settings.changed() => if changed.is_ok() {
                    settings.borrow_and_update();
                    if connected {
                        self.announce();
                        self.publish_states();
                    }
                },
                written = feed.recv() => match written {
                    Ok(Written::Call { call_sid }) => {
                        self.tell_events(&call_sid).await;
                        self.read_log().await;
                        if connected { self.publish_states() }
                    }
                    Ok(Written::Turn { .. }) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.read_log().await;
                        if connected { self.publish_states() }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = refresh.tick() => if connected { self.publish_states() },
                _ = log_refresh.tick() => {
                    self.read_log().await;
                    if connected { self.publish_states() }
                },
                () = shutdown.cancelled() => {
                    if connected {
                        self.goodbye(&mut arrivals).await;
                    }
                    driver.abort();
                    return;
                }
            }
        }
    }

    fn send(&self, topic: String, payload: impl Into<Vec<u8>>, retain: bool) {
        if let Err(e) = self.client.try_publish(topic.clone(), QoS::AtLeastOnce, retain, payload.into()) {
            debug!(%topic, "Home Assistant: not sent ({e})");
        }
    }

    async fn on_connect(&mut self) {
        for topic in [self.topics.commands(), self.topics.ha_status(), self.topics.button_configs()] {
            if let Err(e) = self.client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                warn!(%topic, "Home Assistant: cannot subscribe ({e})");
            }
        }
        self.announced.clear();
        self.announce();
        self.send(self.topics.availability(), "online", true);
        self.published.clear();
        self.read_log().await;
        self.publish_states();
    }

    /// Discovery configs (retained); contact buttons no longer wanted are removed.
    fn announce(&mut self) {
        let config = self.parts.settings.live().get();
        let configs = discovery::configs(&config, &self.topics);
        let contacts: BTreeSet<String> = config.contacts.iter().map(|c| discovery::contact_object(&c.name)).collect();
        for gone in self.announced.difference(&contacts) {
            self.send(self.topics.config("button", gone), Vec::new(), true);
        }
        for (topic, payload) in configs {
            self.send(topic, payload.to_string(), true);
        }
        self.announced = contacts;
    }

    async fn on_message(&mut self, topic: &str, payload: &[u8], retained: bool) {
        if topic == self.topics.ha_status() {
            if payload == b"online" {
                info!("Home Assistant came online: announcing the box again");
                self.announce();
                self.published.clear();
                self.publish_states();
            }
            return;
        }
        if let Some(object) = topic.strip_prefix(&format!("{}/button/{}/", self.topics.prefix, self.topics.node)) {
            // A retained config of ours: a contact button whose contact is gone goes too.
            let object = object.trim_end_matches("/config");
            let wanted = !object.starts_with("call_") || object == "call_for_help" || self.announced.contains(object);
            if !wanted && !payload.is_empty() {
                info!(entity = object, "Home Assistant: removing the button of a removed contact");
                self.send(topic.to_owned(), Vec::new(), true);
            }
            return;
        }
        let Some(entity) = topic.strip_prefix(&format!("{}/command/", self.topics.base)) else { return };
        if retained {
            // A command is obeyed when it is sent, once: a retained one would be replayed at every
            // connect (a call for help at every start). It is refused and cleared from the broker.
            if !payload.is_empty() {
                warn!(
                    entity = %entity.escape_debug(),
                    bytes = payload.len(),
                    "Home Assistant: a retained command is not obeyed (commands count only when sent); cleared"
                );
                self.send(topic.to_owned(), Vec::new(), true);
            }
            return;
        }
        match command::parse(entity, payload) {
            Ok(command) => self.obey(command).await,
            Err(e) => warn!("Home Assistant command refused, nothing done: {e}"),
        }
    }

    async fn obey(&mut self, command: Command) {
        info!(?command, "Home Assistant command");
        let appliance = self.parts.appliance.clone();
        match command {
            Command::Call(object) => {
                let contact = appliance.contacts().into_iter().find(|c| discovery::contact_object(&c.name) == object);
                match contact {
                    Some(contact) => {
                        tokio::spawn(async move {
                            appliance.call_contact(&contact, false).await;
                        });
                    }
                    None => warn!("Home Assistant command refused, nothing done: no contact for `{object}`"),
                }
            }
            Command::CallForHelp => appliance.call_for_help(),
            Command::HangUp => {
                appliance.hang_up();
            }
            Command::PlayMessages => {
                tokio::spawn(async move { appliance.play_messages().await });
            }
            Command::Say(text) => {
                if let Err(busy) = appliance.try_say(text) {
                    warn!("Home Assistant: `say` refused: {busy}");
                }
            }
            Command::DoNotDisturb(on) => self.change("calls.do_not_disturb", json!(on)).await,
            Command::AnswerMode(mode) => self.change("calls.answer", json!(mode)).await,
        }
    }

    /// Changes a setting as the LAN page would (stored, shown there too).
    async fn change(&mut self, key: &str, value: Value) {
        let settings = self.parts.settings.clone();
        let mut changes = serde_json::Map::new();
        changes.insert(key.to_owned(), value);
        match tokio::task::spawn_blocking(move || settings.update(&changes)).await {
            Ok(Ok(_)) => self.publish_states(),
            Ok(Err(e)) => warn!("Home Assistant command refused: {e}"),
            Err(e) => warn!("Home Assistant command failed: {e}"),
        }
    }

    /// Publishes the states that changed since they were last sent (retained).
    fn publish_states(&mut self) {
        for (entity, payload) in self.states() {
            let topic = self.topics.state(entity);
            if self.published.get(&topic) != Some(&payload) {
                self.send(topic.clone(), payload.clone(), true);
                self.published.insert(topic, payload);
            }
        }
    }

    fn states(&self) -> Vec<(&'static str, String)> {
        let config = self.parts.settings.live().get();
        let snapshot = self.parts.bus.snapshot();
        let live_calls = !self.parts.registry.is_empty();
        let on = |b: bool| if b { "ON" } else { "OFF" }.to_owned();
        let state = if snapshot.fault.is_some() {
            "fault"
        } else if matches!(snapshot.state, DeviceState::Offline | DeviceState::Starting | DeviceState::Stopping) {
            "offline"
        } else if snapshot.activity == Activity::Ringing {
            "ringing"
        } else if live_calls || snapshot.activity == Activity::InCall {
            "in call"
        } else {
            "idle"
        };
        let mut out = self.from_log.clone();
        out.extend([
            ("state", state.to_owned()),
            ("messages_waiting", snapshot.waiting.to_string()),
            ("in_call", on(live_calls || snapshot.activity == Activity::InCall)),
            ("reachable", on(snapshot.state == DeviceState::Ready && snapshot.network.api_reachable)),
            ("fault", on(snapshot.fault.is_some())),
            ("fault_detail", json!({ "fault": snapshot.fault }).to_string()),
            ("do_not_disturb", on(config.calls.do_not_disturb)),
            ("answer_mode", format!("{:?}", config.calls.answer).to_lowercase()),
        ]);
        out
    }

    /// Reads the states that come from the call log: the last caller and the calls today.
    async fn read_log(&mut self) {
        let config = self.parts.settings.live().get();
        let mut fresh = Vec::new();
        if let Ok(calls) = self.parts.store.recent_calls(50).await {
            let last = calls.iter().find(|c| !c.direction.starts_with("outbound"));
            fresh.push(("last_caller", last.map_or_else(String::new, |c| caller_name(&config, &c.from_number))));
        }
        if let Ok(days) = self.parts.store.usage(1).await {
            let today = days.first().map_or(0, |d| d.answered + d.missed + d.voicemail + d.outgoing);
            fresh.push(("calls_today", today.to_string()));
        }
        self.from_log = fresh;
    }

    /// Tells Home Assistant's event entity what just happened to call `sid`.
    async fn tell_events(&mut self, sid: &crate::twilio::media::CallSid) {
        let Ok(Some(call)) = self.parts.store.call(sid).await else { return };
        if call.direction.starts_with("outbound") {
            return;
        }
        let config = self.parts.settings.live().get();
        let mut kinds = vec!["incoming_call"];
        if call.voicemail.is_some() {
            kinds.push("new_voicemail");
        } else if call.outcome.is_some() && call.answered_at.is_none() {
            kinds.push("missed_call");
        }
        for kind in kinds {
            if self.told.iter().any(|(s, k)| s == sid && *k == kind) {
                continue;
            }
            self.told.push_back((sid.clone(), kind));
            if self.told.len() > 512 {
                self.told.pop_front();
            }
            let payload = json!({
                "event_type": kind,
                "caller": caller_name(&config, &call.from_number),
                "call_sid": sid,
            });
            self.send(self.topics.event(), payload.to_string(), false);
        }
    }

    /// Offline (retained) before a clean stop: the last will covers the other ways to go.
    async fn goodbye(&self, arrivals: &mut tokio::sync::mpsc::Receiver<Arrived>) {
        self.send(self.topics.availability(), "offline", true);
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(arrived) = arrivals.recv().await {
                if matches!(arrived, Arrived::Closed | Arrived::Lost(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// A caller as Home Assistant shows it: the contact's name, else the number masked.
fn caller_name(config: &Config, number: &str) -> String {
    config.contacts.iter().find(|c| c.number.as_str() == number).map_or_else(|| mask_phone(number), |c| c.name.clone())
}
