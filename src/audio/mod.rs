//! Audio on the box: the ALSA capture and playback devices.

pub mod device;
