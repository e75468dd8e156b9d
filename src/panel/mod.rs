//! The box's panel: LEDs that show what it is doing and the buttons a person presses. One small
//! trait, [`Panel`], with two implementations chosen at start-up from `device.board`:
//! [`rpi::RpiPanel`] (GPIO through rppal, pins from a board profile) and [`sim::SimPanel`] (no
//! hardware: driven and observed over HTTP, for `make run` off a Pi and for tests).
//!
//! LED patterns derive from the state bus's snapshot in exactly one place: [`patterns`].

pub mod board;
pub mod press;
pub mod rpi;
pub mod sim;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::events::{Activity, DeviceState, Snapshot};

/// How an LED is lit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    #[default]
    Off,
    Solid,
    /// 1 Hz.
    SlowBlink,
    /// 4 Hz.
    FastBlink,
    /// Breathing, 2 s period.
    Pulse,
    /// Two short flashes a second: busy with something long (the speech model's download).
    DoubleBlink,
}

impl Pattern {
    /// Brightness (0.0-1.0) at `t` seconds into the pattern.
    pub fn level(self, t: f64) -> f64 {
        match self {
            Pattern::Off => 0.0,
            Pattern::Solid => 1.0,
            Pattern::SlowBlink => f64::from(u8::from(t.fract() < 0.5)),
            Pattern::FastBlink => f64::from(u8::from((t * 4.0).fract() < 0.5)),
            Pattern::Pulse => 0.5 - 0.5 * (std::f64::consts::PI * t).cos(),
            Pattern::DoubleBlink => f64::from(u8::from(matches!(t.fract(), p if p < 0.1 || (0.2..0.3).contains(&p)))),
        }
    }
}

/// What a button did. `Down`/`Up` are the raw edges (push-to-talk holds); `Short`, `Long` and
/// `Double` are classified presses, reported once the press is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Press {
    Down,
    Up,
    Short,
    Long,
    Double,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ButtonEvent {
    pub button: String,
    pub press: Press,
}

/// What a button is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonRole {
    /// Short: call the contact bound to this button's slot, answer a ringing call, or hang up.
    /// Long: the emergency chain. Double: play waiting messages.
    Call,
    /// Hold to talk to the assistant; a short press plays waiting messages or answers a ringing call.
    Talk,
}

/// What an LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum LedRole {
    /// Power and network: starting, online, offline, fault.
    Status,
    /// Calls: ringing, dialing, in a call, failed; listening/speaking for push-to-talk.
    Call,
    /// Missed calls and voicemail waiting to be heard.
    Missed,
}

/// The LEDs and buttons of a box.
pub trait Panel: Send + Sync + std::fmt::Debug {
    /// The board profile's name, for logs.
    fn board(&self) -> &str;
    /// Lights the LED that has `role` (a board without one ignores it).
    fn set_led(&self, role: LedRole, pattern: Pattern);
    /// Button events, as they happen.
    fn events(&self) -> broadcast::Receiver<ButtonEvent>;
    /// The buttons: name, role and call slot.
    fn buttons(&self) -> Vec<(String, ButtonRole, Option<u8>)>;
    /// LEDs off and pins released. Called once at shutdown.
    fn shutdown(&self);
}

/// The LED patterns for a snapshot of the box's state: the one place that decides them.
pub fn patterns(s: &Snapshot) -> [(LedRole, Pattern); 3] {
    let status = match (s.state, &s.fault) {
        (DeviceState::Stopping, _) => Pattern::Off,
        (_, Some(_)) => Pattern::FastBlink,
        _ if s.model_download.is_some() => Pattern::DoubleBlink,
        (DeviceState::Starting, None) => Pattern::Pulse,
        (DeviceState::Ready, None) => Pattern::Solid,
        (DeviceState::Offline, None) => Pattern::SlowBlink,
    };
    let call = match s.activity {
        Activity::Idle => Pattern::Off,
        Activity::Ringing | Activity::CallFailed => Pattern::FastBlink,
        Activity::Dialing | Activity::RingingOut => Pattern::SlowBlink,
        Activity::InCall => Pattern::Solid,
        Activity::Listening | Activity::Speaking => Pattern::Pulse,
    };
    let missed = if s.waiting > 0 && s.state != DeviceState::Stopping { Pattern::Solid } else { Pattern::Off };
    [(LedRole::Status, status), (LedRole::Call, call), (LedRole::Missed, missed)]
}

/// An open panel; the sim panel also as itself, for its HTTP routes.
#[derive(Debug)]
pub struct Opened {
    pub panel: std::sync::Arc<dyn Panel>,
    pub sim: Option<std::sync::Arc<sim::SimPanel>>,
}

/// Opens the panel `device.board` names: `sim`, or a board profile (shipped or a path).
pub fn open(board: &str) -> anyhow::Result<Opened> {
    let profile = board::Profile::load(board)?;
    if profile.sim {
        let sim = std::sync::Arc::new(sim::SimPanel::new(profile));
        return Ok(Opened { panel: sim.clone(), sim: Some(sim) });
    }
    Ok(Opened { panel: std::sync::Arc::new(rpi::RpiPanel::open(profile)?), sim: None })
}

/// A panel nobody can see or press, for a box whose board could not be opened (no GPIO access, a
/// wrong profile): it still answers calls and shows the fault everywhere else.
pub fn absent() -> Opened {
    let profile = board::Profile::load("sim").expect("the simulated board is built in");
    Opened { panel: std::sync::Arc::new(sim::SimPanel::new(profile)), sim: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(state: DeviceState, activity: Activity, waiting: u32, fault: Option<&str>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        (snapshot.state, snapshot.activity, snapshot.waiting) = (state, activity, waiting);
        snapshot.fault = fault.map(str::to_owned);
        snapshot
    }

    #[test]
    fn each_state_has_its_own_look() {
        let p = |s: Snapshot| patterns(&s).map(|(_, p)| p);
        use Pattern::*;
        assert_eq!(p(snapshot(DeviceState::Starting, Activity::Idle, 0, None)), [Pulse, Off, Off]);
        assert_eq!(p(snapshot(DeviceState::Ready, Activity::Idle, 0, None)), [Solid, Off, Off]);
        assert_eq!(p(snapshot(DeviceState::Offline, Activity::Idle, 0, None)), [SlowBlink, Off, Off]);
        assert_eq!(p(snapshot(DeviceState::Ready, Activity::Ringing, 0, None)), [Solid, FastBlink, Off]);
        assert_eq!(p(snapshot(DeviceState::Ready, Activity::Dialing, 0, None)), [Solid, SlowBlink, Off]);
        assert_eq!(p(snapshot(DeviceState::Ready, Activity::InCall, 2, None)), [Solid, Solid, Solid]);
        assert_eq!(
            p(snapshot(DeviceState::Offline, Activity::Listening, 0, Some("mic gone"))),
            [FastBlink, Pulse, Off]
        );
        assert_eq!(p(snapshot(DeviceState::Stopping, Activity::Idle, 3, None)), [Off, Off, Off]);
        let mut downloading = snapshot(DeviceState::Ready, Activity::InCall, 0, None);
        downloading.model_download = Some(40);
        assert_eq!(p(downloading.clone()), [DoubleBlink, Solid, Off], "the model downloading, a call meanwhile");
        downloading.fault = Some("mic gone".into());
        assert_eq!(p(downloading)[0], FastBlink, "a fault shows over the download");
    }

    #[test]
    fn patterns_have_the_documented_rhythm() {
        assert_eq!(Pattern::SlowBlink.level(0.25), 1.0);
        assert_eq!(Pattern::SlowBlink.level(0.75), 0.0);
        assert_eq!(Pattern::FastBlink.level(0.1), 1.0);
        assert_eq!(Pattern::FastBlink.level(0.2), 0.0);
        assert!(Pattern::Pulse.level(0.0) < 0.01 && Pattern::Pulse.level(1.0) > 0.99);
        let flashes: Vec<f64> =
            (0..10).map(|tenth| Pattern::DoubleBlink.level(f64::from(tenth) / 10.0 + 0.05)).collect();
        assert_eq!(flashes, [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "two flashes a second");
    }
}
