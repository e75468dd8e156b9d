//! The Raspberry Pi panel: LEDs and buttons on GPIO through rppal, as a board profile wires them.
//! Buttons are read by interrupt (both edges, 20 ms debounce) and classified by the shared press
//! detector on a thread of their own; LEDs are animated by another thread (software PWM for
//! `pulse`), or drawn on APA102 pixels over SPI. `shutdown` turns everything off and releases the pins.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rppal::gpio::{Gpio, InputPin, OutputPin, Trigger};
use rppal::spi::{Bus, Mode, SlaveSelect, Spi};
use tokio::sync::broadcast;
use tracing::warn;

use super::board::{Apa102, Profile};
use super::press::{Detector, Timing};
use super::{ButtonEvent, ButtonRole, LedRole, Panel, Pattern};

const DEBOUNCE: Duration = Duration::from_millis(20);
const FRAME: Duration = Duration::from_millis(25);

type Patterns = Arc<Mutex<BTreeMap<LedRole, Pattern>>>;

pub struct RpiPanel {
    profile: Profile,
    patterns: Patterns,
    events: broadcast::Sender<ButtonEvent>,
    stop: Arc<AtomicBool>,
    animator: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held so their interrupts stay armed; dropped (released) at shutdown.
    inputs: Mutex<Vec<InputPin>>,
}

impl std::fmt::Debug for RpiPanel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpiPanel").field("board", &self.profile.name).finish_non_exhaustive()
    }
}

enum Lights {
    Gpio(Vec<(LedRole, OutputPin, bool)>),
    Pixels(Spi, Apa102),
}

impl RpiPanel {
    pub fn open(profile: Profile) -> anyhow::Result<Self> {
        let gpio = Gpio::new().with_context(|| {
            format!(
                "board {:?} needs the Raspberry Pi's GPIO, which is not available here; without a Pi use `device.board = \"sim\"`",
                profile.name
            )
        })?;
        let lights = match &profile.apa102 {
            Some(apa) => {
                let bus = match apa.bus {
                    0 => Bus::Spi0,
                    1 => Bus::Spi1,
                    n => anyhow::bail!("apa102.bus = {n}: expected 0 or 1"),
                };
                let ss = match apa.chip_select {
                    0 => SlaveSelect::Ss0,
                    1 => SlaveSelect::Ss1,
                    n => anyhow::bail!("apa102.chip_select = {n}: expected 0 or 1"),
                };
                let spi = Spi::new(bus, ss, 4_000_000, Mode::Mode0).with_context(|| {
                    format!("cannot open SPI{} for the APA102 LEDs: is SPI enabled (raspi-config)?", apa.bus)
                })?;
                Lights::Pixels(spi, apa.clone())
            }
            None => Lights::Gpio(
                profile
                    .leds
                    .iter()
                    .map(|led| {
                        let pin =
                            gpio.get(led.pin).with_context(|| format!("LED {:?} on BCM {}", led.role, led.pin))?;
                        Ok((led.role, pin.into_output_low(), led.active_low))
                    })
                    .collect::<anyhow::Result<_>>()?,
            ),
        };
        let (events, _) = broadcast::channel(64);
        let (edges_tx, edges) = mpsc::channel::<(String, bool)>();
        let mut inputs = Vec::new();
        for button in &profile.buttons {
            let pin =
                gpio.get(button.pin).with_context(|| format!("button {:?} on BCM {}", button.name, button.pin))?;
            let mut input = if button.active_low { pin.into_input_pullup() } else { pin.into_input_pulldown() };
            let (name, active_low, tx) = (button.name.clone(), button.active_low, edges_tx.clone());
            input
                .set_async_interrupt(Trigger::Both, Some(DEBOUNCE), move |event| {
                    let pressed = (event.trigger == Trigger::FallingEdge) == active_low;
                    let _ = tx.send((name.clone(), pressed));
                })
                .with_context(|| format!("cannot watch button {:?} on BCM {}", button.name, button.pin))?;
            inputs.push(input);
        }
        drop(edges_tx);
        spawn_detector(edges, events.clone());
        let patterns: Patterns = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let animator = spawn_animator(lights, patterns.clone(), stop.clone());
        Ok(Self { profile, patterns, events, stop, animator: Mutex::new(Some(animator)), inputs: Mutex::new(inputs) })
    }
}

/// Classifies edges into presses; wakes for pending short presses.
fn spawn_detector(edges: mpsc::Receiver<(String, bool)>, events: broadcast::Sender<ButtonEvent>) {
    std::thread::Builder::new()
        .name("voca-buttons".into())
        .spawn(move || {
            let mut detectors: BTreeMap<String, Detector> = BTreeMap::new();
            loop {
                let deadline = detectors.values().filter_map(Detector::deadline).min();
                let wait = deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
                match edges.recv_timeout(wait) {
                    Ok((button, pressed)) => {
                        let detector =
                            detectors.entry(button.clone()).or_insert_with(|| Detector::new(Timing::default()));
                        for press in detector.edge(pressed, Instant::now()) {
                            let _ = events.send(ButtonEvent { button: button.clone(), press });
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                for (button, detector) in &mut detectors {
                    if let Some(press) = detector.tick(Instant::now()) {
                        let _ = events.send(ButtonEvent { button: button.clone(), press });
                    }
                }
            }
        })
        .expect("spawn the button thread");
}

fn spawn_animator(mut lights: Lights, patterns: Patterns, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("voca-leds".into())
        .spawn(move || {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t = started.elapsed().as_secs_f64();
                let current = patterns.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let level = |role| current.get(&role).copied().unwrap_or_default().level(t);
                draw(&mut lights, &level);
                std::thread::sleep(FRAME);
            }
            draw(&mut lights, &|_| 0.0);
        })
        .expect("spawn the LED thread")
}

fn draw(lights: &mut Lights, level: &dyn Fn(LedRole) -> f64) {
    match lights {
        Lights::Gpio(pins) => {
            for (role, pin, active_low) in pins.iter_mut() {
                let l = level(*role);
                let result = if l > 0.0 && l < 1.0 {
                    let duty = if *active_low { 1.0 - l } else { l };
                    pin.set_pwm_frequency(200.0, duty)
                } else {
                    let on = (l >= 1.0) != *active_low;
                    let r = pin.clear_pwm();
                    if on {
                        pin.set_high()
                    } else {
                        pin.set_low()
                    }
                    r
                };
                if let Err(e) = result {
                    warn!("LED {role:?}: {e}");
                }
            }
        }
        Lights::Pixels(spi, apa) => {
            // Start frame, one 4-byte frame per pixel (brightness, blue, green, red), end frame.
            let mut frame = vec![0u8; 4];
            let mut pixels = vec![[0u8; 3]; apa.count];
            for p in &apa.leds {
                let l = level(p.role);
                pixels[p.index] = p.color.map(|c| (f64::from(c) * l).round() as u8);
            }
            for [r, g, b] in pixels {
                frame.extend([0xE0 | apa.brightness.min(31), b, g, r]);
            }
            frame.extend(std::iter::repeat_n(0xFF, apa.count.div_ceil(16).max(1)));
            if let Err(e) = spi.write(&frame) {
                warn!("APA102 LEDs: {e}");
            }
        }
    }
}

impl Panel for RpiPanel {
    fn board(&self) -> &str {
        &self.profile.name
    }

    fn set_led(&self, role: LedRole, pattern: Pattern) {
        self.patterns.lock().unwrap_or_else(|e| e.into_inner()).insert(role, pattern);
    }

    fn events(&self) -> broadcast::Receiver<ButtonEvent> {
        self.events.subscribe()
    }

    fn buttons(&self) -> Vec<(String, ButtonRole, Option<u8>)> {
        self.profile.buttons.iter().map(|b| (b.name.clone(), b.role, b.slot)).collect()
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(animator) = self.animator.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = animator.join();
        }
        // Dropping the pins clears their interrupts and restores their previous mode.
        self.inputs.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
