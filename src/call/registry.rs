//! Active calls in memory: admission (concurrency limit, allow/block lists, per-caller rate limit),
//! the one-time stream tokens the webhook mints, and hang-up requests to running sessions.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::responder::Purpose;
use crate::config::{mask_phone, CallsConfig};
use crate::twilio::media::CallSid;

/// How long a minted stream token stays valid: Twilio opens the stream within a second or two.
pub const TOKEN_TTL: Duration = Duration::from_secs(30);
const RATE_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    /// Twilio's `Direction` parameter: `inbound`, `outbound-api`, `outbound-dial`.
    pub fn from_twilio(s: &str) -> Self {
        if s.starts_with("outbound") {
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallState {
    /// Answered with TwiML; waiting for the Media Stream.
    Connecting,
    /// The stream is open.
    InStream,
}

/// What the registry knows of a call. `remote` is the other party's number, masked whenever shown.
#[derive(Debug, Clone)]
struct Active {
    direction: Direction,
    remote: String,
    state: CallState,
    started: Instant,
    answered: Option<Instant>,
    hangup: CancellationToken,
}

/// A call as listed on the status page and by `voca calls`: no whole numbers.
#[derive(Debug, Clone, Serialize)]
pub struct CallSummary {
    pub call_sid: CallSid,
    pub direction: Direction,
    pub remote: String,
    pub state: CallState,
    pub seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Answer with a stream carrying this token.
    Accept {
        token: String,
    },
    Busy,
    Blocked,
    RateLimited,
    /// The call's stream is already open: a webhook for it now is a replay (Twilio never asks
    /// again once it streams). No token, and no record changes.
    Streaming,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the stream has no token parameter")]
    Missing,
    #[error("the stream token is unknown or was already used")]
    Unknown,
    #[error("the stream token was minted for another call")]
    Foreign,
    #[error("the stream token has expired")]
    Expired,
}

struct Pending {
    call: CallSid,
    expires: Instant,
    /// What the call is for, as the box decided at the webhook from its own records: the stream's
    /// own parameters never choose it.
    purpose: Purpose,
}

#[derive(Default)]
struct Inner {
    calls: HashMap<CallSid, Active>,
    tokens: HashMap<String, Pending>,
    recent: HashMap<String, VecDeque<Instant>>,
}

pub struct Registry {
    /// The limits in effect (lists and rate limit change from the LAN page while the box runs).
    settings: crate::config::settings::Live,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("active", &self.len()).finish()
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Registry {
    /// A registry with fixed limits.
    pub fn new(limits: CallsConfig) -> Self {
        let mut config = crate::config::Config::defaults();
        config.calls = limits;
        Self::live(crate::config::settings::Live::new(config))
    }

    /// A registry that follows the configuration in effect.
    pub fn live(settings: crate::config::settings::Live) -> Self {
        Self { settings, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked: every update is a single insert/remove.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides whether to answer a call that reached the webhook, and registers it if so.
    /// `purpose` is what the box's own records say the call is for; `remote` is the caller for
    /// inbound calls, the callee for outbound ones.
    pub fn admit(
        &self,
        sid: &CallSid,
        purpose: Purpose,
        direction: Direction,
        remote: &str,
        now: Instant,
    ) -> Admission {
        let config = self.settings.get();
        let limits = &config.calls;
        let mut inner = self.lock();
        let Inner { calls, tokens, recent } = &mut *inner;
        tokens.retain(|_, p| p.expires > now);
        calls.retain(|_, c| c.state != CallState::Connecting || now.duration_since(c.started) < TOKEN_TTL);

        if let Some(call) = calls.get(sid) {
            // Twilio retried the webhook: answer again, with a fresh token for the same call.
            if call.state == CallState::Connecting {
                tokens.retain(|_, p| &p.call != sid);
                return Admission::Accept { token: mint(tokens, sid, purpose, now) };
            }
            return Admission::Streaming;
        }
        if direction == Direction::Inbound {
            let listed = |list: &[crate::config::E164]| list.iter().any(|n| n.as_str() == remote);
            if listed(&limits.block) || (!limits.allow.is_empty() && !listed(&limits.allow)) {
                return Admission::Blocked;
            }
            let limit = limits.rate_limit_per_hour as usize;
            if limit > 0 {
                let times = recent.entry(remote.to_owned()).or_default();
                times.retain(|t| now.duration_since(*t) < RATE_WINDOW);
                if times.len() >= limit {
                    return Admission::RateLimited;
                }
                times.push_back(now);
            }
        }
        if calls.len() >= limits.max_concurrent as usize {
            return Admission::Busy;
        }
        calls.insert(
            sid.clone(),
            Active {
                direction,
                remote: remote.to_owned(),
                state: CallState::Connecting,
                started: now,
                answered: None,
                hangup: CancellationToken::new(),
            },
        );
        Admission::Accept { token: mint(tokens, sid, purpose, now) }
    }

    /// Checks and consumes a stream's token. Only a valid, unused, unexpired token minted for this
    /// call opens the stream; the call then counts as in the stream. Returns the call's hang-up
    /// signal and what the call is for.
    pub fn claim_stream(
        &self,
        token: Option<&str>,
        sid: &CallSid,
        now: Instant,
    ) -> Result<(CancellationToken, Purpose), TokenError> {
        let token = token.ok_or(TokenError::Missing)?;
        let mut inner = self.lock();
        let pending = inner.tokens.get(token).ok_or(TokenError::Unknown)?;
        if &pending.call != sid {
            return Err(TokenError::Foreign);
        }
        let (expired, purpose) = (pending.expires <= now, pending.purpose);
        inner.tokens.remove(token);
        if expired {
            return Err(TokenError::Expired);
        }
        let call = inner.calls.get_mut(sid).ok_or(TokenError::Unknown)?;
        call.state = CallState::InStream;
        call.answered = Some(now);
        Ok((call.hangup.clone(), purpose))
    }

    /// Removes a call; returns whether it was there.
    pub fn end(&self, sid: &CallSid) -> bool {
        let mut inner = self.lock();
        inner.tokens.retain(|_, p| &p.call != sid);
        inner.calls.remove(sid).is_some()
    }

    /// Twilio reported the call over. A call still waiting for its stream is removed (the stream
    /// will not come); a call in its stream ends when Twilio closes the stream.
    pub fn terminated(&self, sid: &CallSid) {
        let mut inner = self.lock();
        if inner.calls.get(sid).is_some_and(|c| c.state == CallState::Connecting) {
            inner.calls.remove(sid);
            inner.tokens.retain(|_, p| &p.call != sid);
        }
    }

    /// Asks the call's session to hang up. Returns false if the call is not active.
    pub fn hang_up(&self, sid: &CallSid) -> bool {
        match self.lock().calls.get(sid) {
            Some(call) => {
                call.hangup.cancel();
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn list(&self, now: Instant) -> Vec<CallSummary> {
        let mut list: Vec<CallSummary> = self
            .lock()
            .calls
            .iter()
            .map(|(sid, c)| CallSummary {
                call_sid: sid.clone(),
                direction: c.direction,
                remote: mask_phone(&c.remote),
                state: c.state,
                seconds: now.duration_since(c.answered.unwrap_or(c.started)).as_secs(),
            })
            .collect();
        list.sort_by(|a, b| a.call_sid.cmp(&b.call_sid));
        list
    }
}

fn mint(tokens: &mut HashMap<String, Pending>, sid: &CallSid, purpose: Purpose, now: Instant) -> String {
    let token = new_token();
    tokens.insert(token.clone(), Pending { call: sid.clone(), expires: now + TOKEN_TTL, purpose });
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn sid(n: u8) -> CallSid {
        CallSid::parse(&format!("CA{:032x}", n)).expect("sid")
    }

    fn registry(edit: impl FnOnce(&mut CallsConfig)) -> Registry {
        let mut limits = Config::defaults().calls;
        edit(&mut limits);
        Registry::new(limits)
    }

    fn token(a: Admission) -> String {
        match a {
            Admission::Accept { token } => token,
            other => panic!("not accepted: {other:?}"),
        }
    }

    #[test]
    fn tokens_open_exactly_one_stream_of_their_own_call() {
        let r = registry(|_| {});
        let now = Instant::now();
        let t1 = token(r.admit(&sid(1), Purpose::Incoming, Direction::Inbound, "+15550000001", now));
        let t2 = token(r.admit(&sid(2), Purpose::Incoming, Direction::Inbound, "+15550000002", now));
        assert_eq!(r.claim_stream(None, &sid(1), now), Err(TokenError::Missing));
        assert_eq!(r.claim_stream(Some("nope"), &sid(1), now), Err(TokenError::Unknown));
        assert_eq!(r.claim_stream(Some(&t2), &sid(1), now), Err(TokenError::Foreign));
        assert!(r.claim_stream(Some(&t1), &sid(1), now).is_ok());
        assert_eq!(r.claim_stream(Some(&t1), &sid(1), now), Err(TokenError::Unknown), "tokens are single-use");
        assert_eq!(r.claim_stream(Some(&t2), &sid(2), now + TOKEN_TTL), Err(TokenError::Expired));
        assert_eq!(t1.len(), 32);
    }

    #[test]
    fn admission_enforces_concurrency_lists_and_rate() {
        let r = registry(|c| {
            c.max_concurrent = 2;
            c.block = vec!["+15550000666".parse().expect("number")];
            c.rate_limit_per_hour = 2;
        });
        let now = Instant::now();
        assert_eq!(r.admit(&sid(9), Purpose::Incoming, Direction::Inbound, "+15550000666", now), Admission::Blocked);
        token(r.admit(&sid(1), Purpose::Incoming, Direction::Inbound, "+15550000001", now));
        let retry = token(r.admit(&sid(1), Purpose::Incoming, Direction::Inbound, "+15550000001", now));
        assert!(r.claim_stream(Some(&retry), &sid(1), now).is_ok(), "a retried webhook gets a working token");
        token(r.admit(&sid(2), Purpose::Incoming, Direction::Inbound, "+15550000001", now));
        assert_eq!(r.admit(&sid(3), Purpose::Incoming, Direction::Inbound, "+15550000003", now), Admission::Busy);
        r.end(&sid(2));
        assert_eq!(
            r.admit(&sid(4), Purpose::Incoming, Direction::Inbound, "+15550000001", now),
            Admission::RateLimited
        );
        token(r.admit(&sid(5), Purpose::Incoming, Direction::Inbound, "+15550000001", now + RATE_WINDOW));
        assert_eq!(r.list(now).iter().map(|c| c.remote.as_str()).collect::<Vec<_>>(), ["+*******0001", "+*******0001"]);
    }

    #[test]
    fn an_allow_list_admits_only_its_numbers_and_streams_that_never_come_expire() {
        let r = registry(|c| c.allow = vec!["+15550000001".parse().expect("number")]);
        let now = Instant::now();
        assert_eq!(r.admit(&sid(1), Purpose::Incoming, Direction::Inbound, "+15550000002", now), Admission::Blocked);
        token(r.admit(&sid(2), Purpose::Incoming, Direction::Inbound, "+15550000001", now));
        assert_eq!(r.len(), 1);
        token(r.admit(&sid(3), Purpose::Incoming, Direction::Outbound, "+15550000009", now + TOKEN_TTL));
        assert_eq!(r.len(), 1, "the call whose stream never came was swept");
    }

    #[test]
    fn hang_up_signals_the_session() {
        let r = registry(|_| {});
        let now = Instant::now();
        let t = token(r.admit(&sid(1), Purpose::Incoming, Direction::Inbound, "+15550000001", now));
        let signal = r.claim_stream(Some(&t), &sid(1), now).expect("claim");
        assert!(r.hang_up(&sid(1)));
        assert!(signal.0.is_cancelled());
        assert!(!r.hang_up(&sid(2)));
    }
}
