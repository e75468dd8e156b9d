//! The page answers only to the box's own names. A web page elsewhere could point its own name at
//! the box's LAN address (DNS rebinding) and script requests to it from a browser at home; such
//! requests carry that page's name in `Host`, and get 421 here. The box's names: any IP address,
//! `localhost`, `<hostname>`, `<hostname>.local`, and `web.allowed_hosts`.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Lan;

/// Whether `host` (a `Host` header: a name or an address, perhaps with a port) is one of the box's.
pub fn is_the_box(host: &str, hostname: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => return rest.split(']').next().is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
        }
    };
    let name = name.trim_end_matches('.');
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b.trim_end_matches('.'));
    same(name, "localhost")
        || same(name, hostname)
        || name.len() > 6 && name.is_char_boundary(name.len() - 6) && {
            let (stem, suffix) = name.split_at(name.len() - 6);
            suffix.eq_ignore_ascii_case(".local") && same(stem, hostname)
        }
        || allowed.iter().any(|a| same(name, a))
}

/// Middleware for every LAN route: 421 for requests to other names. A request without `Host` (not a
/// browser) passes.
pub async fn only_the_box(State(lan): State<Lan>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).map(|h| h.to_str().unwrap_or("\u{fffd}").to_owned());
    let host = host.or_else(|| request.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else { return next.run(request).await };
    let hostname = crate::config::hostname();
    let allowed = lan.settings.live().get().web.allowed_hosts.clone();
    if is_the_box(&host, &hostname, &allowed) {
        return next.run(request).await;
    }
    let shown: String = host.chars().take(100).collect();
    (
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "this box answers to its IP address, {hostname}.local, {hostname} and localhost, not {shown:?}: \
             to use that name, add it to web.allowed_hosts (VOCA_WEB_ALLOWED_HOSTS)\n"
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_box_s_names_and_addresses_pass_and_others_do_not() {
        let extra = vec!["voca.home.arpa".to_owned()];
        for host in [
            "192.168.1.20",
            "192.168.1.20:8080",
            "[fe80::1]:8080",
            "[::1]",
            "localhost:8080",
            "voca-kitchen",
            "VOCA-Kitchen.local",
            "voca-kitchen.local.:80",
            "voca.home.arpa",
        ] {
            assert!(is_the_box(host, "voca-kitchen", &extra), "{host}");
        }
        for host in
            ["evil.example", "voca-kitchen.evil.example", "evil.example:8080", "[not-an-ip]", "local", "x.local"]
        {
            assert!(!is_the_box(host, "voca-kitchen", &extra), "{host}");
        }
    }
}
