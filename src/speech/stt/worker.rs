//! A recognizer thread of the pool: it serves one ear at a time, computes on its own thread only
//! (no BLAS pool on top) and below real-time work in priority.

use std::sync::Arc;

use super::decode::Recognizers;
use super::model::Shared;
use super::Ear;

/// Recognition yields the CPU to what must keep real time (paced audio, the answers' synthesis,
/// HTTP): a recognizer that falls behind loses nothing, its ear queues. Linux nice +15 for the
/// calling thread only: nice is weighed per thread, so twenty recognizers at a milder +5 together
/// still outweighed the one TTS thread several times over when twenty calls ended a turn at once.
pub(super) fn below_real_time_work() {
    // SAFETY: setpriority(2) on this thread's own id; no memory is passed.
    let done = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 15)
    };
    if done != 0 {
        tracing::debug!("recognizer thread priority unchanged: {}", std::io::Error::last_os_error());
    }
}

/// A recognizer thread, waiting for ears to serve. Dropping it stops and joins the thread (a
/// recognizer must not outlive the process's teardown of libvosk).
pub(super) struct Worker {
    ears: Option<std::sync::mpsc::Sender<Arc<Ear>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.ears.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Worker {
    /// Starts a worker; with `warm_up`, it decodes that audio first and this waits until it has.
    pub(super) fn spawn(shared: Arc<Shared>, warm_up: Option<Arc<Vec<i16>>>) -> Option<Self> {
        let (ears, incoming) = std::sync::mpsc::channel::<Arc<Ear>>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let warming = warm_up.is_some();
        let thread = std::thread::Builder::new()
            .name("voca-stt".into())
            .spawn(move || {
                below_real_time_work();
                let Some(mut recognizers) = Recognizers::new(shared) else {
                    tracing::error!("libvosk could not make a recognizer from the loaded model");
                    let _ = ready_tx.send(false);
                    return;
                };
                if let Some(audio) = &warm_up {
                    recognizers.warm(audio);
                }
                let _ = ready_tx.send(true);
                for ear in incoming {
                    recognizers.serve(&ear);
                }
            })
            .ok()?;
        let worker = Self { ears: Some(ears), thread: Some(thread) };
        if warming {
            ready_rx.recv().ok().filter(|ok| *ok)?;
        }
        Some(worker)
    }

    pub(super) fn serve(&self, ear: Arc<Ear>) -> bool {
        self.ears.as_ref().is_some_and(|tx| tx.send(ear).is_ok())
    }
}
