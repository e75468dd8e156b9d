//! `voca transcribe FILE`: a recording (any PCM WAV) through the box's own listening loop, at full
//! speed, one line per utterance.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::assistant::Assistant;
use crate::audio::vad::VadConfig;
use crate::config::Config;
use crate::speech::stt::{ModelState, Stt, SttOptions};
use crate::speech::tts::{Tts, TtsOptions};

/// One transcript per utterance of `audio` (16 kHz), recognised as a call would be: the same
/// recognition mode, a recognizer warmed with the same audio as the box's (its greeting), the same
/// endpointing.
pub async fn utterances(config: &Config, audio: Vec<i16>) -> anyhow::Result<Vec<String>> {
    let options = TtsOptions::new(config);
    let tts = tokio::task::spawn_blocking(move || Tts::start(&options)).await??;
    let assistant = Assistant::new(config);
    let warm_up = tts.prompt(&assistant.greeting).await;
    // A missing model is an error here, not a download (`voca models fetch` is the command for that).
    let stt = Stt::start(SttOptions { download: None, ..SttOptions::new(config, assistant.grammar(), 1, warm_up) });
    if let ModelState::Failed(why) = stt.ready().await {
        anyhow::bail!("{why}");
    }
    let vad = VadConfig {
        hangover: config.speech.endpoint_hangover.into(),
        min_speech: config.speech.min_speech.into(),
        ..VadConfig::default()
    };
    // Feeding and waiting for results block: off the runtime. The recognizer thread is joined
    // (with `stt`) before the process tears libvosk down.
    let texts = tokio::task::spawn_blocking(move || crate::speech::listen::transcribe(&stt, vad, &audio))
        .await
        .context("the transcription crashed")??;
    Ok(texts)
}

pub async fn run(config: &Config, path: &Path) -> anyhow::Result<ExitCode> {
    let file = path.to_path_buf();
    let audio = tokio::task::spawn_blocking(move || crate::audio::wav::read_at(&file, 16000)).await??;
    for text in utterances(config, audio).await? {
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}
