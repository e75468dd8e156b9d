//! Answers from Twilio's REST API (or whatever answers in its place): decoded or refused.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = voca::twilio::rest::decode_answers(data);
});
