//! Audio on the box: G.711, resampling and pacing for the phone path; the ALSA devices.

pub mod device;
pub mod g711;
pub mod pacer;
pub mod resample;
pub mod vad;
pub mod wav;

/// The box's own sample rate: recognition, speech and the speaker and microphone threads all work
/// at 16 kHz mono; the phone leg is resampled to and from 8 kHz at its edge.
pub const BOX_RATE: u32 = 16_000;
