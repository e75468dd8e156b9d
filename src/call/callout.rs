//! Call-outs: the box calls a contact (a button, a voice command, the emergency chain). Every
//! request becomes a row in SQLite first, then a worker places it as soon as the phone network is
//! reachable: at once when online, later when offline (until the policy's deadline; emergency calls
//! are kept longest and retried most often). A row is claimed (`placing`) before its request is sent,
//! so neither a second worker nor a restart can place it twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{mask_phone, CallsConfig, Contact, E164};
use crate::events::{DeviceState, StateBus};
use crate::net::Backoff;
use crate::store::{now_ms, Attempt, CallOutRow, Store};
use crate::twilio::media::CallSid;
use crate::twilio::rest::{NewCall, RestClient, RestError};
use crate::twilio::PublicUrl;

/// How long queued call-outs are kept and how often they are retried.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub keep: Duration,
    pub keep_emergency: Duration,
    pub retry_every: Duration,
}

impl Policy {
    pub fn from_config(calls: &CallsConfig) -> Self {
        Self {
            keep: calls.queue_for.into(),
            keep_emergency: calls.emergency_queue_for.into(),
            retry_every: calls.retry_every.into(),
        }
    }

    /// The pause before a queued call-out is tried again: the box's one retry policy at a steady
    /// pace (jittered), three times as often for a call for help.
    fn retry_after(&self, emergency: bool) -> Duration {
        Backoff::steady(if emergency { self.retry_every / 3 } else { self.retry_every }).pause()
    }
}

/// What happened to a call-out, for whoever asked for it (LEDs, the speaker, the emergency chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Offline: kept until the network is back.
    Queued { id: i64 },
    /// Twilio accepted it: the contact's phone rings.
    Placed { id: i64, call_sid: CallSid },
    /// Will try again (the network is still down).
    Retrying { id: i64, error: String },
    /// Gave up: Twilio refused it, or it stayed queued past its deadline.
    Failed { id: i64, error: String },
    /// What became of the placed call: Twilio's `CallStatus` (`ringing`, `in-progress`, `completed`,
    /// `busy`, `no-answer`, `failed`, `canceled`), `machine` (answering-machine detection), or
    /// `connected` (its audio is on the box).
    Progress { id: i64, status: String },
}

/// Places call-outs. Cheap to clone.
#[derive(Clone)]
pub struct CallOut {
    inner: Arc<Inner>,
}

struct Inner {
    rest: Option<RestClient>,
    from: Option<E164>,
    public: PublicUrl,
    store: Store,
    bus: StateBus,
    policy: Policy,
    wake: Notify,
    updates: broadcast::Sender<Update>,
}

impl std::fmt::Debug for CallOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOut").field("policy", &self.inner.policy).finish_non_exhaustive()
    }
}

impl CallOut {
    pub fn new(
        rest: Option<RestClient>,
        from: Option<E164>,
        public: PublicUrl,
        store: Store,
        bus: StateBus,
        policy: Policy,
    ) -> Self {
        let (updates, _) = broadcast::channel(64);
        Self { inner: Arc::new(Inner { rest, from, public, store, bus, policy, wake: Notify::new(), updates }) }
    }

    /// Whether call-outs can be placed right now (credentials, and the box is online).
    pub fn online(&self) -> bool {
        self.inner.rest.is_some() && self.inner.bus.current() == DeviceState::Ready
    }

    pub fn updates(&self) -> broadcast::Receiver<Update> {
        self.inner.updates.subscribe()
    }

    /// Reports what became of call-out `id` (from Twilio's callbacks, or the box's own stream).
    pub fn report(&self, id: i64, status: &str) {
        let _ = self.inner.updates.send(Update::Progress { id, status: status.to_owned() });
    }

    /// Asks for a call to `contact`; returns the call-out's id. It is placed by [`CallOut::run`].
    pub async fn request(&self, contact: &Contact, emergency: bool) -> Result<i64, String> {
        if self.inner.rest.is_none() || self.inner.from.is_none() {
            return Err("Twilio is not configured (twilio.account_sid, auth_token, phone_number)".into());
        }
        let keep = if emergency { self.inner.policy.keep_emergency } else { self.inner.policy.keep };
        let deadline = now_ms() + keep.as_millis() as i64;
        let id = self
            .inner
            .store
            .queue_callout(&contact.name, contact.number.as_str(), emergency, deadline)
            .await
            .map_err(|e| e.to_string())?;
        info!(id, contact = %contact.name, number = %contact.number, emergency, "call-out requested");
        if !self.online() {
            let _ = self.inner.updates.send(Update::Queued { id });
        }
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// The worker: places due call-outs while online. Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut bus = self.inner.bus.watch();
        loop {
            if self.online() {
                self.place_due().await;
            }
            let next_due = self.inner.store.next_callout_due().await.ok().flatten();
            let pause = next_due
                .map(|due| Duration::from_millis((due - now_ms()).clamp(50, 60_000) as u64))
                .unwrap_or(Duration::from_secs(60));
            tokio::select! {
                () = self.inner.wake.notified() => {}
                changed = bus.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn place_due(&self) {
        loop {
            // A step of the wall clock moves deadlines first: it never expires a call-out by itself.
            self.inner.store.settle_clock().await;
            let row = match self.inner.store.claim_due_callout(now_ms()).await {
                Ok(Some(row)) => row,
                Ok(None) => return,
                Err(e) => {
                    warn!("call-out queue: {e}");
                    return;
                }
            };
            let attempt = self.place(&row).await;
            let update = match &attempt {
                Attempt::Placed { call_sid } => Update::Placed { id: row.id, call_sid: call_sid.clone() },
                Attempt::Retry { error, .. } => Update::Retrying { id: row.id, error: error.clone() },
                Attempt::Failed { error } | Attempt::Uncertain { error } => {
                    Update::Failed { id: row.id, error: error.clone() }
                }
            };
            let retrying = matches!(attempt, Attempt::Retry { .. });
            if let Err(e) = self.inner.store.callout_attempted(row.id, attempt).await {
                warn!("call-out queue: {e}");
            }
            let _ = self.inner.updates.send(update);
            if retrying {
                return;
            }
        }
    }

    async fn place(&self, row: &CallOutRow) -> Attempt {
        let (Some(rest), Some(from)) = (&self.inner.rest, &self.inner.from) else {
            return Attempt::Failed { error: "Twilio is not configured".into() };
        };
        let to: E164 = match row.number.parse() {
            Ok(n) => n,
            Err(e) => return Attempt::Failed { error: format!("contact number: {e}") },
        };
        let url = self.inner.public.join(&format!("/twilio/voice?callout={}", row.id));
        let status = self.inner.public.join(&format!("/twilio/status?callout={}", row.id));
        let call = NewCall {
            to: &to,
            from,
            url: &url,
            status_callback: Some(&status),
            timeout: Some(30),
            detect_machine: row.emergency,
        };
        let retry = || now_ms() + self.inner.policy.retry_after(row.emergency).as_millis() as i64;
        match rest.place_call(&call).await {
            Ok(placed) => match CallSid::parse(&placed.sid) {
                Ok(call_sid) => {
                    info!(id = row.id, to = %mask_phone(&row.number), call = %call_sid, "call-out placed");
                    Attempt::Placed { call_sid }
                }
                // Placed, but under a name the box cannot use (it would name a URL): never again.
                Err(e) => {
                    warn!(id = row.id, "call-out placed, but Twilio answered with {e}: not sent again");
                    Attempt::Uncertain { error: format!("Twilio answered with {e}") }
                }
            },
            Err(RestError::Transport { nothing_sent: true, reason, .. }) => {
                warn!(id = row.id, "call-out not placed ({reason}): will retry");
                Attempt::Retry { next_try: retry(), error: reason }
            }
            // Too many requests: Twilio turned it away before making a call, so it is safe to send again.
            Err(e @ RestError::Api { status: 429, .. }) => {
                warn!(id = row.id, "call-out not placed ({e}): will retry");
                Attempt::Retry { next_try: retry(), error: e.to_string() }
            }
            // The request may have reached Twilio. Placing it again could ring twice: acceptable only
            // for a call for help.
            Err(e @ (RestError::Transport { .. } | RestError::Api { status: 500.., .. })) if row.emergency => {
                warn!(id = row.id, "emergency call-out may not have been placed ({e}): trying again");
                Attempt::Retry { next_try: retry(), error: e.to_string() }
            }
            Err(e @ RestError::Transport { .. }) | Err(e @ RestError::Api { status: 500.., .. }) => {
                warn!(id = row.id, "call-out outcome unknown ({e}): not sent again, so it cannot ring twice");
                Attempt::Uncertain { error: e.to_string() }
            }
            Err(e) => {
                warn!(id = row.id, "call-out refused: {e}");
                Attempt::Failed { error: e.to_string() }
            }
        }
    }
}
