//! ALSA devices: opening the configured capture and playback PCMs as 16-bit mono at the box's rate.
//! Blocking calls: used from the device threads and from `voca check`, never from async tasks.

use std::fmt;

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Capture,
    Playback,
}

impl Role {
    fn direction(self) -> Direction {
        match self {
            Role::Capture => Direction::Capture,
            Role::Playback => Direction::Playback,
        }
    }

    /// The configuration key that names the device for this role.
    pub fn config_key(self) -> &'static str {
        match self {
            Role::Capture => "device.capture",
            Role::Playback => "device.playback",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Capture => "capture",
            Role::Playback => "playback",
        })
    }
}

#[derive(Debug, Error)]
#[error("{role} device \"{name}\" (`{key}`) {what}: {source}; list devices with `arecord -L` / `aplay -L`", key = role.config_key())]
pub struct DeviceError {
    pub role: Role,
    pub name: String,
    pub what: &'static str,
    pub source: alsa::Error,
}

/// What a device agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub rate: u32,
    pub period_frames: usize,
    pub buffer_frames: usize,
}

/// Opens `name` for `role` as mono S16LE near `rate` Hz with a short period (low latency), and
/// returns the open PCM with what was negotiated.
pub fn open(name: &str, role: Role, rate: u32) -> Result<(PCM, Negotiated), DeviceError> {
    let err = |what: &'static str| move |source| DeviceError { role, name: name.to_owned(), what, source };
    let pcm = PCM::new(name, role.direction(), false).map_err(err("cannot be opened"))?;
    let negotiated = {
        let hw = HwParams::any(&pcm).map_err(err("reports no parameters"))?;
        hw.set_access(Access::RWInterleaved).map_err(err("does not support interleaved access"))?;
        hw.set_format(Format::s16()).map_err(err("does not support 16-bit samples"))?;
        hw.set_channels(1).map_err(err("does not support mono"))?;
        let rate = hw.set_rate_near(rate, ValueOr::Nearest).map_err(err("does not support the rate"))?;
        // 20 ms periods, four of them: small enough for an intercom, large enough not to underrun.
        let period = (rate / 50) as alsa::pcm::Frames;
        hw.set_period_size_near(period, ValueOr::Nearest).map_err(err("rejects the period size"))?;
        hw.set_buffer_size_near(period * 4).map_err(err("rejects the buffer size"))?;
        pcm.hw_params(&hw).map_err(err("rejects the parameters"))?;
        let current = pcm.hw_params_current().map_err(err("reports no parameters"))?;
        Negotiated {
            rate: current.get_rate().map_err(err("reports no rate"))?,
            period_frames: current.get_period_size().map_err(err("reports no period size"))? as usize,
            buffer_frames: current.get_buffer_size().map_err(err("reports no buffer size"))? as usize,
        }
    };
    Ok((pcm, negotiated))
}
