//! The page: one HTML document, its script, style and icon, embedded in the binary (no CDN: the
//! box works without the internet). Served with a strict Content-Security-Policy and an ETag.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

struct Asset {
    path: &'static str,
    kind: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset { path: "/", kind: "text/html; charset=utf-8", body: include_str!("assets/index.html") },
    Asset { path: "/app.js", kind: "text/javascript; charset=utf-8", body: include_str!("assets/app.js") },
    Asset { path: "/app.css", kind: "text/css; charset=utf-8", body: include_str!("assets/app.css") },
    Asset { path: "/icon.svg", kind: "image/svg+xml", body: include_str!("assets/icon.svg") },
];

/// Scripts, styles, media and requests from the box alone; no frames, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// The bytes every page load fetches (the document, script, style and icon), for the README.
pub fn weight() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

fn etag(asset: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS.iter().map(|a| format!("\"{}\"", &hex(&Sha256::digest(a.body.as_bytes()))[..16])).collect()
    });
    let i = ASSETS.iter().position(|a| a.path == asset.path).expect("an asset of the table");
    &tags[i]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let tag = etag(asset);
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == tag);
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.kind));
    h.insert(header::ETAG, HeaderValue::from_static(tag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

pub fn routes() -> Router {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move |headers: HeaderMap| async move { serve(asset, &headers) }))
    })
}
