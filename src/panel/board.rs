//! Board profiles: which GPIO pins (BCM numbers) the LEDs and buttons use, and how they are wired.
//! `sim` is built in; `pi-generic` and `respeaker-2mic` ship with the binary (from `board/`); any
//! other value of `device.board` is read as a path to a profile of the same shape.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::{ButtonRole, LedRole};

const SHIPPED: &[(&str, &str)] = &[
    ("pi-generic", include_str!("../../board/pi-generic.toml")),
    ("respeaker-2mic", include_str!("../../board/respeaker-2mic.toml")),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Led {
    pub role: LedRole,
    pub pin: u8,
    #[serde(default)]
    pub active_low: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Button {
    pub name: String,
    pub role: ButtonRole,
    /// For call buttons: the contact with `button = slot` is called.
    #[serde(default)]
    pub slot: Option<u8>,
    pub pin: u8,
    /// Pressed pulls the pin low (button to ground, internal pull-up): the usual wiring.
    #[serde(default = "yes")]
    pub active_low: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pixel {
    pub role: LedRole,
    pub index: usize,
    pub color: [u8; 3],
}

/// APA102 ("DotStar") RGB LEDs on an SPI bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apa102 {
    pub bus: u8,
    pub chip_select: u8,
    pub count: usize,
    /// Global brightness, 0-31.
    pub brightness: u8,
    pub leds: Vec<Pixel>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub leds: Vec<Led>,
    #[serde(default)]
    pub buttons: Vec<Button>,
    #[serde(default)]
    pub apa102: Option<Apa102>,
    /// The simulated board (no hardware).
    #[serde(skip)]
    pub sim: bool,
}

impl Profile {
    /// The simulated board: the three LEDs, two call buttons (slots 1 and 2) and a talk button.
    pub fn sim() -> Self {
        let led = |role| Led { role, pin: 0, active_low: false };
        let button = |name: &str, role, slot| Button { name: name.into(), role, slot, pin: 0, active_low: false };
        Self {
            name: "sim".into(),
            description: "simulated board: press buttons with POST /sim/buttons/{name}, see LEDs at GET /sim/leds"
                .into(),
            leds: vec![led(LedRole::Status), led(LedRole::Call), led(LedRole::Missed)],
            buttons: vec![
                button("call", ButtonRole::Call, Some(1)),
                button("call2", ButtonRole::Call, Some(2)),
                button("talk", ButtonRole::Talk, None),
            ],
            apa102: None,
            sim: true,
        }
    }

    /// `sim`, a shipped profile's name, or a path to a profile file.
    pub fn load(board: &str) -> anyhow::Result<Self> {
        if board == "sim" {
            return Ok(Self::sim());
        }
        let (origin, text) = match SHIPPED.iter().find(|(name, _)| *name == board) {
            Some((name, text)) => (format!("the shipped board profile {name}"), (*text).to_owned()),
            None => {
                let path = Path::new(board);
                let text = std::fs::read_to_string(path).with_context(|| {
                    let shipped: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
                    format!(
                        "`device.board` = {board:?}: not \"sim\", a shipped profile ({}) or a readable profile file",
                        shipped.join(", ")
                    )
                })?;
                (format!("the board profile {}", path.display()), text)
            }
        };
        let profile: Profile = toml::from_str(&text).with_context(|| format!("{origin} is not valid"))?;
        profile.validate().with_context(|| format!("{origin} is not valid"))?;
        Ok(profile)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut pins: Vec<u8> = self.leds.iter().map(|l| l.pin).chain(self.buttons.iter().map(|b| b.pin)).collect();
        if self.apa102.is_some() {
            // SPI0's MOSI and SCLK.
            pins.extend([10, 11]);
        }
        pins.sort_unstable();
        if let Some(w) = pins.windows(2).find(|w| w[0] == w[1]) {
            bail!("BCM pin {} is used twice", w[0]);
        }
        if let Some(pin) = pins.iter().find(|p| **p > 27) {
            bail!("BCM pin {pin} does not exist on the 40-pin header (0-27)");
        }
        for b in &self.buttons {
            if b.role == ButtonRole::Call && b.slot.is_none() {
                bail!("call button {:?} needs a `slot` (the contacts' `button = N`)", b.name);
            }
        }
        if let Some(apa) = &self.apa102 {
            if apa.brightness > 31 {
                bail!("apa102.brightness is {}: expected 0 to 31", apa.brightness);
            }
            if let Some(p) = apa.leds.iter().find(|p| p.index >= apa.count) {
                bail!("apa102 LED index {} is beyond apa102.count = {}", p.index, apa.count);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profiles_load() {
        for (name, _) in SHIPPED {
            let p = Profile::load(name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(&p.name, name);
            assert!(p.buttons.iter().any(|b| b.role == ButtonRole::Talk), "{name} has a talk button");
            assert!(p.buttons.iter().any(|b| b.role == ButtonRole::Call && b.slot == Some(1)));
        }
        assert!(Profile::load("sim").expect("sim").sim);
    }

    #[test]
    fn a_bad_profile_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mine.toml");
        let write = |text: &str| std::fs::write(&path, text).expect("write");
        let load = || Profile::load(path.to_str().expect("utf-8")).expect_err("invalid");
        write("name = \"x\"\ndescription = \"\"\n[[leds]]\nrole = \"status\"\npin = 5\n[[buttons]]\nname = \"b\"\nrole = \"talk\"\npin = 5\n");
        assert!(format!("{:#}", load()).contains("BCM pin 5 is used twice"));
        write("name = \"x\"\ndescription = \"\"\n[[leds]]\nrole = \"status\"\npin = 40\n");
        assert!(format!("{:#}", load()).contains("BCM pin 40 does not exist"));
        write("name = \"x\"\ndescription = \"\"\n[[leds]]\nrole = \"siren\"\npin = 4\n");
        let e = format!("{:#}", load());
        assert!(e.contains("mine.toml") && e.contains("siren"), "{e}");
        let e = Profile::load("no-such-board").expect_err("unknown");
        assert!(format!("{e:#}").contains("pi-generic"), "{e:#}");
    }
}
