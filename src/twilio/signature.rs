//! `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL + sorted parameters)), compared in
//! constant time, accepting the URL with or without its default port (Twilio signs either).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

type HmacSha1 = Hmac<Sha1>;

/// The string Twilio signs: the URL, then each parameter name (sorted bytewise) followed by each of
/// its distinct values (sorted), with no separators.
fn signed_data(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut data = url.as_bytes().to_vec();
    for (k, v) in pairs {
        data.extend_from_slice(k.as_bytes());
        data.extend_from_slice(v.as_bytes());
    }
    data
}

fn mac(token: &str) -> HmacSha1 {
    HmacSha1::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length")
}

/// The signature Twilio would send for a form POST to `url` with `params`.
pub fn sign(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut m = mac(token);
    m.update(&signed_data(url, params));
    STANDARD.encode(m.finalize().into_bytes())
}

/// Checks `signature` for a form request (or a GET, with `params` empty and the query in `url`).
pub fn validate(token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(given) = STANDARD.decode(signature.trim()) else { return false };
    url_variants(url).iter().any(|candidate| {
        let mut m = mac(token);
        m.update(&signed_data(candidate, params));
        // verify_slice compares in constant time.
        m.verify_slice(&given).is_ok()
    })
}

/// Checks a JSON-body request: the URL (which carries `bodySHA256`) is signed with no parameters,
/// and the body must hash to that value.
pub fn validate_json(token: &str, url: &str, body: &[u8], signature: &str) -> bool {
    let Some(expected) = url::Url::parse(url)
        .ok()
        .and_then(|u| u.query_pairs().find(|(k, _)| k == "bodySHA256").map(|(_, v)| v.into_owned()))
    else {
        return false;
    };
    let actual: String = Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect();
    validate(token, url, &[], signature) && actual.eq_ignore_ascii_case(&expected)
}

/// The URL as given, and with its default port added or removed.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some(scheme_end) = url.find("://") else { return out };
    let scheme = &url[..scheme_end];
    let default_port = match scheme {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return out,
    };
    let rest = &url[scheme_end + 3..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_len);
    // Leave IPv6 literals' colons alone: a port comes after the closing bracket.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    match authority[host_end..].rfind(':').map(|i| i + host_end) {
        Some(colon) if &authority[colon + 1..] == default_port => {
            out.push(format!("{scheme}://{}{tail}", &authority[..colon]));
        }
        Some(_) => {}
        None => out.push(format!("{scheme}://{authority}:{default_port}{tail}")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "12345";
    const U: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    fn standard() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    #[test]
    fn twilio_documented_vectors() {
        assert_eq!(sign(TOKEN, U, &standard()), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(
            sign(TOKEN, "https://mycompany.com:443/myapp.php?foo=1&bar=2", &standard()),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        assert_eq!(
            sign(TOKEN, "http://mycompany.com:80/myapp.php?foo=1&bar=2", &standard()),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        );
        assert_eq!(
            sign(TOKEN, "http://mycompany.com:1234/myapp.php?foo=1&bar=2", &standard()),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        );
        let repeated =
            p(&[("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")]);
        assert_eq!(sign(TOKEN, U, &repeated), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
        let other = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(sign(TOKEN, "https://example.com/myapp.php?foo=1&bar=2", &other), "L/OH5YylLD5NRKLltdqwSvS0BnU=");
    }

    #[test]
    fn validation_accepts_either_port_form_and_nothing_else() {
        assert!(validate(TOKEN, U, &standard(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(validate(TOKEN, U, &standard(), "kvajT1Ptam85bY51eRf/AJRuM3w="), "signed with :443");
        assert!(validate(
            TOKEN,
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &standard(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(validate(
            TOKEN,
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &standard(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        assert!(
            !validate(TOKEN, U, &standard(), "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
            "a non-default port is not interchangeable"
        );
        assert!(!validate("54321", U, &standard(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="), "wrong token");
        let mut tampered = standard();
        tampered[3].1 = "+14158675310".into();
        assert!(!validate(TOKEN, U, &tampered, "RSOYDt4T1cUTdK1PDd93/VVr8B8="), "tampered parameter");
        assert!(!validate(TOKEN, U, &standard(), "not base64!"));
        assert!(!validate(TOKEN, U, &standard(), ""));
    }

    #[test]
    fn json_bodies_are_checked_by_their_hash() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let body = br#"{"property": "value", "boolean": true}"#;
        assert_eq!(sign(TOKEN, url, &[]), "a9nBmqA0ju/hNViExpshrM61xv4=");
        assert!(validate_json(TOKEN, url, body, "a9nBmqA0ju/hNViExpshrM61xv4="));
        assert!(!validate_json(TOKEN, url, br#"{"property": "other"}"#, "a9nBmqA0ju/hNViExpshrM61xv4="));
        assert!(!validate_json(TOKEN, U, body, &sign(TOKEN, U, &[])), "no bodySHA256 in the URL");
    }

    #[test]
    fn port_variants_leave_ipv6_literals_alone() {
        assert_eq!(
            url_variants("wss://[::1]/twilio/media"),
            ["wss://[::1]/twilio/media", "wss://[::1]:443/twilio/media"]
        );
        assert_eq!(url_variants("http://[::1]:80/x"), ["http://[::1]:80/x", "http://[::1]/x"]);
        assert_eq!(url_variants("http://127.0.0.1:8080/x"), ["http://127.0.0.1:8080/x"]);
    }
}
