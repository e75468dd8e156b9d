//! The page: one HTML document, its script, style and icon, embedded in the binary (no CDN: the
//! box works without the internet). Served gzip-compressed to browsers that take it (compressed
//! once, at the first request), with a strict Content-Security-Policy and an ETag.

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

/// An asset as sent: plain and gzipped, each with its ETag.
struct Prepared {
    plain_tag: String,
    gzip: Vec<u8>,
    gzip_tag: String,
}

fn prepared(asset: &Asset) -> &'static Prepared {
    static PREPARED: OnceLock<Vec<Prepared>> = OnceLock::new();
    let all = PREPARED.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let tag = &hex(&Sha256::digest(a.body.as_bytes()))[..16];
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                std::io::Write::write_all(&mut gz, a.body.as_bytes()).expect("compressing into memory");
                Prepared {
                    plain_tag: format!("\"{tag}\""),
                    gzip: gz.finish().expect("compressing into memory"),
                    gzip_tag: format!("\"{tag}-gz\""),
                }
            })
            .collect()
    });
    &all[ASSETS.iter().position(|a| a.path == asset.path).expect("an asset of the table")]
}

/// The bytes a first page load fetches (the document, script, style and icon): plain, gzipped.
pub fn weight() -> (usize, usize) {
    ASSETS.iter().fold((0, 0), |(plain, gz), a| (plain + a.body.len(), gz + prepared(a).gzip.len()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let prepared = prepared(asset);
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().split(';').next() == Some("gzip")));
    let tag = if gzip { &prepared.gzip_tag } else { &prepared.plain_tag };
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == tag);
    let mut response = match (fresh, gzip) {
        (true, _) => StatusCode::NOT_MODIFIED.into_response(),
        (false, true) => prepared.gzip.as_slice().into_response(),
        (false, false) => asset.body.into_response(),
    };
    let h = response.headers_mut();
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.kind));
    h.insert(header::ETAG, HeaderValue::from_str(tag).expect("hex is a valid header"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_go_gzipped_to_browsers_that_take_it_and_round_trip() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, deflate, br"));
        let script = ASSETS.iter().find(|a| a.path == "/app.js").expect("script");
        let response = serve(script, &headers);
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(prepared(script).gzip.as_slice()), &mut plain)
            .expect("gunzip");
        assert_eq!(plain, script.body);
        let (all, gz) = weight();
        assert!(gz * 2 < all, "{gz} of {all} bytes");
        headers.insert(header::IF_NONE_MATCH, response.headers()[header::ETAG].clone());
        assert_eq!(serve(script, &headers).status(), StatusCode::NOT_MODIFIED);
        assert!(serve(script, &HeaderMap::new()).headers().get(header::CONTENT_ENCODING).is_none());
    }
}
