//! The box's way to Twilio: the tunnel (ngrok or an external URL), the number pointed at it, the
//! connectivity monitor.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, TunnelProvider};
use crate::events::{DeviceState, StateBus};
use crate::net;
use crate::twilio::rest::RestClient;

/// The tunnel (if any), the number's webhooks and the connectivity monitor.
pub(super) fn start_network(
    config: &Config,
    state: &StateBus,
    rest: Option<RestClient>,
    public: &crate::twilio::PublicUrl,
    server: net::Server,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    let provider = config.tunnel.provider;
    match provider {
        TunnelProvider::None => state.set(DeviceState::Offline),
        TunnelProvider::External => {
            let url = public.get().to_string();
            state.update(|s| s.network.public_url = Some(url));
        }
        TunnelProvider::Ngrok => {
            let dialer = Arc::new(crate::tunnel::ngrok::NgrokDialer::new(&config.tunnel));
            let backoff = net::Backoff::new(Duration::from_secs(1), config.tunnel.reconnect_max.into());
            tracker.spawn(crate::tunnel::supervise(
                dialer,
                server,
                public.clone(),
                state.clone(),
                backoff,
                shutdown.clone(),
            ));
        }
    }
    let interval: Duration = config.tunnel.probe_interval.into();
    if let (true, Some(rest), Some(number)) =
        (provider != TunnelProvider::None, rest.clone(), config.twilio.phone_number.clone())
    {
        tracker.spawn(crate::tunnel::keep_number_pointed(
            rest,
            number,
            config.twilio.fallback_url.clone(),
            config.twilio.force_number_setup,
            state.clone(),
            interval,
            shutdown.clone(),
        ));
    }
    tracker.spawn(crate::tunnel::monitor::run(rest, provider, state.clone(), interval, shutdown.clone()));
}
