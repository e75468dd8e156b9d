//! WAV files (greetings, recordings to transcribe): parsed or refused; what parses round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use voca::audio::wav;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = wav::parse(data) {
        if parsed.rate > 0 && parsed.samples.len() < 1 << 20 {
            let again = wav::parse(&wav::encode(parsed.rate, &parsed.samples)).expect("what the box writes, it reads");
            assert_eq!(again.samples, parsed.samples);
        }
    }
});
