//! Reaching Twilio from behind home NAT. A [`Dialer`] opens an outbound tunnel and yields the public
//! URL plus the connections that arrive through it; [`supervise`] keeps one open (reconnecting with
//! jittered backoff), serves its connections with the same HTTP/WebSocket stack as the LAN listener,
//! and publishes tunnel up/down and the current URL on the state bus. [`keep_number_pointed`] points
//! the box's Twilio number at each new URL; [`monitor`] says whether the phone network is reachable.
//!
//! Providers (`[tunnel] provider`): `ngrok` (the agent built into the binary, [`ngrok::NgrokDialer`]),
//! `external` (the user's own URL: nothing to dial) and `none` (LAN only).

pub mod monitor;
pub mod ngrok;

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::E164;
use crate::events::StateBus;
use crate::net::{Backoff, Server};
use crate::twilio::number::{self, Setup};
use crate::twilio::rest::RestClient;
use crate::twilio::PublicUrl;

/// A byte stream that arrived through the tunnel.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// One connection from the tunnel and who it came from (for logs).
pub type Incoming = (Box<dyn Io>, String);

/// What a tunnel reports while it is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The provider lost its connection and is re-establishing it (the URL stays reserved).
    Reconnecting(String),
    /// It is back.
    Reconnected,
}

/// An open tunnel.
pub struct Opened {
    /// Where Twilio reaches the box now.
    pub url: url::Url,
    /// Connections arriving through the tunnel; the tunnel is gone when this ends.
    pub connections: BoxStream<'static, Result<Incoming, String>>,
    /// Provider-side reconnects inside one tunnel.
    pub signals: tokio::sync::mpsc::UnboundedReceiver<Signal>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

/// Opens tunnels: the ngrok agent, or a fake in tests.
pub trait Dialer: Send + Sync + 'static {
    /// A name for logs.
    fn name(&self) -> &'static str;
    /// Opens a tunnel; the error says why not (shown in logs and on the status page).
    fn open(&self) -> BoxFuture<'static, Result<Opened, String>>;
}

/// Keeps a tunnel open until `shutdown`: serves its connections with `server`, sets `public` to its
/// URL, and reports up/down on `bus`.
pub async fn supervise(
    dialer: std::sync::Arc<dyn Dialer>,
    server: Server,
    public: PublicUrl,
    bus: StateBus,
    mut backoff: Backoff,
    shutdown: CancellationToken,
) {
    let down = |reason: String| {
        bus.update(|s| {
            s.network.public_url = None;
            s.network.tunnel_down = Some(reason.clone());
        })
    };
    loop {
        let opened = tokio::select! {
            opened = dialer.open() => opened,
            () = shutdown.cancelled() => return,
        };
        let reason = match opened {
            Ok(Opened { url, mut connections, mut signals }) => {
                info!(provider = dialer.name(), %url, "tunnel up");
                backoff.reset();
                public.set(url.clone());
                let up = || {
                    bus.update(|s| {
                        s.network.public_url = Some(url.to_string());
                        s.network.tunnel_down = None;
                    })
                };
                up();
                loop {
                    tokio::select! {
                        next = connections.next() => match next {
                            Some(Ok((io, peer))) => server.serve_io(io, peer),
                            Some(Err(e)) => warn!(provider = dialer.name(), "tunnel connection failed: {e}"),
                            None => break "the tunnel closed".to_owned(),
                        },
                        Some(signal) = signals.recv() => match signal {
                            Signal::Reconnecting(why) => {
                                warn!(provider = dialer.name(), "tunnel lost ({why}): reconnecting");
                                crate::telemetry::metrics::TUNNEL_RECONNECTS.inc();
                                down(why);
                            }
                            Signal::Reconnected => {
                                info!(provider = dialer.name(), "tunnel back");
                                up();
                            }
                        },
                        () = shutdown.cancelled() => return,
                    }
                }
            }
            Err(e) => e,
        };
        let pause = backoff.pause();
        warn!(provider = dialer.name(), "tunnel down: {reason}; retrying in {} ms", pause.as_millis());
        down(reason);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Points the box's number at each new public URL the bus reports (once per URL; a failed attempt is
/// retried on the next probe interval).
pub async fn keep_number_pointed(
    rest: RestClient,
    number: E164,
    fallback: Option<url::Url>,
    force: bool,
    bus: StateBus,
    retry: Duration,
    shutdown: CancellationToken,
) {
    let mut watch = bus.watch();
    let mut pointed_at: Option<String> = None;
    loop {
        let current = watch.borrow_and_update().network.public_url.clone();
        if let Some(url) = current.filter(|u| pointed_at.as_ref() != Some(u)) {
            match url::Url::parse(&url) {
                Ok(base) => match number::point_at_box(&rest, &number, &base, fallback.as_ref(), force).await {
                    Ok(Setup::AlreadySet) => {
                        info!("{number} already sends its calls to {base}");
                        pointed_at = Some(url);
                    }
                    Ok(Setup::Updated { .. }) => {
                        info!("{number} now sends its calls to {base}");
                        pointed_at = Some(url);
                    }
                    Err(e) => error!("number set-up: {e}"),
                },
                Err(e) => error!("the tunnel's URL {url:?} is not a URL: {e}"),
            }
        }
        let retry_later = pointed_at.is_none() && watch.borrow().network.public_url.is_some();
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(retry), if retry_later => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tunnel provider that needs no network: each `open` takes the next scripted outcome; an open
    /// tunnel's connections are fed by the test.
    struct FakeDialer {
        script: Mutex<Vec<Result<(&'static str, FakeTunnel), String>>>,
    }

    struct FakeTunnel {
        connections: tokio::sync::mpsc::UnboundedReceiver<Incoming>,
        signals: tokio::sync::mpsc::UnboundedReceiver<Signal>,
    }

    impl Dialer for FakeDialer {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn open(&self) -> BoxFuture<'static, Result<Opened, String>> {
            let next = {
                let mut script = self.script.lock().expect("script");
                (!script.is_empty()).then(|| script.remove(0))
            };
            Box::pin(async move {
                match next {
                    Some(Ok((url, tunnel))) => Ok(Opened {
                        url: url.parse().expect("url"),
                        connections: tokio_stream_from(tunnel.connections),
                        signals: tunnel.signals,
                    }),
                    Some(Err(e)) => Err(e),
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Incoming>,
    ) -> BoxStream<'static, Result<Incoming, String>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok))).boxed()
    }

    fn server(shutdown: &CancellationToken) -> Server {
        let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok from the box" }));
        Server::new(router, shutdown.clone(), tokio_util::task::TaskTracker::new(), Duration::from_secs(5))
    }

    async fn wait_for(bus: &StateBus, what: impl Fn(&crate::events::Snapshot) -> bool) {
        let mut watch = bus.watch();
        tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|s| what(s)))
            .await
            .expect("in time")
            .expect("bus alive");
    }

    #[tokio::test]
    async fn a_tunnel_comes_up_serves_goes_down_and_comes_back_with_a_new_url() {
        let (conn_tx, conn_rx) = tokio::sync::mpsc::unbounded_channel();
        let (signal_tx, signal_rx) = tokio::sync::mpsc::unbounded_channel();
        let (_conn2_tx, conn2_rx) = tokio::sync::mpsc::unbounded_channel();
        let (_signal2_tx, signal2_rx) = tokio::sync::mpsc::unbounded_channel();
        let dialer = Arc::new(FakeDialer {
            script: Mutex::new(vec![
                Err("no route to the tunnel service".into()),
                Ok(("https://first.example.net", FakeTunnel { connections: conn_rx, signals: signal_rx })),
                Ok(("https://second.example.net", FakeTunnel { connections: conn2_rx, signals: signal2_rx })),
            ]),
        });
        let shutdown = CancellationToken::new();
        let bus = StateBus::default();
        let public = PublicUrl::new("http://127.0.0.1:1".parse().expect("url"));
        let task = tokio::spawn(supervise(
            dialer,
            server(&shutdown),
            public.clone(),
            bus.clone(),
            Backoff::new(Duration::from_millis(10), Duration::from_millis(40)),
            shutdown.clone(),
        ));
        wait_for(&bus, |s| s.network.public_url.as_deref() == Some("https://first.example.net/")).await;
        assert_eq!(public.get().as_str(), "https://first.example.net/");

        // A request through the tunnel is answered by the box's own HTTP stack.
        let (mut client, remote) = tokio::io::duplex(4096);
        conn_tx.send((Box::new(remote), "tunnel peer".into())).expect("send");
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: first.example.net\r\nConnection: close\r\n\r\n")
            .await
            .expect("w");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok from the box"), "{answer}");

        signal_tx.send(Signal::Reconnecting("heartbeat timeout".into())).expect("signal");
        wait_for(&bus, |s| s.network.public_url.is_none() && s.network.tunnel_down.is_some()).await;
        signal_tx.send(Signal::Reconnected).expect("signal");
        wait_for(&bus, |s| s.network.public_url.is_some()).await;

        // The tunnel closes: the supervisor reopens one, which has a new URL.
        drop(conn_tx);
        wait_for(&bus, |s| s.network.public_url.as_deref() == Some("https://second.example.net/")).await;
        assert_eq!(public.get().as_str(), "https://second.example.net/");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").expect("no panic");
    }
}
