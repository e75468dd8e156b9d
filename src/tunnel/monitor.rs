//! The connectivity monitor: the box is online (`Ready`) when Twilio can reach it (its tunnel is up,
//! or the user's own URL is configured) and it can reach Twilio's API (a cheap probe). Otherwise it
//! is `Offline`: local features keep working, call-outs are queued.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::TunnelProvider;
use crate::events::{DeviceState, Snapshot, StateBus};
use crate::twilio::rest::RestClient;

/// How often to probe while offline, whatever the configured interval.
const OFFLINE_PROBE: Duration = Duration::from_secs(5);

/// Whether Twilio can reach the box, given the provider and the bus's tunnel state.
pub fn reachable_from_twilio(provider: TunnelProvider, snapshot: &Snapshot) -> bool {
    match provider {
        TunnelProvider::None => false,
        TunnelProvider::External => true,
        TunnelProvider::Ngrok => snapshot.network.public_url.is_some(),
    }
}

/// Runs until `shutdown`. Without credentials the API cannot be probed and only the tunnel counts.
pub async fn run(
    rest: Option<RestClient>,
    provider: TunnelProvider,
    bus: StateBus,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut watch = bus.watch();
    let mut last_probe_ok: Option<bool> = None;
    loop {
        let api = match &rest {
            Some(rest) => match rest.probe().await {
                Ok(_) => true,
                Err(e) => {
                    if last_probe_ok != Some(false) {
                        warn!("Twilio's API is unreachable: {e}");
                    }
                    false
                }
            },
            None => true,
        };
        if api && last_probe_ok == Some(false) {
            info!("Twilio's API answers again");
        }
        last_probe_ok = Some(api);
        bus.update(|s| s.network.api_reachable = api && rest.is_some());
        let online = api && reachable_from_twilio(provider, &watch.borrow_and_update());
        if bus.current() != DeviceState::Stopping {
            bus.set(if online { DeviceState::Ready } else { DeviceState::Offline });
        }
        let pause = if online { interval } else { interval.min(OFFLINE_PROBE) };
        // Re-decide at once when the tunnel changes; otherwise probe again after `pause`.
        let tunnel = watch.borrow().network.public_url.clone();
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            changed = watch.wait_for(|s| s.network.public_url != tunnel) => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}
