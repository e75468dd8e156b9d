//! The box's web face on the LAN, and the server loop the tunnel shares:
//! - [`server`]; the HTTP loop (limits, graceful shutdown, the peer of each request);
//! - [`health`]; `/healthz`;
//! - [`auth`]; password, sessions, CSRF, the first set-up with a button press;
//! - [`api`]; the JSON API under `/api/` that the page itself uses;
//! - [`live`]; Server-Sent Events from the state bus and the call log;
//! - [`pages`]; the page and its assets, embedded in the binary;
//! - [`metrics`]; `/metrics` in Prometheus' text format;
//! - [`host`]; only requests for the box's own names (a defence against DNS rebinding).
//!
//! None of it is reachable through the tunnel: `app` gives the tunnel Twilio's routes alone.

pub mod api;
pub mod auth;
pub mod health;
pub mod host;
pub mod live;
pub mod metrics;
pub mod pages;

pub use health::Status;

use axum::Router;

use crate::appliance::Appliance;
use crate::config::settings::Settings;
use crate::store::Store;

/// What the LAN routes work with. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lan {
    pub status: Status,
    pub settings: Settings,
    pub auth: auth::Auth,
    pub store: Store,
    pub appliance: Appliance,
    /// The voicemail folder (a voicemail is served only from here).
    pub voicemail: crate::store::Folder,
    /// Ends the page's event streams when the box stops.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Every LAN route: the page, its API, events, health and metrics, and `device` (the simulated
/// board's buttons, when the box has one), all behind the same Host check; `device` routes that
/// change state also refuse another site's Origin (a page elsewhere cannot press a button).
pub fn router(lan: Lan, device: Option<Router>) -> Router {
    let device = device
        .map_or_else(Router::new, |routes| routes.route_layer(axum::middleware::from_fn(auth::from_this_box_only)));
    Router::new()
        .merge(health::routes(lan.status.clone()))
        .merge(pages::routes())
        .merge(api::routes(lan.clone()))
        .merge(metrics::routes(lan.clone()))
        .merge(device)
        .layer(axum::middleware::from_fn_with_state(lan, host::only_the_box))
}
