//! Webhook forms and their signature: whatever the token, URL and parameters, what `sign` makes
//! `validate` accepts, and a changed signature is refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use voca::twilio::signature::{sign, validate};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let token = parts.next().unwrap_or_default();
    let url = parts.next().unwrap_or_default();
    let params: Vec<(String, String)> = parts
        .map(|p| p.split_once('=').map_or((p.to_owned(), String::new()), |(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let signature = sign(token, url, &params);
    assert!(validate(token, url, &params, &signature));
    let mut forged = signature.clone();
    forged.push('A');
    assert!(!validate(token, url, &params, &forged));
    let _ = validate(token, url, &params, &text);
});
