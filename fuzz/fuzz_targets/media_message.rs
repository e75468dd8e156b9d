//! Media Streams messages as they arrive on the WebSocket: any text decodes or is refused.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = serde_json::from_str::<voca::twilio::media::Inbound<'_>>(text);
    }
});
