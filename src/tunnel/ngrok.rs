//! The `ngrok` provider: the ngrok agent SDK inside the binary (no `ngrok` process). It opens an
//! HTTPS endpoint (on the reserved `tunnel.domain` if set) whose connections the box's own HTTP stack
//! serves. The SDK re-establishes a dropped session by itself; its connector reports that as
//! [`Signal::Reconnecting`] / [`Signal::Reconnected`], and a tunnel that ends is reopened by
//! [`super::supervise`].

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use ngrok::prelude::*;

use super::{Dialer, Incoming, Io, Opened, Signal};
use crate::config::{Secret, TunnelConfig};

/// Opens ngrok tunnels. `Debug` never shows the authtoken.
#[derive(Debug, Clone)]
pub struct NgrokDialer {
    authtoken: Secret,
    domain: Option<String>,
}

impl NgrokDialer {
    pub fn new(config: &TunnelConfig) -> Self {
        let domain = config.domain.trim();
        Self {
            authtoken: config.authtoken.clone(),
            domain: (!domain.is_empty())
                .then(|| domain.trim_start_matches("https://").trim_end_matches('/').to_owned()),
        }
    }

    /// The reserved domain the endpoint asks for, if any.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }
}

/// The endpoint URL ngrok reports, as the public base URL: it must be `https` with a host.
pub fn public_url(reported: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(reported).map_err(|e| format!("ngrok reported the URL {reported:?}: {e}"))?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(format!("ngrok reported {reported:?}: expected an https:// URL Twilio can reach"));
    }
    Ok(url)
}

impl Dialer for NgrokDialer {
    fn name(&self) -> &'static str {
        "ngrok"
    }

    fn open(&self) -> BoxFuture<'static, Result<Opened, String>> {
        let (token, domain) = (self.authtoken.clone(), self.domain.clone());
        Box::pin(async move {
            // The SDK builds its TLS configuration with rustls' process-wide provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let (signal_tx, signals) = tokio::sync::mpsc::unbounded_channel();
            let session = ngrok::Session::builder()
                .authtoken(token.expose())
                .connector(move |host, port, tls, err: Option<ngrok::tunnel::AcceptError>| {
                    let signal_tx = signal_tx.clone();
                    async move {
                        let reconnecting = err.is_some();
                        if let Some(e) = &err {
                            let _ = signal_tx.send(Signal::Reconnecting(e.to_string()));
                        }
                        let connected = ngrok::session::default_connect(host, port, tls, err).await;
                        if reconnecting && connected.is_ok() {
                            let _ = signal_tx.send(Signal::Reconnected);
                        }
                        connected
                    }
                })
                .connect()
                .await
                .map_err(|e| format!("cannot start the ngrok session: {e}"))?;
            let mut endpoint = session.http_endpoint();
            if let Some(domain) = &domain {
                endpoint.domain(domain.as_str());
            }
            let tunnel = endpoint.listen().await.map_err(|e| format!("ngrok refused the endpoint: {e}"))?;
            let url = public_url(tunnel.url())?;
            // The session lives as long as the stream of connections does.
            let connections = futures_util::stream::unfold((session, tunnel), |(session, mut tunnel)| async move {
                let next = tunnel.next().await?;
                let item = next
                    .map(|conn| {
                        let peer = conn.remote_addr().to_string();
                        (Box::new(conn) as Box<dyn Io>, peer) as Incoming
                    })
                    .map_err(|e| e.to_string());
                Some((item, (session, tunnel)))
            })
            .boxed();
            Ok(Opened { url, connections, signals })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_dialer_takes_its_settings_from_the_tunnel_section() {
        let mut tunnel = Config::defaults().tunnel;
        tunnel.authtoken = Secret::new("2abcSECRETngroktoken");
        tunnel.domain = " https://kitchen-box.ngrok.app/ ".into();
        let dialer = NgrokDialer::new(&tunnel);
        assert_eq!(dialer.domain(), Some("kitchen-box.ngrok.app"));
        assert!(!format!("{dialer:?}").contains("SECRET"), "{dialer:?}");
        tunnel.domain = String::new();
        assert_eq!(NgrokDialer::new(&tunnel).domain(), None, "no domain: ngrok assigns one");
    }

    #[test]
    fn only_an_https_url_becomes_the_public_base() {
        let url = public_url("https://1a2b-203-0-113-5.ngrok-free.app").expect("https");
        assert_eq!(url.host_str(), Some("1a2b-203-0-113-5.ngrok-free.app"));
        let e = public_url("tcp://0.tcp.ngrok.io:12345").expect_err("tcp");
        assert!(e.contains("expected an https:// URL"), "{e}");
        assert!(public_url("not a url").is_err());
    }
}
