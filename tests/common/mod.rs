//! Helpers for tests that run the real `voca` binary.
#![allow(dead_code)]

pub mod broker;
pub mod browser;
pub mod debian;
pub mod rig;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";
pub const NUMBER: &str = "+15551234567";

/// `voca` with a clean environment (no TWILIO_*/VOCA_* from the caller, no .env) in `dir`.
pub fn voca(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voca"));
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).current_dir(dir);
    cmd
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn models_dir() -> PathBuf {
    repo().join("models")
}

pub fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// An ALSA configuration with one device, `voca_test`: capture reads `capture.raw`, playback writes
/// `playback.raw`, both through the `file` plugin over a `null` slave (no sound card needed).
pub fn file_backed_alsa(dir: &Path) -> PathBuf {
    let capture = dir.join("capture.raw");
    std::fs::write(&capture, vec![0u8; 32000]).expect("write capture file");
    let conf = dir.join("asound.conf");
    let text = format!(
        "pcm.null {{ type null }}\n\
         pcm.voca_test {{\n  type file\n  slave.pcm \"null\"\n  file \"{}\"\n  infile \"{}\"\n  format \"raw\"\n}}\n",
        dir.join("playback.raw").display(),
        capture.display()
    );
    std::fs::write(&conf, text).expect("write asound.conf");
    conf
}

/// A REST client for the test account, pointed at `base` (a stub or the Prism mock).
pub fn rest_client(base: &str) -> voca::twilio::rest::RestClient {
    let mut config = voca::config::Config::defaults().twilio;
    config.account_sid = Some(ACCOUNT_SID.parse().expect("sid"));
    config.auth_token = voca::config::Secret::new(AUTH_TOKEN);
    config.api_base = base.parse().expect("url");
    voca::twilio::rest::RestClient::new(&config).expect("client")
}

/// Twilio's API as its own OpenAPI spec describes it: `prism mock` on a free loopback port.
pub struct Prism {
    child: std::process::Child,
    pub base: String,
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spec() -> PathBuf {
    std::env::var_os("VOCA_TWILIO_SPEC")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/twilio-spec/twilio_api_v2010.arrays-explode.json"))
}

/// Starts `prism mock` (installed by `make test` under .cache/prism) on a free loopback port.
pub fn start_prism() -> Prism {
    // A wrapper `make test` writes: Prism with a Node that can run it.
    let bin = repo().join(".cache/prism/prism");
    assert!(bin.exists(), "{} is missing: `make test` installs it (npm @stoplight/prism-cli)", bin.display());
    assert!(
        spec().exists(),
        "Twilio's spec is missing at {} (`make test` installs it; or set VOCA_TWILIO_SPEC)",
        spec().display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut child = std::process::Command::new(bin)
        .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string()])
        .arg(spec())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start prism");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Prism is listening") {
                let _ = tx.send(());
            }
        }
    });
    let prism = Prism { child, base: format!("http://127.0.0.1:{port}") };
    rx.recv_timeout(std::time::Duration::from_secs(120)).expect("prism started within two minutes");
    prism
}

/// A tmpfs of `size` mounted on `path` for as long as this lives (the tests run as root).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mount a tmpfs on {}", path.display());
        Self(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with one file until it is full; returns the file.
pub fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let full = std::fs::write(&filler, vec![0u8; 64 << 20]).expect_err("the file system is small: it fills up");
    assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
    filler
}

/// espeak-ng (the command, as the tests' own voice) saying `text` in Korean, at `rate` Hz.
pub fn say(text: &str, rate: u32) -> Vec<i16> {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("say.wav");
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "ko", "-s", "175", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng is installed by make");
    assert!(status.success(), "espeak-ng failed");
    let speech = voca::audio::wav::read(&wav).expect("espeak-ng WAV");
    voca::audio::resample::convert(&speech.samples, speech.rate, rate)
}

/// A box process the test started: killed and reaped when dropped, so a failing test never leaves
/// it running.
pub struct Spawned(pub std::process::Child);

impl Spawned {
    /// Sends SIGTERM (a clean stop).
    pub fn terminate(&self) {
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
    }
}

impl std::ops::Deref for Spawned {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A call SID as the store takes it, from the text a simulated call carries.
pub fn call_sid(sid: impl AsRef<str>) -> voca::twilio::media::CallSid {
    voca::twilio::media::CallSid::parse(sid.as_ref()).expect("a call SID")
}
