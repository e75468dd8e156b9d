//! What the benchmarks share.

/// espeak-ng saying `text` in Korean at 175 words a minute, as 8 kHz audio (what a caller sends).
pub fn say(text: &str) -> Vec<i16> {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("say.wav");
    let ok = std::process::Command::new("espeak-ng")
        .args(["-v", "ko", "-s", "175", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng")
        .success();
    assert!(ok, "espeak-ng failed");
    let speech = voca::audio::wav::read(&wav).expect("wav");
    voca::audio::resample::convert(&speech.samples, speech.rate, 8000)
}
