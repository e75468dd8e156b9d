//! What answers each call: call-outs play on the box (intercom); incoming calls as `calls.answer`
//! says.

use std::sync::Arc;

use crate::appliance::intercom::{Fallback, IntercomCall, RingCall};
use crate::appliance::Appliance;
use crate::call::conversation::{AssistantCall, SpeechKit};
use crate::call::responder::{Purpose, Responder, ResponderFactory, ToneResponder};
use crate::config::settings::Live;
use crate::config::{AnswerMode, Unanswered};
use crate::twilio::media::CallSid;

/// What answers each call: call-outs play on the box (intercom); incoming calls as `calls.answer`
/// says (ring the box, intercom, assistant, voicemail, or the tone line test), straight to voicemail
/// in do-not-disturb. Read from the configuration in effect when each call arrives.
pub(super) fn responder_factory(
    settings: Live,
    kit: Option<SpeechKit>,
    appliance: Appliance,
    greeting: Option<Arc<Vec<i16>>>,
) -> ResponderFactory {
    Arc::new(move |sid: &CallSid, purpose: Purpose| -> Box<dyn Responder> {
        let calls = settings.get().calls.clone();
        let (kit, greeting) = (kit.clone(), greeting.clone());
        let answering = move |sid: &CallSid, voicemail: bool| -> Box<dyn Responder> {
            match kit {
                Some(mut kit) => {
                    kit.voicemail_only |= voicemail;
                    Box::new(AssistantCall::new(kit, sid))
                }
                None => Box::new(ToneResponder::new(greeting)),
            }
        };
        let incoming = if calls.do_not_disturb { AnswerMode::Voicemail } else { calls.answer };
        match (purpose, incoming) {
            (Purpose::CallOut(_), _) | (Purpose::Incoming, AnswerMode::Intercom) => {
                Box::new(IntercomCall::new(appliance.clone(), sid, purpose))
            }
            (Purpose::Incoming, AnswerMode::Ring) => {
                let fallback_sid = sid.clone();
                let to_voicemail = calls.unanswered == Unanswered::Voicemail;
                let fallback: Fallback = Box::new(move || answering(&fallback_sid, to_voicemail));
                Box::new(RingCall::new(appliance.clone(), sid, calls.ring_timeout.into(), fallback))
            }
            (Purpose::Incoming, AnswerMode::Voicemail) => answering(sid, true),
            (Purpose::Incoming, AnswerMode::Tones | AnswerMode::Assistant) => answering(sid, false),
        }
    })
}
