//! What the box is doing, as one snapshot watched by everything that shows it (LEDs, status page,
//! logs): the device state, the tunnel, the phone network, the current activity, messages waiting
//! and any fault. Producers change one field; watchers see whole snapshots.

use serde::Serialize;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Booting: models loading, network coming up.
    Starting,
    /// Reachable from the phone network.
    Ready,
    /// Local features only (no tunnel, or the network is gone).
    Offline,
    /// Shutting down: calls are being ended.
    Stopping,
}

/// What the box is busy with right now (one thing at a time on the speaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    #[default]
    Idle,
    /// An incoming call rings the box.
    Ringing,
    /// A call-out is being placed.
    Dialing,
    /// A call-out rings at the far end.
    RingingOut,
    /// A call plays through the box's speaker and microphone.
    InCall,
    /// The last call-out failed (shown briefly).
    CallFailed,
    /// Push-to-talk: recording the user.
    Listening,
    /// The box speaks on its speaker (assistant reply, messages, status).
    Speaking,
}

/// Whether the box can reach the phone network: its tunnel and Twilio's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Network {
    /// The public URL Twilio reaches the box at, while the tunnel is up.
    pub public_url: Option<String>,
    /// The last time the tunnel went down, why.
    pub tunnel_down: Option<String>,
    /// Twilio's API answered the last probe.
    pub api_reachable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub state: DeviceState,
    pub activity: Activity,
    pub network: Network,
    /// Missed calls and voicemails not yet heard.
    pub waiting: u32,
    /// Something needs attention (e.g. the audio device is gone); cleared when it recovers. Each
    /// part reports its own (see [`StateBus::set_fault_of`]); this shows them all.
    pub fault: Option<String>,
    /// How far the speech model's download has come, in percent, while the box downloads it.
    pub model_download: Option<u8>,
    /// The faults by the part that reported them.
    #[serde(skip)]
    faults: std::collections::BTreeMap<Part, String>,
}

/// A part of the box that can report a fault of its own (shown in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// The speaker or the microphone.
    Audio,
    /// The link to Home Assistant's MQTT broker.
    Mqtt,
    /// The LEDs and buttons.
    Panel,
    /// The settings saved from the page.
    Settings,
    /// The call log.
    Store,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            state: DeviceState::Starting,
            activity: Activity::Idle,
            network: Network::default(),
            waiting: 0,
            fault: None,
            model_download: None,
            faults: Default::default(),
        }
    }
}

/// Publishes the current [`Snapshot`]; cheap to clone, any number of watchers.
#[derive(Debug, Clone)]
pub struct StateBus {
    tx: watch::Sender<Snapshot>,
}

impl Default for StateBus {
    fn default() -> Self {
        Self { tx: watch::Sender::new(Snapshot::default()) }
    }
}

impl StateBus {
    pub fn set(&self, state: DeviceState) {
        self.update(|s| {
            if s.state != state {
                tracing::info!(from = ?s.state, to = ?state, "device state");
            }
            s.state = state;
        });
    }

    pub fn set_activity(&self, activity: Activity) {
        self.update(|s| s.activity = activity);
    }

    /// Sets the activity back to idle, but only if it is still `activity` (a newer one stays).
    pub fn end_activity(&self, activity: Activity) {
        self.update(|s| {
            if s.activity == activity {
                s.activity = Activity::Idle;
            }
        });
    }

    pub fn set_waiting(&self, waiting: u32) {
        self.update(|s| s.waiting = waiting);
    }

    /// `part` reports its fault, or that it has none any more; the others' stay.
    pub fn set_fault_of(&self, part: Part, fault: Option<String>) {
        self.update(|s| {
            match fault {
                Some(fault) => s.faults.insert(part, fault),
                None => s.faults.remove(&part),
            };
            let all: Vec<&str> = s.faults.values().map(String::as_str).collect();
            s.fault = (!all.is_empty()).then(|| all.join("; "));
        });
    }

    /// Changes the snapshot; watchers are told only when something actually changed.
    pub fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        self.tx.send_if_modified(|current| {
            let before = current.clone();
            change(current);
            *current != before
        });
    }

    pub fn current(&self) -> DeviceState {
        self.tx.borrow().state
    }

    pub fn snapshot(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_see_each_change_once() {
        let bus = StateBus::default();
        let mut rx = bus.watch();
        assert_eq!(bus.current(), DeviceState::Starting);
        bus.set(DeviceState::Offline);
        rx.changed().await.expect("sender alive");
        assert_eq!(rx.borrow_and_update().state, DeviceState::Offline);
        bus.set(DeviceState::Offline);
        assert!(!rx.has_changed().expect("sender alive"), "setting the same state is not a change");
        bus.set_activity(Activity::Dialing);
        bus.end_activity(Activity::Ringing);
        assert_eq!(bus.snapshot().activity, Activity::Dialing, "only the activity that ends is cleared");
        bus.end_activity(Activity::Dialing);
        assert_eq!(bus.snapshot().activity, Activity::Idle);
        bus.set_fault_of(Part::Panel, Some("no GPIO".into()));
        bus.set_fault_of(Part::Audio, Some("no speaker".into()));
        assert_eq!(bus.snapshot().fault.as_deref(), Some("no speaker; no GPIO"));
        bus.set_fault_of(Part::Audio, None);
        assert_eq!(bus.snapshot().fault.as_deref(), Some("no GPIO"), "one part recovering clears only its fault");
    }
}
