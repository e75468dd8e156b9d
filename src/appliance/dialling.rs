//! Calling someone from the box: a contact's button, the emergency chain (each emergency contact
//! in turn until one answers), answering and hanging up, and what the LEDs show meanwhile.

use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tracing::{info, warn};

use super::{Appliance, Outcome};
use crate::call::callout::Update;
use crate::config::Contact;
use crate::events::Activity;
use crate::twilio::media::CallSid;

/// How long a failed call-out shows on the call LED.
pub(super) const FAILED_SHOWN: Duration = Duration::from_secs(3);
/// How long the emergency chain waits for one contact.
pub(super) const CHAIN_WAIT: Duration = Duration::from_secs(90);

impl Appliance {
    /// Places a call to `contact` and follows it until it connects, fails or is queued.
    pub async fn call_contact(&self, contact: &Contact, emergency: bool) -> Outcome {
        let language = self.inner.language;
        let mut updates = self.inner.callout.updates();
        self.inner.bus.set_activity(Activity::Dialing);
        let id = match self.inner.callout.request(contact, emergency).await {
            Ok(id) => id,
            Err(e) => {
                warn!("cannot call {}: {e}", contact.name);
                self.show_failed();
                self.say(language.not_configured).await;
                return Outcome::Failed;
            }
        };
        self.local().dialing = Some((id, None));
        let outcome = tokio::time::timeout(CHAIN_WAIT, async {
            loop {
                let update = match updates.recv().await {
                    Ok(update) => update,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return Outcome::Failed,
                };
                match update {
                    Update::Queued { id: i } if i == id => return Outcome::Queued,
                    Update::Placed { id: i, call_sid } if i == id => {
                        self.local().dialing = Some((id, Some(call_sid)));
                        self.inner.bus.set_activity(Activity::RingingOut);
                    }
                    Update::Failed { id: i, .. } if i == id => return Outcome::Failed,
                    Update::Progress { id: i, status } if i == id => match status.as_str() {
                        "connected" => return Outcome::Connected,
                        "ringing" | "initiated" | "in-progress" | "answered" | "queued" => {}
                        _ => return Outcome::NotAnswered,
                    },
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or(Outcome::NotAnswered);
        let cancelled = {
            let mut local = self.local();
            let ours = local.dialing.as_ref().is_some_and(|(i, _)| *i == id);
            let sid = if ours { local.dialing.take().and_then(|(_, sid)| sid) } else { None };
            (outcome == Outcome::NotAnswered).then_some(sid).flatten()
        };
        info!(contact = %contact.name, ?outcome, "call-out");
        match outcome {
            Outcome::Connected => {}
            Outcome::Queued => {
                self.inner.bus.end_activity(Activity::Dialing);
                self.say(&language.offline_queued.replace("{name}", &contact.name)).await;
            }
            Outcome::NotAnswered => {
                if let (Some(sid), Some(rest)) = (cancelled, &self.inner.rest) {
                    // Stop it ringing on (a timeout): the next contact is being called.
                    let _ = rest.hang_up(&sid).await;
                }
                self.show_failed();
                self.say(&language.no_answer.replace("{name}", &contact.name)).await;
            }
            Outcome::Failed => {
                self.show_failed();
                self.say(&language.call_failed.replace("{name}", &contact.name)).await;
            }
        }
        outcome
    }

    pub(super) fn show_failed(&self) {
        let bus = self.inner.bus.clone();
        bus.set_activity(Activity::CallFailed);
        tokio::spawn(async move {
            tokio::time::sleep(FAILED_SHOWN).await;
            bus.end_activity(Activity::CallFailed);
        });
    }

    /// Long press: calls the emergency contacts (all contacts if none is marked) in order until a
    /// person answers; answering machines are skipped (Twilio's detection).
    pub(super) async fn emergency_chain(&self) {
        let language = self.inner.language;
        let contacts = self.contacts();
        let marked: Vec<Contact> = contacts.iter().filter(|c| c.emergency).cloned().collect();
        let chain = if marked.is_empty() { contacts } else { marked };
        info!(contacts = chain.len(), "emergency chain started");
        self.say(language.emergency).await;
        for contact in &chain {
            self.say(&language.calling.replace("{name}", &contact.name)).await;
            match self.call_contact(contact, true).await {
                Outcome::Connected | Outcome::Queued => return,
                Outcome::NotAnswered | Outcome::Failed => {}
            }
        }
        self.say(language.nobody_answered).await;
    }

    /// Answers the call ringing the box, if there is one.
    pub(super) fn answer(&self) -> bool {
        let Some((sid, answer)) = self.local().ringing.take() else { return false };
        info!(call = %sid, "answered on the box");
        self.inner.speaker.stop_playing();
        let _ = answer.send(());
        true
    }

    /// Starts the emergency chain (what a long press of the call button does); a chain already
    /// running is replaced.
    pub fn call_for_help(&self) {
        let this = self.clone();
        let chain = tokio::spawn(async move { this.emergency_chain().await });
        if let Some(previous) = self.local().chain.replace(chain) {
            previous.abort();
        }
    }

    /// Hangs up the call on the box (or cancels the call-out being placed); with none, every call
    /// in progress (an assistant call, say). Returns whether there was one.
    pub fn hang_up(&self) -> bool {
        if self.hang_up_current() {
            return true;
        }
        let calls = self.inner.registry.list(Instant::now());
        for call in &calls {
            self.inner.registry.hang_up(&call.call_sid);
        }
        !calls.is_empty()
    }

    /// Hangs up the call on the box, or cancels the call-out being placed.
    pub(super) fn hang_up_current(&self) -> bool {
        let (in_call, dialing) = {
            let local = self.local();
            (local.in_call.clone(), local.dialing.clone())
        };
        let rest = self.inner.rest.clone();
        if let Some(sid) = in_call {
            info!(call = %sid, "hung up on the box");
            self.inner.registry.hang_up(&sid);
            return true;
        }
        if let Some((id, sid)) = dialing {
            info!(id, "call-out cancelled on the box");
            if let (Some(rest), Some(sid)) = (rest, sid) {
                tokio::spawn(async move {
                    if let Err(e) = rest.hang_up(&sid).await {
                        warn!(call = %sid, "cancelling the call-out: {e}");
                    }
                });
            }
            self.local().dialing = None;
            self.inner.bus.end_activity(Activity::Dialing);
            self.inner.bus.end_activity(Activity::RingingOut);
            return true;
        }
        false
    }

    /// A call's audio now runs through the speaker and microphone.
    pub fn connected(&self, sid: &CallSid, callout: Option<i64>) {
        {
            let mut local = self.local();
            local.in_call = Some(sid.clone());
            if local.dialing.as_ref().is_some_and(|(id, _)| Some(*id) == callout) {
                local.dialing = None;
            }
        }
        if let Some(id) = callout {
            self.inner.callout.report(id, "connected");
        }
        self.inner.speaker.stop_playing();
        self.inner.speaker.set_streaming(true);
        self.inner.bus.set_activity(Activity::InCall);
        info!(call = %sid, "call on the box's speaker and microphone");
    }

    pub fn disconnected(&self, sid: &CallSid) {
        let mut local = self.local();
        if local.in_call.as_ref() == Some(sid) {
            local.in_call = None;
            drop(local);
            self.inner.speaker.set_streaming(false);
            self.inner.bus.end_activity(Activity::InCall);
            info!(call = %sid, "call off the box");
        }
    }
}
