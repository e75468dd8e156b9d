//! The page's password, sessions, CSRF and Origin checks, and the first set-up with its bounds.

use super::*;

fn auth(dir: &Path) -> Auth {
    let mut config = crate::config::Config::defaults();
    config.device.data_dir = dir.to_path_buf();
    Auth::open(&config)
}

fn peer(ip: &str) -> Peer {
    Peer(ip.into())
}

#[test]
fn the_first_set_up_needs_the_button_or_the_spoken_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = auth(dir.path());
    assert!(!auth.password_set());
    let started = auth.start_setup().expect("start");
    assert_eq!(auth.finish_setup(&started.token, None, "correct horse").unwrap_err(), AuthError::NotProven);
    assert_eq!(auth.finish_setup("forged", None, "correct horse").unwrap_err(), AuthError::NoChallenge);
    let wrong = if started.code == "000000" { "111111" } else { "000000" };
    assert_eq!(auth.finish_setup(&started.token, Some(wrong), "correct horse").unwrap_err(), AuthError::WrongCode(4));
    assert_eq!(auth.finish_setup(&started.token, Some(&started.code), "short").unwrap_err(), AuthError::WeakPassword);
    let opened = auth.finish_setup(&started.token, Some(&started.code), "correct horse").expect("set");
    assert_eq!(auth.session(&opened.cookie), Some(opened.csrf));
    assert!(auth.password_set());
    assert_eq!(auth.start_setup().unwrap_err(), AuthError::AlreadySetUp, "set-up happens once");

    let other = tempfile::tempdir().expect("tempdir");
    let pressed = super::tests::auth(other.path());
    let started = pressed.start_setup().expect("start");
    pressed.presence_proven(&started.token);
    assert_eq!(pressed.setup_state(&started.token), Ok(true));
    pressed.finish_setup(&started.token, None, "battery staple").expect("the button proved presence");
}

#[test]
fn two_finishes_sent_at_once_set_one_password_and_open_one_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = std::sync::Arc::new(auth(dir.path()));
    let started = auth.start_setup().expect("start");
    auth.presence_proven(&started.token);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let finishes: Vec<_> = ["correct horse one", "correct horse two"]
        .into_iter()
        .map(|password| {
            let (auth, token, barrier) = (auth.clone(), started.token.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                auth.finish_setup(&token, None, password).map(|_| password)
            })
        })
        .collect();
    let results: Vec<_> = finishes.into_iter().map(|t| t.join().expect("thread")).collect();
    let set: Vec<&str> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(set.len(), 1, "exactly one finish sets the password: {results:?}");
    assert!(results.iter().any(|r| r.as_ref().err() == Some(&AuthError::NoChallenge)), "{results:?}");
    // The password in force is the one the successful finish set.
    let other = if set[0].ends_with("one") { "correct horse two" } else { "correct horse one" };
    assert!(auth.login(&peer("10.0.0.2"), set[0]).is_ok());
    assert!(auth.login(&peer("10.0.0.3"), other).is_err());
}

#[test]
fn one_set_up_waits_at_a_time_and_only_a_few_start_in_ten_minutes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = auth(dir.path());
    let first = auth.start_setup().expect("start");
    assert!(matches!(auth.start_setup(), Err(AuthError::SetupPending(s)) if s > 0), "never replaced");
    auth.presence_proven(&first.token);
    assert_eq!(auth.setup_state(&first.token), Ok(true), "the press approved the first one");
    let expire = |auth: &Auth| {
        let mut state = auth.state();
        let challenge = state.challenge.as_mut().expect("pending");
        challenge.expires = Instant::now() - Duration::from_millis(1);
    };
    for _ in 1..SETUPS {
        expire(&auth);
        auth.start_setup().expect("a new one once the last expired");
    }
    expire(&auth);
    assert!(matches!(auth.start_setup(), Err(AuthError::TooMany(s)) if s > 0), "past the rate");
}

#[test]
fn wrong_passwords_are_limited_per_peer_and_a_new_password_ends_old_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_password(dir.path(), "first password").expect("store");
    let auth = auth(dir.path());
    let session = auth.login(&peer("10.0.0.2"), "first password").expect("login");
    for _ in 0..ATTEMPTS {
        assert_eq!(auth.login(&peer("10.0.0.9"), "guess").unwrap_err(), AuthError::WrongPassword);
    }
    assert!(matches!(auth.login(&peer("10.0.0.9"), "first password"), Err(AuthError::TooMany(_))));
    auth.login(&peer("10.0.0.2"), "first password").expect("other peers still log in");

    // `voca web-password` on the box: a new file (its mtime may be the same second).
    std::thread::sleep(Duration::from_millis(20));
    store_password(dir.path(), "second password").expect("store");
    let later = SystemTime::now() + Duration::from_secs(2);
    let file = std::fs::File::options().write(true).open(dir.path().join(PASSWORD_FILE)).expect("open");
    file.set_modified(later).expect("touch");
    assert_eq!(auth.session(&session.cookie), None, "sessions under the old password end");
}

#[test]
fn state_changing_requests_need_the_box_origin_and_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_password(dir.path(), "a password").expect("store");
    let auth = auth(dir.path());
    let opened = auth.login(&peer("::1"), "a password").expect("login");
    let mut headers = HeaderMap::new();
    assert_eq!(auth.authorize(&Method::GET, &headers), Err(AuthError::NoSession));
    headers.insert(header::COOKIE, format!("theme=dark; {COOKIE}={}", opened.cookie).parse().expect("header"));
    headers.insert(header::HOST, "voca.local".parse().expect("header"));
    assert_eq!(auth.authorize(&Method::GET, &headers), Ok(()));
    assert_eq!(auth.authorize(&Method::POST, &headers), Err(AuthError::Csrf));
    headers.insert(CSRF_HEADER, opened.csrf.parse().expect("header"));
    assert_eq!(auth.authorize(&Method::POST, &headers), Ok(()));
    headers.insert(header::ORIGIN, "http://evil.example".parse().expect("header"));
    assert!(matches!(auth.authorize(&Method::DELETE, &headers), Err(AuthError::Origin(_))));
    headers.insert(header::ORIGIN, "http://voca.local".parse().expect("header"));
    assert_eq!(auth.authorize(&Method::DELETE, &headers), Ok(()));
    auth.logout(&opened.cookie);
    assert_eq!(auth.authorize(&Method::GET, &headers), Err(AuthError::NoSession));
}
