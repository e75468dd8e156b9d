//! Who may use the LAN page: the password (argon2, in `data_dir/web-password`), sessions (an
//! HttpOnly SameSite=Strict cookie, expiring), CSRF protection (the Origin must be the box, and a
//! per-session token in `X-CSRF-Token`), login attempts limited per peer, and the first set-up,
//! which proves physical presence (a press of the box's button, or the code it speaks) before
//! anyone may choose the password. Times are monotonic: a wall clock that jumps after boot
//! changes no expiry.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::{header, HeaderMap, Method};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::net::Peer;

/// The password's file under `device.data_dir`.
pub const PASSWORD_FILE: &str = "web-password";
/// The session cookie's name.
pub const COOKIE: &str = "voca_session";
/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Wrong passwords allowed per peer within [`ATTEMPT_WINDOW`].
const ATTEMPTS: usize = 5;
const ATTEMPT_WINDOW: Duration = Duration::from_secs(300);
/// Wrong passwords allowed from everyone together within the window (many peers cannot guess faster).
const ATTEMPTS_ALL: usize = 20;
/// How long the first set-up waits for the button press (or the code).
const CHALLENGE_FOR: Duration = Duration::from_secs(180);
/// Wrong set-up codes before the challenge ends.
const CODE_TRIES: u32 = 5;
/// First set-ups started within [`SETUP_WINDOW`], at most: with [`CODE_TRIES`] each, guessing the
/// six-digit code takes months, and the box's speaker is not a stranger's to fill.
const SETUPS: usize = 3;
const SETUP_WINDOW: Duration = Duration::from_secs(600);
/// Password checks running at once, at most: argon2 holds ~19 MiB each, so a hundred at once
/// would have a Pi killed for memory. Further logins wait for none: they get 429 at once.
const CHECKS_AT_ONCE: usize = 2;
const PASSWORD_MIN: usize = 8;
const PASSWORD_MAX: usize = 256;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("not logged in: log in with POST /api/login {{\"password\"}}")]
    NoSession,
    #[error("the request does not come from the box's own page (Origin {0}): refused")]
    Origin(String),
    #[error("missing or wrong X-CSRF-Token header: send the token /api/login or /api/session gave")]
    Csrf,
    #[error("wrong password")]
    WrongPassword,
    #[error("too many wrong passwords: try again in {0} s")]
    TooMany(u64),
    #[error("no password is set yet: finish the first set-up (POST /api/setup/start)")]
    NotSetUp,
    #[error("the password is already set: log in, or reset it on the box with `voca web-password`")]
    AlreadySetUp,
    #[error("`password`: expected {PASSWORD_MIN} to {PASSWORD_MAX} characters")]
    WeakPassword,
    #[error("the set-up request is unknown or has expired: start again")]
    NoChallenge,
    #[error("the box has not seen its button pressed yet: press it, or type the code it spoke")]
    NotProven,
    #[error("`code`: wrong code ({0} tries left)")]
    WrongCode(u32),
    #[error(
        "a set-up is already waiting for the box's button (another browser started it): do not press the \
         button for it; try again in {0} s, when it has expired"
    )]
    SetupPending(u64),
    #[error("cannot store the password in {path}: {reason}")]
    Store { path: PathBuf, reason: String },
}

struct Session {
    csrf: String,
    expires: Instant,
    /// The password it was opened with: a new password ends every older session.
    password: String,
}

/// The first set-up in progress.
struct Challenge {
    /// Held by the browser that started it: only it may finish the set-up.
    token: String,
    /// Spoken on the box's speaker.
    code: String,
    expires: Instant,
    proven: bool,
    tries_left: u32,
}

/// The password hash as last read, and the file's modification time then.
#[derive(Default)]
struct Cached {
    modified: Option<SystemTime>,
    hash: Option<String>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<[u8; 32], Session>,
    failures: HashMap<String, VecDeque<Instant>>,
    all_failures: VecDeque<Instant>,
    challenge: Option<Challenge>,
    /// When set-ups were started, within [`SETUP_WINDOW`].
    setups: VecDeque<Instant>,
    /// Password checks running now.
    checking: usize,
    cached: Cached,
}

/// Cheap to clone; outlives restarts of the box's engine, so logins survive new settings.
#[derive(Clone)]
pub struct Auth {
    file: PathBuf,
    lifetime: Duration,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("file", &self.file).finish_non_exhaustive()
    }
}

/// A session just opened: the cookie value and its CSRF token.
#[derive(Debug)]
pub struct Opened {
    pub cookie: String,
    pub csrf: String,
    pub max_age: Duration,
}

/// A started set-up: the browser keeps `token`; the box speaks `code`.
#[derive(Debug)]
pub struct Started {
    pub token: String,
    pub code: String,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).expect("the OS random source works");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    check_strength(password)?;
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).expect("the OS random source works");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Store { path: PathBuf::new(), reason: e.to_string() })
}

fn check_strength(password: &str) -> Result<(), AuthError> {
    let n = password.chars().count();
    if (PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        Ok(())
    } else {
        Err(AuthError::WeakPassword)
    }
}

/// Writes the password file (0600, replaced atomically).
pub fn store_password(data_dir: &Path, password: &str) -> Result<(), AuthError> {
    let hash = hash_password(password)?;
    let path = data_dir.join(PASSWORD_FILE);
    let err = |e: std::io::Error| AuthError::Store { path: path.clone(), reason: e.to_string() };
    std::fs::create_dir_all(data_dir).map_err(err)?;
    let temporary = path.with_extension("new");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(err)?;
        file.write_all(format!("{hash}\n").as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)?;
    }
    // Run as root on a box (`sudo voca web-password`), the file must still be the service's to
    // read: it takes the data folder's owner.
    if let Ok(folder) = std::fs::metadata(data_dir) {
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::chown(&temporary, Some(folder.uid()), Some(folder.gid()));
    }
    std::fs::rename(&temporary, &path).map_err(err)
}

/// Removes the password: the page asks for the first set-up (with the button press) again.
pub fn clear_password(data_dir: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(data_dir.join(PASSWORD_FILE)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl Auth {
    pub fn open(config: &crate::config::Config) -> Self {
        Self {
            file: config.device.data_dir.join(PASSWORD_FILE),
            lifetime: config.web.session_lifetime.into(),
            state: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The password hash in effect: the file is read again when it changed (`voca web-password`
    /// works on a running box).
    fn password_hash(&self, state: &mut State) -> Option<String> {
        let modified = std::fs::metadata(&self.file).and_then(|m| m.modified()).ok();
        if modified != state.cached.modified || modified.is_none() {
            let hash = std::fs::read_to_string(&self.file).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
            state.cached = Cached { modified, hash };
        }
        state.cached.hash.clone()
    }

    pub fn password_set(&self) -> bool {
        let mut state = self.state();
        self.password_hash(&mut state).is_some()
    }

    /// Checks `password` (argon2 takes a while: call it from a blocking thread). A check is
    /// counted as a wrong password before it runs (and forgiven if it was right), so many sent at
    /// once are limited like many sent one after another; at most [`CHECKS_AT_ONCE`] run at once.
    pub fn login(&self, peer: &Peer, password: &str) -> Result<Opened, AuthError> {
        let now = Instant::now();
        let hash = {
            let mut state = self.state();
            let State { failures, all_failures, .. } = &mut *state;
            let mine = failures.entry(peer.0.clone()).or_default();
            for list in [&mut *mine, &mut *all_failures] {
                while list.front().is_some_and(|t| now.duration_since(*t) > ATTEMPT_WINDOW) {
                    list.pop_front();
                }
            }
            let blocked =
                [(mine.len() >= ATTEMPTS, mine.front()), (all_failures.len() >= ATTEMPTS_ALL, all_failures.front())];
            if let Some((_, Some(oldest))) = blocked.into_iter().find(|(over, _)| *over) {
                let wait = ATTEMPT_WINDOW.saturating_sub(now.duration_since(*oldest));
                return Err(AuthError::TooMany(wait.as_secs().max(1)));
            }
            if state.checking >= CHECKS_AT_ONCE {
                return Err(AuthError::TooMany(1));
            }
            let hash = self.password_hash(&mut state).ok_or(AuthError::NotSetUp)?;
            state.checking += 1;
            state.failures.entry(peer.0.clone()).or_default().push_back(now);
            state.all_failures.push_back(now);
            hash
        };
        let good = PasswordHash::new(&hash)
            .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false);
        let mut state = self.state();
        state.checking -= 1;
        if !good {
            tracing::warn!(peer = %peer.0, "LAN page: wrong password");
            return Err(AuthError::WrongPassword);
        }
        state.failures.remove(&peer.0);
        if let Some(at) = state.all_failures.iter().rposition(|t| *t == now) {
            state.all_failures.remove(at);
        }
        Ok(self.open_session(&mut state, hash))
    }

    fn open_session(&self, state: &mut State, password: String) -> Opened {
        let now = Instant::now();
        state.sessions.retain(|_, s| s.expires > now);
        let (cookie, csrf) = (random_hex(32), random_hex(16));
        state.sessions.insert(key(&cookie), Session { csrf: csrf.clone(), expires: now + self.lifetime, password });
        Opened { cookie, csrf, max_age: self.lifetime }
    }

    pub fn logout(&self, cookie: &str) {
        self.state().sessions.remove(&key(cookie));
    }

    /// The session's CSRF token, if `cookie` names a live session under the current password.
    pub fn session(&self, cookie: &str) -> Option<String> {
        let mut state = self.state();
        let current = self.password_hash(&mut state);
        let k = key(cookie);
        let live =
            state.sessions.get(&k).is_some_and(|s| s.expires > Instant::now() && Some(&s.password) == current.as_ref());
        if !live {
            state.sessions.remove(&k);
            return None;
        }
        state.sessions.get(&k).map(|s| s.csrf.clone())
    }

    /// Checks a request to the API: a live session, and for anything that changes state, the
    /// box's own Origin and the session's CSRF token.
    pub fn authorize(&self, method: &Method, headers: &HeaderMap) -> Result<(), AuthError> {
        let cookie = session_cookie(headers).ok_or(AuthError::NoSession)?;
        let csrf = self.session(&cookie).ok_or(AuthError::NoSession)?;
        if changes_state(method) {
            same_origin(headers)?;
            let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !constant_time_eq(sent.as_bytes(), csrf.as_bytes()) {
                return Err(AuthError::Csrf);
            }
        }
        Ok(())
    }

    /// Starts the first set-up: refused once a password is set, while another set-up waits (it
    /// is never replaced: a button press must approve the set-up its owner started), and past
    /// [`SETUPS`] starts in [`SETUP_WINDOW`].
    pub fn start_setup(&self) -> Result<Started, AuthError> {
        let mut state = self.state();
        if self.password_hash(&mut state).is_some() {
            return Err(AuthError::AlreadySetUp);
        }
        let now = Instant::now();
        if let Some(pending) = state.challenge.as_ref().filter(|c| c.expires > now) {
            return Err(AuthError::SetupPending(pending.expires.duration_since(now).as_secs().max(1)));
        }
        while state.setups.front().is_some_and(|t| now.duration_since(*t) > SETUP_WINDOW) {
            state.setups.pop_front();
        }
        if state.setups.len() >= SETUPS {
            let oldest = *state.setups.front().expect("full");
            return Err(AuthError::TooMany(SETUP_WINDOW.saturating_sub(now.duration_since(oldest)).as_secs().max(1)));
        }
        state.setups.push_back(now);
        let mut digits = [0u8; 6];
        getrandom::getrandom(&mut digits).expect("the OS random source works");
        let code: String = digits.iter().map(|d| char::from(b'0' + d % 10)).collect();
        let token = random_hex(16);
        state.challenge = Some(Challenge {
            token: token.clone(),
            code: code.clone(),
            expires: Instant::now() + CHALLENGE_FOR,
            proven: false,
            tries_left: CODE_TRIES,
        });
        Ok(Started { token, code })
    }

    /// The box's button was pressed while the set-up with `token` waited for it.
    pub fn presence_proven(&self, token: &str) {
        if let Some(challenge) = self.state().challenge.as_mut().filter(|c| c.token == token) {
            challenge.proven = true;
        }
    }

    /// Whether the set-up `token` has seen the button press (for the page to move on).
    pub fn setup_state(&self, token: &str) -> Result<bool, AuthError> {
        let state = self.state();
        match &state.challenge {
            Some(c) if c.token == token && c.expires > Instant::now() => Ok(c.proven),
            _ => Err(AuthError::NoChallenge),
        }
    }

    /// Finishes the first set-up: `token` from [`Auth::start_setup`], presence proven by the
    /// button or by `code`. Stores the password and opens a session.
    pub fn finish_setup(&self, token: &str, code: Option<&str>, password: &str) -> Result<Opened, AuthError> {
        check_strength(password)?;
        let taken = {
            let mut state = self.state();
            if self.password_hash(&mut state).is_some() {
                return Err(AuthError::AlreadySetUp);
            }
            let challenge = state
                .challenge
                .as_mut()
                .filter(|c| c.token == token && c.expires > Instant::now())
                .ok_or(AuthError::NoChallenge)?;
            if !challenge.proven {
                match code.map(str::trim).filter(|c| !c.is_empty()) {
                    None => return Err(AuthError::NotProven),
                    Some(code) if constant_time_eq(code.as_bytes(), challenge.code.as_bytes()) => {}
                    Some(_) => {
                        challenge.tries_left = challenge.tries_left.saturating_sub(1);
                        let left = challenge.tries_left;
                        if left == 0 {
                            state.challenge = None;
                        }
                        return Err(AuthError::WrongCode(left));
                    }
                }
            }
            // Taken while still held: a second finish sent at the same moment finds no set-up
            // waiting, and can never replace the password this one sets.
            state.challenge.take().ok_or(AuthError::NoChallenge)?
        };
        let data_dir = self.file.parent().unwrap_or(Path::new("."));
        if let Err(e) = store_password(data_dir, password) {
            // Nothing was set: the set-up still waits (unless another has started meanwhile).
            self.state().challenge.get_or_insert(taken);
            return Err(e);
        }
        let mut state = self.state();
        let hash = self.password_hash(&mut state).ok_or(AuthError::NotSetUp)?;
        tracing::info!("LAN page: the password was set (first set-up)");
        Ok(self.open_session(&mut state, hash))
    }
}

/// Middleware for routes without a session (the simulated board's buttons): a state-changing
/// request from another site's page (its `Origin`) gets 403. Scripts send no Origin and pass.
pub async fn from_this_box_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if changes_state(request.method()) {
        if let Err(e) = same_origin(request.headers()) {
            return (axum::http::StatusCode::FORBIDDEN, format!("{e}\n")).into_response();
        }
    }
    next.run(request).await
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A browser names the page a request comes from in `Origin`; it must be this box (the `Host`
/// the request went to). Scripts send no Origin: the CSRF token alone then guards them.
pub fn same_origin(headers: &HeaderMap) -> Result<(), AuthError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(AuthError::Origin(origin.chars().take(100).collect()))
    }
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The `Set-Cookie` value for a session (an empty value and `Max-Age=0` ends it).
pub fn set_cookie(value: &str, max_age: Duration) -> String {
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", max_age.as_secs())
}

/// Compares secrets without leaking where they differ through timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
