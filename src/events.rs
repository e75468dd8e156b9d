//! The device state: one value that says what the box is doing, watched by everything that shows it
//! (LEDs, status page, logs).

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

/// Publishes the current [`DeviceState`]; cheap to clone, any number of watchers.
#[derive(Debug, Clone)]
pub struct StateBus {
    tx: watch::Sender<DeviceState>,
}

impl Default for StateBus {
    fn default() -> Self {
        Self { tx: watch::Sender::new(DeviceState::Starting) }
    }
}

impl StateBus {
    pub fn set(&self, state: DeviceState) {
        self.tx.send_if_modified(|current| {
            let changed = *current != state;
            if changed {
                tracing::info!(from = ?*current, to = ?state, "device state");
                *current = state;
            }
            changed
        });
    }

    pub fn current(&self) -> DeviceState {
        *self.tx.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<DeviceState> {
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
        assert_eq!(*rx.borrow_and_update(), DeviceState::Offline);
        bus.set(DeviceState::Offline);
        assert!(!rx.has_changed().expect("sender alive"), "setting the same state is not a change");
    }
}
