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

/// One 20 ms frame at the box's 16 kHz rate.
pub type Frame = [i16; 320];
const FRAME_LEN: usize = 320;
const FRAME_TIME: std::time::Duration = std::time::Duration::from_millis(20);
/// How far ahead of real time a device thread may run. Real devices block before this (their buffer
/// is 4 periods); file-backed test devices have no clock and are held to it instead.
const LEAD: std::time::Duration = std::time::Duration::from_millis(60);
/// A device that fails is reopened after this long, doubling up to 5 s.
const REOPEN_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const REOPEN_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// A device thread's handle, shared by the clones of its owner: `shutdown` wakes it, `join` waits.
type Joiner = std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>;

fn wake(thread: &Joiner) {
    if let Some(handle) = thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
        handle.thread().unpark();
    }
}

/// Starts a device thread called `name`, its handle kept in `thread`.
fn spawn(thread: &Joiner, name: &str, run: impl FnOnce() + Send + 'static) {
    match std::thread::Builder::new().name(name.into()).spawn(run) {
        Ok(handle) => *thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle),
        Err(e) => tracing::error!("cannot start the {name} thread: {e}"),
    }
}

/// Waits for a device thread to end (after its `shutdown`). Blocking: call it off the runtime.
fn join(thread: &Joiner) {
    let handle = thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    if let Some(handle) = handle {
        let _ = handle.join();
    }
}

/// Reports device trouble and recovery (shown on the status LED).
pub type FaultReporter = std::sync::Arc<dyn Fn(Role, Option<String>) + Send + Sync>;

/// Keeps a thread from running ahead of the wall clock by more than [`LEAD`].
struct Clock {
    start: std::time::Instant,
    frames: u32,
}

impl Clock {
    fn new() -> Self {
        Self { start: std::time::Instant::now(), frames: 0 }
    }

    fn tick(&mut self) {
        self.frames += 1;
        let due = self.start + FRAME_TIME * self.frames;
        let now = std::time::Instant::now();
        if due > now + LEAD {
            std::thread::sleep(due - now - LEAD);
        } else if now > due + std::time::Duration::from_secs(1) {
            // Far behind (the device stalled): start counting again rather than rush to catch up.
            *self = Self::new();
        }
    }
}

#[derive(Debug, Default)]
struct SpeakerQueue {
    samples: std::collections::VecDeque<i16>,
    /// Intercom mode: a jitter buffer with a cap, so a burst or clock drift cannot build up delay.
    stream: bool,
    /// In stream mode, playback (re)starts once this much is buffered.
    primed: bool,
}

/// The speaker: a thread that keeps the playback device open and writes 20 ms periods, from a
/// queue of 16 kHz audio (converted to the device's rate) or silence when there is none.
#[derive(Clone)]
pub struct Speaker {
    queue: std::sync::Arc<std::sync::Mutex<SpeakerQueue>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Joiner,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker").finish_non_exhaustive()
    }
}

/// Intercom playback: the far end's audio with a small jitter buffer.
const STREAM_PRIME: usize = 2 * FRAME_LEN;
const STREAM_CAP: usize = 8 * FRAME_LEN;
const STREAM_TRIM_TO: usize = 3 * FRAME_LEN;

impl Speaker {
    /// Starts the speaker thread on ALSA device `name` near `rate` Hz.
    pub fn start(name: &str, rate: u32, faults: FaultReporter) -> Self {
        let speaker = Self { queue: Default::default(), stop: Default::default(), thread: Default::default() };
        let (thread_speaker, name) = (speaker.clone(), name.to_owned());
        spawn(&speaker.thread, "voca-speaker", move || thread_speaker.run(&name, rate, &faults));
        speaker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpeakerQueue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues 16 kHz audio after whatever is playing.
    pub fn play(&self, samples: &[i16]) {
        self.lock().samples.extend(samples);
    }

    /// Drops everything queued (e.g. the ring tone once the call is answered).
    pub fn stop_playing(&self) {
        self.lock().samples.clear();
    }

    /// Audio still queued.
    pub fn is_playing(&self) -> bool {
        !self.lock().samples.is_empty()
    }

    /// Waits until everything queued has been played (or `limit` passes).
    pub async fn finished(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.is_playing() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(FRAME_TIME).await;
        }
    }

    /// Intercom mode on or off: far-end frames go through a small jitter buffer.
    pub fn set_streaming(&self, on: bool) {
        let mut q = self.lock();
        q.stream = on;
        q.primed = false;
        if !on {
            q.samples.clear();
        }
    }

    /// One far-end frame in intercom mode.
    pub fn push_frame(&self, frame: &[i16]) {
        let mut q = self.lock();
        q.samples.extend(frame);
        if q.samples.len() > STREAM_CAP {
            let excess = q.samples.len() - STREAM_TRIM_TO;
            q.samples.drain(..excess);
        }
    }

    /// Stops the thread (what is queued is not played); `join` waits for it.
    pub fn shutdown(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        wake(&self.thread);
    }

    /// Blocking: call it off the runtime.
    pub fn join(&self) {
        join(&self.thread);
    }

    /// The next period's 16 kHz samples: queued audio, then silence.
    fn next_period(&self, out: &mut [i16; FRAME_LEN]) {
        let mut q = self.lock();
        if q.stream && !q.primed {
            if q.samples.len() < STREAM_PRIME {
                out.fill(0);
                return;
            }
            q.primed = true;
        }
        let n = q.samples.len().min(FRAME_LEN);
        for (o, s) in out.iter_mut().zip(q.samples.drain(..n)) {
            *o = s;
        }
        out[n..].fill(0);
        if q.stream && n < FRAME_LEN {
            // Ran dry: wait for the buffer to fill again before resuming.
            q.primed = false;
        }
    }

    fn run(&self, name: &str, rate: u32, faults: &FaultReporter) {
        let mut pause = REOPEN_FIRST;
        while !self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            match open(name, Role::Playback, rate) {
                Ok((pcm, negotiated)) => {
                    pause = REOPEN_FIRST;
                    if let Err(e) = self.play_on(&pcm, negotiated.rate, faults) {
                        tracing::warn!("speaker {name:?}: {e}; reopening");
                        faults(Role::Playback, Some(format!("speaker {name:?}: {e}")));
                    }
                }
                Err(e) => {
                    faults(Role::Playback, Some(e.to_string()));
                    self.stop_playing();
                    // Woken early by `shutdown`.
                    std::thread::park_timeout(pause);
                    pause = (pause * 2).min(REOPEN_MAX);
                }
            }
        }
    }

    /// Writes periods until the device fails (returned) or the speaker stops (Ok).
    /// The fault is cleared once a period has actually been written (opening can succeed on a device
    /// that then fails at once).
    fn play_on(&self, pcm: &PCM, device_rate: u32, faults: &FaultReporter) -> Result<(), alsa::Error> {
        let io = pcm.io_i16()?;
        let mut convert = crate::audio::resample::Converter::new(crate::audio::BOX_RATE, device_rate);
        let mut period = [0i16; FRAME_LEN];
        let mut clock = Clock::new();
        while !self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            self.next_period(&mut period);
            let out = if device_rate == crate::audio::BOX_RATE { period.to_vec() } else { convert.push(&period) };
            let mut written = 0;
            while written < out.len() {
                match io.writei(&out[written..]) {
                    Ok(n) => written += n,
                    // Underrun or suspend: recover and carry on; anything else means the device is gone.
                    Err(e) => pcm.try_recover(e, true)?,
                }
            }
            if clock.frames == 0 {
                faults(Role::Playback, None);
            }
            clock.tick();
        }
        let _ = pcm.drain();
        Ok(())
    }
}

/// The microphone: a thread that captures only while someone listens, converts to 16 kHz and hands
/// out 20 ms frames to every listener.
#[derive(Clone)]
pub struct Microphone {
    shared: std::sync::Arc<MicShared>,
    thread: Joiner,
}

struct Listener {
    frames: tokio::sync::mpsc::Sender<Box<Frame>>,
    wake: Option<std::sync::Arc<tokio::sync::Notify>>,
}

#[derive(Default)]
struct MicShared {
    listeners: std::sync::Mutex<Vec<Listener>>,
    changed: std::sync::Condvar,
    stop: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Microphone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Microphone").finish_non_exhaustive()
    }
}

impl Microphone {
    pub fn start(name: &str, rate: u32, faults: FaultReporter) -> Self {
        let mic = Self { shared: Default::default(), thread: Default::default() };
        let (thread_mic, name) = (mic.clone(), name.to_owned());
        spawn(&mic.thread, "voca-microphone", move || thread_mic.run(&name, rate, &faults));
        mic
    }

    /// Starts hearing the microphone: 20 ms frames at 16 kHz until the receiver is dropped. A full
    /// receiver loses frames rather than delaying the others. `wake` is notified after each frame.
    pub fn listen(&self, wake: Option<std::sync::Arc<tokio::sync::Notify>>) -> tokio::sync::mpsc::Receiver<Box<Frame>> {
        let (frames, rx) = tokio::sync::mpsc::channel(50);
        self.shared.listeners.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Listener { frames, wake });
        self.shared.changed.notify_all();
        rx
    }

    pub fn shutdown(&self) {
        self.shared.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.shared.changed.notify_all();
        wake(&self.thread);
    }

    /// Blocking: call it off the runtime.
    pub fn join(&self) {
        join(&self.thread);
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blocks until someone listens (true) or the microphone stops (false).
    fn wait_for_listeners(&self) -> bool {
        let mut listeners = self.shared.listeners.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            listeners.retain(|l| !l.frames.is_closed());
            if self.stopped() {
                return false;
            }
            if !listeners.is_empty() {
                return true;
            }
            listeners = self
                .shared
                .changed
                .wait_timeout(listeners, std::time::Duration::from_millis(200))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Hands a frame to each listener; returns whether anyone still listens.
    fn deliver(&self, frame: &Frame) -> bool {
        let mut listeners = self.shared.listeners.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        listeners.retain(|l| !l.frames.is_closed());
        for l in listeners.iter() {
            if l.frames.try_send(Box::new(*frame)).is_ok() {
                if let Some(w) = &l.wake {
                    w.notify_one();
                }
            }
        }
        !listeners.is_empty()
    }

    fn run(&self, name: &str, rate: u32, faults: &FaultReporter) {
        let mut pause = REOPEN_FIRST;
        while self.wait_for_listeners() {
            match open(name, Role::Capture, rate) {
                Ok((pcm, negotiated)) => {
                    pause = REOPEN_FIRST;
                    if let Err(e) = self.capture_from(&pcm, negotiated, faults) {
                        tracing::warn!("microphone {name:?}: {e}; reopening");
                        faults(Role::Capture, Some(format!("microphone {name:?}: {e}")));
                    }
                }
                Err(e) => {
                    faults(Role::Capture, Some(e.to_string()));
                    std::thread::park_timeout(pause);
                    pause = (pause * 2).min(REOPEN_MAX);
                }
            }
        }
    }

    /// Captures while anyone listens (Ok once nobody does) or until the device fails.
    fn capture_from(&self, pcm: &PCM, negotiated: Negotiated, faults: &FaultReporter) -> Result<(), alsa::Error> {
        let io = pcm.io_i16()?;
        pcm.start().or_else(|e| pcm.try_recover(e, true))?;
        let mut convert = crate::audio::resample::Converter::new(negotiated.rate, crate::audio::BOX_RATE);
        let mut period = vec![0i16; (negotiated.rate / 50) as usize];
        let mut pending: Vec<i16> = Vec::with_capacity(2 * FRAME_LEN);
        let mut frame = [0i16; FRAME_LEN];
        let mut clock = Clock::new();
        while !self.stopped() {
            let n = match io.readi(&mut period) {
                Ok(n) => n,
                Err(e) => {
                    pcm.try_recover(e, true)?;
                    continue;
                }
            };
            if negotiated.rate == crate::audio::BOX_RATE {
                pending.extend_from_slice(&period[..n]);
            } else {
                pending.extend(convert.push(&period[..n]));
            }
            if clock.frames == 0 {
                faults(Role::Capture, None);
            }
            while pending.len() >= FRAME_LEN {
                frame.copy_from_slice(&pending[..FRAME_LEN]);
                pending.drain(..FRAME_LEN);
                if !self.deliver(&frame) {
                    let _ = pcm.drop();
                    return Ok(());
                }
                clock.tick();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaker() -> Speaker {
        Speaker { queue: Default::default(), stop: Default::default(), thread: Default::default() }
    }

    #[test]
    fn intercom_playback_primes_two_frames_and_never_builds_up_delay() {
        let s = speaker();
        s.set_streaming(true);
        let mut period = [0i16; FRAME_LEN];
        s.push_frame(&[1; FRAME_LEN]);
        s.next_period(&mut period);
        assert_eq!(period, [0; FRAME_LEN], "one frame is not enough to start: silence while priming");
        s.push_frame(&[2; FRAME_LEN]);
        s.next_period(&mut period);
        assert_eq!(period, [1; FRAME_LEN], "two frames buffered: playback starts with the oldest");
        // A burst of 20 frames (the network stalled, then delivered): only the newest few are kept.
        for n in 0..20 {
            s.push_frame(&[100 + n; FRAME_LEN]);
        }
        assert!(s.lock().samples.len() <= STREAM_CAP, "at most {} ms buffered", STREAM_CAP / 16);
        s.next_period(&mut period);
        assert!(period[0] >= 100 + 20 - (STREAM_CAP / FRAME_LEN) as i16, "old audio was dropped: {}", period[0]);
    }

    #[test]
    fn utterances_play_whole_then_silence() {
        let s = speaker();
        s.play(&[7; FRAME_LEN + 10]);
        let mut period = [0i16; FRAME_LEN];
        s.next_period(&mut period);
        assert_eq!(period, [7; FRAME_LEN]);
        s.next_period(&mut period);
        assert_eq!(&period[..10], &[7; 10]);
        assert!(period[10..].iter().all(|&x| x == 0));
        assert!(!s.is_playing());
        s.play(&[1; 5000]);
        s.stop_playing();
        assert!(!s.is_playing(), "stop drops what was queued");
    }
}
