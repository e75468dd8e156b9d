//! The speech a running box shares between calls and the appliance: the recognizer pool, the TTS
//! thread, the assistant, the rendered prompts and greeting.

use std::sync::Arc;

use tracing::{error, info};

use crate::assistant::llm::Llm;
use crate::assistant::Assistant;
use crate::audio::vad::VadConfig;
use crate::audio::wav;
use crate::call::conversation::{Prompts, SpeechKit, Transfer};
use crate::config::settings::Live;
use crate::config::{AnswerMode, Config, EndOfTurn};
use crate::speech::stt::{Stt, SttOptions};
use crate::speech::tts::{Tts, TtsOptions};
use crate::speech::turn::{self, TurnPolicy, Turns};
use crate::store::{Folder, Store};
use crate::twilio::rest::RestClient;
use anyhow::Context;

/// Loads the greeting WAV (`calls.greeting_wav`, any rate) as 16 kHz samples.
pub(super) fn greeting(config: &Config) -> anyhow::Result<Option<Arc<Vec<i16>>>> {
    let Some(path) = &config.calls.greeting_wav else { return Ok(None) };
    let samples = wav::read_at(path, 16000).with_context(|| "`calls.greeting_wav`".to_string())?;
    Ok(Some(Arc::new(samples)))
}

/// The speech engines for calls and the box's speaker: TTS starts here, the model loads in the
/// background while the box already answers. `None` when calls get the tone line test instead.
/// The end-of-turn model as the configuration asks for it (its engine loads it on its own thread;
/// a missing or broken model leaves turns to the hangover, and says why).
fn end_of_turn(config: &Config) -> TurnPolicy {
    let turns = match config.speech.end_of_turn {
        EndOfTurn::Model => Turns::start(
            &turn::install::model_path(&config.speech.models_dir),
            &crate::speech::onnx::find_runtime(config.speech.onnxruntime.as_deref()),
            Some(config.device.data_dir.join("turn-probe.ok")),
        ),
        EndOfTurn::Hangover => Turns::off("speech.end_of_turn = \"hangover\""),
    };
    TurnPolicy { turns, pause: config.speech.turn_pause.into(), max_wait: config.speech.turn_max_wait.into() }
}

pub(super) async fn speech_kit(
    config: &Config,
    settings: &Live,
    store: &Store,
    voicemail: &Folder,
    rest: Option<RestClient>,
) -> Option<SpeechKit> {
    if config.calls.answer == AnswerMode::Tones {
        return None;
    }
    let options = TtsOptions::new(config);
    let tts = match tokio::task::spawn_blocking(move || Tts::start(&options)).await {
        Ok(Ok(tts)) => Arc::new(tts),
        Ok(Err(e)) => {
            error!("{e}: calls get the tone line test instead of the assistant");
            return None;
        }
        Err(e) => {
            error!("the TTS start-up crashed ({e}): calls get the tone line test");
            return None;
        }
    };
    let assistant = Arc::new(Assistant::new(config));
    let prompts = Prompts::render(&tts, &assistant).await;
    let warm = config.speech.warm_recognizers.min(config.calls.max_concurrent) as usize;
    let stt = Stt::start(SttOptions::new(config, assistant.grammar(), warm, prompts.greeting.get().to_vec()));
    let turns = end_of_turn(config);
    let transfer = match (rest, &config.twilio.phone_number) {
        (Some(rest), Some(number)) => Some(Transfer { rest, caller_id: number.clone(), settings: settings.clone() }),
        _ => None,
    };
    let kit = SpeechKit {
        stt,
        tts,
        prompts,
        assistant,
        llm: Llm::new(&config.llm),
        vad: VadConfig {
            hangover: config.speech.endpoint_hangover.into(),
            min_speech: config.speech.min_speech.into(),
            ..VadConfig::default()
        },
        backlog: config.speech.backlog.into(),
        turns,
        reprompt_after: config.speech.reprompt_after.into(),
        store: store.clone(),
        voicemail: voicemail.clone(),
        store_transcripts: config.assistant.store_transcripts,
        voicemail_max: config.calls.voicemail_max.into(),
        // Decided per call, from the settings in effect (see `responder_factory`).
        voicemail_only: false,
        transfer,
    };
    info!(tts = kit.tts.voice.engine, voice = %kit.tts.voice.voice, language = kit.assistant.language.code, llm = kit.llm.is_some(), "assistant ready; speech model loading");
    Some(kit)
}
