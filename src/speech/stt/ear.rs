//! One listener's queue: speech in (bounded, oldest let go first, its utterance marked missed),
//! transcripts out; a worker thread takes from it while leased.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::heard::{Heard, FRAME_16K};

// Frames travel by value in a queue whose slots are allocated once: no allocation per frame, at the
// price of every slot being frame-sized.
#[allow(clippy::large_enum_variant)]
pub(super) enum Item {
    Audio([i16; FRAME_16K]),
    /// The speaker has paused long enough that the utterance is probably over: decode what came
    /// so far now, so its end finds the work done. More audio may follow.
    Settle,
    /// The utterance is over; when it was said to be.
    End(Instant),
    /// The utterance lost audio to the bound: answer it with [`Heard::Missed`].
    Missed,
    /// A whole recording (a voicemail) to transcribe free-form, answered with one
    /// [`Heard::Final`].
    Recording(Arc<Vec<i16>>),
}

struct Queue {
    items: VecDeque<Item>,
    /// Audio frames among `items`.
    audio: usize,
    /// At most this many audio frames wait.
    bound: usize,
    /// The utterance still being spoken has lost audio (its end becomes `Missed`).
    open_lost: bool,
    /// Frames let go since the last [`Ear::take_dropped`].
    dropped: u64,
    results: VecDeque<Heard>,
    waker: Option<Arc<tokio::sync::Notify>>,
    /// No worker may take more from this ear (its lease ended).
    detached: bool,
    /// Since when the worker has been busy with the item it took last (`None` while it waits for
    /// one): a recognizer stuck inside libvosk shows here.
    working_since: Option<Instant>,
}

/// One listener's recognition queue: 20 ms frames and utterance ends in, transcripts out. The
/// listener owns it from its first frame; a worker serves it once leased ([`Stt::lease`]).
pub struct Ear {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl std::fmt::Debug for Ear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.lock();
        f.debug_struct("Ear").field("queued_frames", &q.audio).field("bound", &q.bound).finish()
    }
}

impl Ear {
    /// An ear that keeps at most `bound` of audio waiting.
    pub fn new(bound: Duration) -> Arc<Self> {
        let frames = (bound.as_millis() / 20).max(1) as usize;
        Arc::new(Self {
            queue: Mutex::new(Queue {
                // Room for 5 s of speech to start with; it grows (rarely) towards the bound.
                items: VecDeque::with_capacity(frames.min(256) + 16),
                audio: 0,
                bound: frames,
                open_lost: false,
                dropped: 0,
                results: VecDeque::new(),
                waker: None,
                detached: false,
                working_since: None,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues 20 ms of 16 kHz audio. Never blocks: past the bound the oldest frame is let go.
    pub fn push(&self, frame: &[i16; FRAME_16K]) {
        let mut q = self.lock();
        if q.audio >= q.bound {
            q.drop_oldest();
        }
        q.audio += 1;
        q.items.push_back(Item::Audio(*frame));
        drop(q);
        self.changed.notify_one();
    }

    /// The utterance is over: its transcript (or `Missed`) will follow. Never dropped.
    pub fn end_utterance(&self) {
        let mut q = self.lock();
        let item = if std::mem::take(&mut q.open_lost) { Item::Missed } else { Item::End(Instant::now()) };
        q.items.push_back(item);
        drop(q);
        self.changed.notify_one();
    }

    /// A whole recording to transcribe free-form (see [`Item::Recording`]). Never dropped.
    pub fn recording(&self, audio: Arc<Vec<i16>>) {
        self.lock().items.push_back(Item::Recording(audio));
        self.changed.notify_one();
    }

    /// The speaker has paused (see [`Item::Settle`]). Never dropped.
    pub fn settle(&self) {
        self.lock().items.push_back(Item::Settle);
        self.changed.notify_one();
    }

    /// Wakes `waker` whenever a result is ready.
    pub fn set_waker(&self, waker: Arc<tokio::sync::Notify>) {
        self.lock().waker = Some(waker);
    }

    /// The next result, if any, without waiting.
    pub fn poll(&self) -> Option<Heard> {
        self.lock().results.pop_front()
    }

    /// Waits for the next result (recordings, tests, benchmarks; never on the async runtime).
    pub fn wait(&self, timeout: Duration) -> Option<Heard> {
        let deadline = Instant::now() + timeout;
        let mut q = self.lock();
        loop {
            if let Some(heard) = q.results.pop_front() {
                return Some(heard);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            q = self.changed.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// How much audio waits for the recognizer.
    pub fn backlog(&self) -> Duration {
        Duration::from_millis(self.lock().audio as u64 * 20)
    }

    /// Frames let go to the bound since the last call.
    pub fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.lock().dropped)
    }

    pub(super) fn answer(&self, heard: Heard) {
        let waker = {
            let mut q = self.lock();
            q.results.push_back(heard);
            q.waker.clone()
        };
        self.changed.notify_all();
        if let Some(w) = waker {
            w.notify_one();
        }
    }

    /// The next item for the worker; `None` once the ear is detached.
    pub(super) fn next_item(&self) -> Option<Item> {
        let mut q = self.lock();
        q.working_since = None;
        loop {
            if q.detached {
                return None;
            }
            if let Some(item) = q.items.pop_front() {
                if matches!(item, Item::Audio(_)) {
                    q.audio -= 1;
                }
                q.working_since = Some(Instant::now());
                return Some(item);
            }
            q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// How long the worker has been busy with one item (a frame, a final result), if it is.
    pub(super) fn busy_for(&self) -> Option<Duration> {
        let q = self.lock();
        q.working_since.filter(|_| !q.detached).map(|since| since.elapsed())
    }

    pub(super) fn detach(&self) {
        self.lock().detached = true;
        self.changed.notify_all();
    }
}

impl Queue {
    /// Lets the oldest waiting frame go and marks its utterance as missed.
    fn drop_oldest(&mut self) {
        let Some(at) = self.items.iter().position(|i| matches!(i, Item::Audio(_))) else { return };
        self.items.remove(at);
        self.audio -= 1;
        self.dropped += 1;
        match self.items.iter_mut().skip(at).find(|i| matches!(i, Item::End(_) | Item::Missed)) {
            Some(end @ Item::End(_)) => *end = Item::Missed,
            Some(_) => {}
            None => self.open_lost = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(level: i16) -> [i16; FRAME_16K] {
        [level; FRAME_16K]
    }

    fn items(ear: &Ear) -> Vec<&'static str> {
        ear.lock()
            .items
            .iter()
            .map(|i| match i {
                Item::Audio(_) => "a",
                Item::Settle => "settle",
                Item::End(_) => "end",
                Item::Missed => "missed",
                Item::Recording(_) => "recording",
            })
            .collect()
    }

    #[test]
    fn an_ear_keeps_every_end_and_marks_only_the_utterance_that_lost_audio() {
        let ear = Ear::new(Duration::from_millis(80)); // four frames
        for _ in 0..2 {
            ear.push(&frame(1));
        }
        ear.end_utterance();
        for _ in 0..2 {
            ear.push(&frame(2));
        }
        ear.end_utterance();
        assert_eq!(items(&ear), ["a", "a", "end", "a", "a", "end"]);
        // Past the bound the oldest audio goes, and its utterance will be answered "missed".
        ear.push(&frame(3));
        assert_eq!(items(&ear), ["a", "missed", "a", "a", "end", "a"]);
        assert_eq!(ear.take_dropped(), 1);
        // The utterance still being spoken loses audio: its end is queued as missed.
        for _ in 0..4 {
            ear.push(&frame(4));
        }
        assert_eq!(items(&ear), ["missed", "missed", "a", "a", "a", "a"]);
        ear.end_utterance();
        assert_eq!(items(&ear).last(), Some(&"missed"));
        assert_eq!(ear.backlog(), Duration::from_millis(80));
        // The next utterance starts clean.
        ear.push(&frame(5));
        ear.end_utterance();
        assert_eq!(items(&ear).last(), Some(&"end"));
    }

    #[test]
    fn a_pause_is_never_let_go_nor_mistaken_for_the_end() {
        let ear = Ear::new(Duration::from_millis(60)); // three frames
        ear.push(&frame(1));
        ear.settle();
        ear.push(&frame(1));
        ear.end_utterance();
        ear.push(&frame(2));
        ear.push(&frame(2));
        // The first utterance's oldest frame goes: its end, past the pause, is marked missed.
        assert_eq!(items(&ear), ["settle", "a", "missed", "a", "a"]);
    }
}
