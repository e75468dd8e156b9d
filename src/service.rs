//! The box as a systemd service (`Type=notify`, see `board/voca.service`): `READY=1` once it
//! listens, `STATUS=` lines as the speech model loads and the phone network comes and goes,
//! `STOPPING=1` at shutdown, and a watchdog fed only while the box is healthy. Each feed is earned:
//! the async runtime runs a task, the call-log thread answers, and no speech worker is stuck inside
//! libvosk. So a hung SQLite thread or a wedged runtime gets the box restarted, where a plain timer
//! would keep feeding the watchdog through both. Outside systemd (no `NOTIFY_SOCKET`) all of it is off.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::events::{Snapshot, StateBus};
use crate::speech::stt::{ModelState, Stt};
use crate::store::Store;
use crate::telemetry::Throttle;

/// A recognizer busy this long with one item (a 20 ms frame, or one utterance's final result) is
/// hung: even a minute-long utterance decoded free-form on a cold recognizer takes less.
const RECOGNIZER_STUCK: Duration = Duration::from_secs(120);

/// The service manager's notification socket (`NOTIFY_SOCKET`).
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The socket systemd named, if it named one. A name that cannot be used is logged, not fatal:
    /// the box still runs (systemd then reports it as failing to start, which says why).
    pub fn from_env() -> Option<Self> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::open(name.as_encoded_bytes()) {
            Ok(notifier) => Some(notifier),
            Err(e) => {
                warn!("NOTIFY_SOCKET {:?} cannot be used ({e}): systemd is not told how the box is", name);
                None
            }
        }
    }

    /// `name`: a path, or `@name` for Linux's abstract namespace.
    pub fn open(name: &[u8]) -> std::io::Result<Self> {
        let addr = match name.strip_prefix(b"@") {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name)?
            }
            None => {
                use std::os::unix::ffi::OsStrExt;
                SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name))?
            }
        };
        let socket = UnixDatagram::unbound()?;
        // A datagram to a local socket never waits long; never let it block the runtime at all.
        socket.set_nonblocking(true)?;
        Ok(Self { socket, addr })
    }

    /// Sends one notification (`READY=1`, `STATUS=…`); failures are logged at most once a minute,
    /// with a count (a watchdog ping that cannot be sent would otherwise log every few seconds).
    pub fn send(&self, state: &str) {
        static FAILED: Throttle = Throttle::new(Duration::from_secs(60));
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            if let Some(more) = FAILED.check() {
                let what = state.split('=').next().unwrap_or(state);
                warn!("cannot notify systemd ({what}): {e} ({more} more such failures since the last line)");
            }
        }
    }
}

/// How often systemd wants to be fed (`WATCHDOG_USEC`), if this process is the one it watches.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok().filter(|u| *u > 0)?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// The parts whose answering proves the box alive.
#[derive(Debug, Clone)]
pub struct Health {
    pub store: Store,
    pub speech: Option<Stt>,
}

impl Health {
    /// `Ok` when every part answered within `within`; else which did not.
    pub async fn check(&self, within: Duration) -> Result<(), String> {
        // The loop asking runs on the runtime; a task of its own must run too (a runtime whose
        // workers are all blocked fails here).
        match tokio::time::timeout(within, tokio::spawn(async {})).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the async runtime cannot run tasks: {e}")),
            Err(_) => return Err(format!("the async runtime did not run a task within {} ms", within.as_millis())),
        }
        match tokio::time::timeout(within, self.store.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the call log does not answer: {e}")),
            Err(_) => return Err(format!("the call-log thread did not answer within {} ms", within.as_millis())),
        }
        if let Some(stt) = &self.speech {
            let busy = stt.longest_busy();
            if busy > RECOGNIZER_STUCK {
                return Err(format!("a speech recognizer has been stuck for {} s", busy.as_secs()));
            }
        }
        Ok(())
    }
}

/// Feeds the watchdog every half interval while `health` answers within a quarter of it.
pub async fn watchdog(notifier: Arc<Notifier>, every: Duration, health: Health, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match health.check(every / 4).await {
            Ok(()) => {
                if failing {
                    info!("the box answers again: feeding the watchdog");
                    failing = false;
                }
                notifier.send("WATCHDOG=1");
            }
            Err(why) => {
                if !failing {
                    error!("{why}: not feeding the watchdog (systemd restarts the box if this lasts)");
                    failing = true;
                }
            }
        }
    }
}

/// One line for `systemctl status`: what the box is, its speech model, how the phone reaches it.
pub fn status_line(snapshot: &Snapshot, speech: Option<&ModelState>) -> String {
    let state = match snapshot.state {
        crate::events::DeviceState::Starting => "starting",
        crate::events::DeviceState::Ready => "ready",
        crate::events::DeviceState::Offline => "offline",
        crate::events::DeviceState::Stopping => "stopping",
    };
    let mut parts = vec![state.to_owned()];
    match speech {
        Some(ModelState::Failed(why)) => parts.push(format!("speech model failed: {why}")),
        Some(model) => parts.push(format!("speech model {}", model.as_str())),
        None => {}
    }
    match (&snapshot.network.public_url, &snapshot.network.tunnel_down) {
        (Some(url), _) => parts.push(format!("reachable at {url}")),
        (None, Some(why)) => parts.push(format!("tunnel down: {why}")),
        (None, None) => {}
    }
    if let Some(fault) = &snapshot.fault {
        parts.push(format!("fault: {fault}"));
    }
    parts.join("; ")
}

/// Keeps systemd's status line current (on every change of the box's state, and of the model's).
async fn report_status(notifier: Arc<Notifier>, bus: StateBus, speech: Option<Stt>, stop: CancellationToken) {
    let mut watch = bus.watch();
    let mut last = String::new();
    loop {
        let line = status_line(&watch.borrow_and_update(), speech.as_ref().map(Stt::state).as_ref());
        if line != last {
            notifier.send(&format!("STATUS={line}"));
            last = line;
        }
        // The model's state is not on the bus: look again each second as well.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = watch.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The box's side of the service protocol, for as long as it runs.
#[derive(Debug)]
pub struct Service {
    notifier: Option<Arc<Notifier>>,
    stop: CancellationToken,
}

impl Service {
    /// Tells systemd the box is ready (call it once it listens) and starts the status reports and
    /// the watchdog. Does nothing outside systemd.
    pub fn ready(health: Health, bus: StateBus) -> Self {
        let stop = CancellationToken::new();
        let notifier = Notifier::from_env().map(Arc::new);
        if let Some(notifier) = &notifier {
            notifier.send("READY=1");
            tokio::spawn(report_status(notifier.clone(), bus, health.speech.clone(), stop.clone()));
            if let Some(every) = watchdog_interval() {
                info!("systemd watchdog: fed every {} ms while the box answers", (every / 2).as_millis());
                tokio::spawn(watchdog(notifier.clone(), every, health, stop.clone()));
            }
        }
        Self { notifier, stop }
    }

    /// Shutting down: no more feeds (a shutdown that hangs is the watchdog's to end).
    pub fn stopping(&self) {
        self.stop.cancel();
        if let Some(notifier) = &self.notifier {
            notifier.send("STOPPING=1");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        Notifier::open(path.as_os_str().as_encoded_bytes()).expect("path socket").send("READY=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("voca-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).expect("name")).expect("bind");
        Notifier::open(format!("@{name}").as_bytes()).expect("abstract socket").send("STOPPING=1");
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn the_status_line_says_state_model_and_reachability() {
        let mut snapshot = StateBus::default().snapshot();
        assert_eq!(status_line(&snapshot, Some(&ModelState::Loading)), "starting; speech model loading");
        snapshot.state = crate::events::DeviceState::Ready;
        snapshot.network.public_url = Some("https://kitchen.example/".into());
        assert_eq!(
            status_line(&snapshot, Some(&ModelState::Ready)),
            "ready; speech model ready; reachable at https://kitchen.example/"
        );
        snapshot.fault = Some("speaker: not found".into());
        assert!(status_line(&snapshot, None).ends_with("fault: speaker: not found"));
    }
}
