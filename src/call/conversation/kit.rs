//! What every assistant call shares: the recognizer pool, the TTS thread, the assistant, the
//! prompts rendered once, the greeting, and how to transfer a caller.

use std::sync::Arc;
use std::time::Duration;

use crate::assistant::llm::Llm;
use crate::assistant::Assistant;
use crate::audio::vad::VadConfig;
use crate::speech::stt::Stt;
use crate::speech::tts::Tts;
use crate::store::Store;

/// Fixed prompts, rendered once at start-up (16 kHz).
#[derive(Debug, Clone)]
pub struct Prompts {
    /// Changes when the greeting text does (from the LAN page): see [`Greeting`].
    pub greeting: Greeting,
    pub one_moment: Arc<Vec<i16>>,
    pub goodbye: Arc<Vec<i16>>,
    pub reprompt: Arc<Vec<i16>>,
    pub voicemail_intro: Arc<Vec<i16>>,
    pub voicemail_saved: Arc<Vec<i16>>,
    pub voicemail_not_saved: Arc<Vec<i16>>,
    pub voicemail_full: Arc<Vec<i16>>,
    pub trouble: Arc<Vec<i16>>,
    pub missed: Arc<Vec<i16>>,
}

impl Prompts {
    pub async fn render(tts: &Tts, assistant: &Assistant) -> Self {
        let l = assistant.language;
        let r = |text: String| async move { Arc::new(tts.prompt(&text).await) };
        Self {
            greeting: Greeting::new(r(assistant.greeting.clone()).await),
            one_moment: r(l.one_moment.into()).await,
            goodbye: r(l.goodbye.into()).await,
            reprompt: r(l.reprompt.into()).await,
            voicemail_intro: r(l.voicemail_intro.into()).await,
            voicemail_saved: r(l.voicemail_saved.into()).await,
            voicemail_not_saved: r(l.voicemail_not_saved.into()).await,
            voicemail_full: r(l.voicemail_full.into()).await,
            trouble: r(l.trouble.into()).await,
            missed: r(l.missed.into()).await,
        }
    }
}

/// The greeting's audio, re-rendered when the settings change it; every call plays the current one.
pub type Greeting = crate::swap::Swap<Arc<Vec<i16>>>;

/// What every assistant call shares.
#[derive(Clone)]
pub struct SpeechKit {
    pub stt: Stt,
    pub tts: Arc<Tts>,
    pub prompts: Prompts,
    pub assistant: Arc<Assistant>,
    pub llm: Option<Llm>,
    pub vad: VadConfig,
    /// At most this much of the caller's speech waits for a recognizer (`speech.backlog`).
    pub backlog: Duration,
    /// The end-of-turn model and when to ask it (its engine says whether it serves).
    pub turns: crate::speech::turn::TurnPolicy,
    pub reprompt_after: Duration,
    pub store: Store,
    pub voicemail: crate::store::Folder,
    pub store_transcripts: bool,
    /// A message is saved, and the call ends, when it is this long (`calls.voicemail_max`).
    pub voicemail_max: Duration,
    /// Start every call in voicemail (`calls.answer = "voicemail"`).
    pub voicemail_only: bool,
    /// Transfers ("call Alice" during a call): the REST client, the box's number and the contacts.
    pub transfer: Option<Transfer>,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub rest: crate::twilio::rest::RestClient,
    pub caller_id: crate::config::E164,
    /// The configuration in effect, for its contacts.
    pub settings: crate::config::settings::Live,
}

impl std::fmt::Debug for SpeechKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeechKit").field("stt", &self.stt).finish_non_exhaustive()
    }
}
