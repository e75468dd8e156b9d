//! What the box announces to Home Assistant: one device and its entities, as MQTT discovery
//! config messages (full key names, no abbreviations), and the topics they use.

use serde_json::{json, Value};

use crate::config::{hostname, slug, Config};

/// The box's topics: `<base>/availability`, `<base>/state/<entity>`, `<base>/command/<entity>`,
/// `<base>/event`; discovery under `<prefix>/<component>/<node>/<object>/config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub base: String,
    pub prefix: String,
    /// Home Assistant's node id for this box (and the start of every unique id).
    pub node: String,
}

impl Topics {
    pub fn new(config: &Config) -> Self {
        let base = config.mqtt_base_topic();
        Self { node: slug(&base), prefix: config.mqtt.discovery_prefix.trim().trim_end_matches('/').to_owned(), base }
    }

    pub fn availability(&self) -> String {
        format!("{}/availability", self.base)
    }

    pub fn state(&self, entity: &str) -> String {
        format!("{}/state/{entity}", self.base)
    }

    pub fn command(&self, entity: &str) -> String {
        format!("{}/command/{entity}", self.base)
    }

    /// Every command topic of this box (and nothing else).
    pub fn commands(&self) -> String {
        format!("{}/command/#", self.base)
    }

    pub fn event(&self) -> String {
        format!("{}/event", self.base)
    }

    /// Home Assistant says `online` here when it (re)starts: announce again.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    pub fn config(&self, component: &str, object: &str) -> String {
        format!("{}/{component}/{}/{object}/config", self.prefix, self.node)
    }

    /// This box's contact buttons' configs, for finding those of removed contacts.
    pub fn button_configs(&self) -> String {
        format!("{}/button/{}/+/config", self.prefix, self.node)
    }
}

/// The call button entity of a contact.
pub fn contact_object(name: &str) -> String {
    format!("call_{}", slug(name))
}

/// How calls can be answered (the `select` entity's options).
pub const ANSWER_MODES: [&str; 5] = ["assistant", "ring", "intercom", "voicemail", "tones"];
/// The `event` entity's event types.
pub const EVENT_TYPES: [&str; 3] = ["incoming_call", "missed_call", "new_voicemail"];

/// The LAN page's address, for the device's `configuration_url`.
fn page_url(config: &Config) -> String {
    let addr = config.http.listen;
    let port = if addr.port() == 80 { String::new() } else { format!(":{}", addr.port()) };
    if addr.ip().is_unspecified() {
        format!("http://{}.local{port}/", hostname())
    } else {
        format!("http://{}/", addr)
    }
}

/// Every discovery message: (config topic, payload).
pub fn configs(config: &Config, topics: &Topics) -> Vec<(String, Value)> {
    let device = json!({
        "identifiers": [topics.node],
        "name": config.device.name,
        "manufacturer": "VOCA Box developers",
        "model": "VOCA Box",
        "sw_version": env!("CARGO_PKG_VERSION"),
        "configuration_url": page_url(config),
    });
    let entity = |component: &str, object: &str, name: &str, extra: Value| {
        let mut payload = json!({
            "name": name,
            "unique_id": format!("{}_{object}", topics.node),
            // Entity ids read `event.voca_box_call` (the box's name, then the entity);
            // `default_entity_id` replaced `object_id` in Home Assistant 2025.10.
            "default_entity_id": format!("{component}.{}_{object}", slug(&config.device.name)),
            "availability_topic": topics.availability(),
            "device": device,
        });
        if let (Value::Object(p), Value::Object(e)) = (&mut payload, extra) {
            p.extend(e);
        }
        (topics.config(component, object), payload)
    };
    let mut out = vec![
        entity(
            "sensor",
            "state",
            "State",
            json!({ "state_topic": topics.state("state"), "icon": "mdi:phone-classic" }),
        ),
        entity(
            "sensor",
            "messages_waiting",
            "Messages waiting",
            json!({ "state_topic": topics.state("messages_waiting"), "icon": "mdi:voicemail", "state_class": "measurement" }),
        ),
        entity(
            "sensor",
            "last_caller",
            "Last caller",
            json!({ "state_topic": topics.state("last_caller"), "icon": "mdi:phone-incoming" }),
        ),
        entity(
            "sensor",
            "calls_today",
            "Calls today",
            json!({ "state_topic": topics.state("calls_today"), "icon": "mdi:phone-log", "state_class": "total" }),
        ),
        entity(
            "binary_sensor",
            "in_call",
            "In a call",
            json!({ "state_topic": topics.state("in_call"), "icon": "mdi:phone-in-talk" }),
        ),
        entity(
            "binary_sensor",
            "reachable",
            "Reachable by phone",
            json!({ "state_topic": topics.state("reachable"), "device_class": "connectivity" }),
        ),
        entity(
            "binary_sensor",
            "fault",
            "Fault",
            json!({ "state_topic": topics.state("fault"), "device_class": "problem", "json_attributes_topic": topics.state("fault_detail") }),
        ),
        entity(
            "button",
            "call_for_help",
            "Call for help",
            json!({ "command_topic": topics.command("call_for_help"), "icon": "mdi:alarm-light" }),
        ),
        entity(
            "button",
            "hang_up",
            "Hang up",
            json!({ "command_topic": topics.command("hang_up"), "icon": "mdi:phone-hangup" }),
        ),
        entity(
            "button",
            "play_messages",
            "Play messages",
            json!({ "command_topic": topics.command("play_messages"), "icon": "mdi:play" }),
        ),
        entity(
            "switch",
            "do_not_disturb",
            "Do not disturb",
            json!({ "command_topic": topics.command("do_not_disturb"), "state_topic": topics.state("do_not_disturb"), "icon": "mdi:phone-off" }),
        ),
        entity(
            "select",
            "answer_mode",
            "Answer calls with",
            json!({ "command_topic": topics.command("answer_mode"), "state_topic": topics.state("answer_mode"), "options": ANSWER_MODES }),
        ),
        entity(
            "notify",
            "say",
            "Say on the speaker",
            json!({ "command_topic": topics.command("say"), "icon": "mdi:bullhorn" }),
        ),
        entity(
            "event",
            "call",
            "Call",
            json!({ "state_topic": topics.event(), "event_types": EVENT_TYPES, "icon": "mdi:phone-ring" }),
        ),
    ];
    for contact in &config.contacts {
        let object = contact_object(&contact.name);
        out.push(entity(
            "button",
            &object,
            &format!("Call {}", contact.name),
            json!({ "command_topic": topics.command(&object), "icon": "mdi:phone-outgoing" }),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entity_has_the_keys_home_assistant_requires() {
        let mut config = Config::defaults();
        config.contacts = vec![crate::config::Contact {
            name: "Grandma Rose".into(),
            number: "+15551234567".parse().expect("number"),
            button: None,
            emergency: true,
        }];
        let topics = Topics::new(&config);
        assert_eq!(topics.base, "voca/voca_box");
        let configs = configs(&config, &topics);
        let required: &[(&str, &[&str])] = &[
            ("sensor", &["state_topic"]),
            ("binary_sensor", &["state_topic"]),
            ("button", &["command_topic"]),
            ("switch", &["command_topic"]),
            ("select", &["command_topic", "options"]),
            ("notify", &["command_topic"]),
            ("event", &["state_topic", "event_types"]),
        ];
        for (topic, payload) in &configs {
            let component = topic.split('/').nth(1).expect("component");
            let keys = required.iter().find(|(c, _)| *c == component).unwrap_or_else(|| panic!("{topic}")).1;
            for key in keys.iter().chain(&["unique_id", "availability_topic", "device"]) {
                assert!(payload.get(*key).is_some(), "{topic} lacks {key}: {payload}");
            }
            let entity_id = payload["default_entity_id"].as_str().expect("default_entity_id");
            assert!(entity_id.starts_with(&format!("{component}.voca_box_")), "{entity_id}");
        }
        let topic = topics.config("button", "call_grandma_rose");
        assert!(configs.iter().any(|(t, _)| *t == topic), "a button per contact");
    }
}
