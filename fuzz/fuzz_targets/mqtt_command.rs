//! MQTT commands as they land on the box's command topics: parsed, or refused saying what was
//! expected.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let topic = String::from_utf8_lossy(&data[..split]);
    let payload = data.get(split + 1..).unwrap_or_default();
    if let Err(e) = voca::home::command::parse(&topic, payload) {
        assert!(!e.is_empty());
    }
});
