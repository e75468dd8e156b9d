//! Audio on the box: G.711, resampling and pacing for the phone path; the ALSA devices.

pub mod device;
pub mod g711;
pub mod pacer;
pub mod resample;
pub mod vad;
pub mod wav;
