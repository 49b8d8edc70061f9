//! The state one run shares between its tasks and its output stream.
//!
//! # Implementation notes
//!
//! Stopping is one path, [`RunShared::halt`]: cancel the run's token, close
//! every channel (waiters wake; blocked senders get their item back; blocking
//! workers see `None` and return), and abort every async task (an in-flight
//! stage future is dropped at its next `.await`). Tasks spawned after a halt are
//! aborted as they are registered, so a failure during start-up cannot miss one.
//!
//! The first error is recorded under a lock before the halt; every later one
//! (items failing while stopping, a cancellation that raced) goes to
//! `later`, never over it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::channel::{channel, Channel, Receiver, Sender};
use super::error::PipelineError;
use super::events::{EventHub, PipelineEvent};
use super::stats::StageShared;

/// An item travelling between stages: its input index, and its value or (in
/// continue-on-error mode) the failure that stands in for it.
pub(crate) struct Env<T, E> {
    pub(crate) index: u64,
    pub(crate) item: Result<T, Box<PipelineError<E>>>,
}

/// Something [`RunShared::halt`] closes.
pub(crate) trait Close: Send + Sync {
    fn close(&self);
}

impl<T: Send> Close for Channel<T> {
    fn close(&self) {
        Channel::close(self);
    }
}

struct Errors<E> {
    first: Option<PipelineError<E>>,
    /// Set once the stream handed `first` to the caller.
    first_taken: bool,
    later: Vec<PipelineError<E>>,
}

/// A value alone on its cache line (128 bytes: two lines, for the adjacent
/// line prefetcher).
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

pub(crate) struct RunShared<E> {
    pub(crate) stop: CancellationToken,
    halted: AtomicBool,
    errors: Mutex<Errors<E>>,
    closers: Mutex<Vec<Arc<dyn Close>>>,
    aborts: Mutex<Vec<AbortHandle>>,
    pub(crate) events: EventHub,
    pub(crate) continue_on_error: bool,
    /// Written by the source once per batch: on a cache line of its own, away
    /// from `halted`, which every worker reads per item (sharing a line made
    /// every batch of the source a cache miss for every worker).
    pub(crate) produced: Padded<AtomicU64>,
    live_stages: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks, so a poisoned one is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<E> RunShared<E> {
    pub(crate) fn new(continue_on_error: bool, stages: usize) -> Self {
        let events = super::events::hub();
        if stages == 0 {
            // Nothing will run: the event streams are over before they start.
            super::events::finish(&events);
        }
        RunShared {
            stop: CancellationToken::new(),
            halted: AtomicBool::new(false),
            errors: Mutex::new(Errors {
                first: None,
                first_taken: false,
                later: Vec::new(),
            }),
            closers: Mutex::new(Vec::new()),
            aborts: Mutex::new(Vec::new()),
            events,
            continue_on_error,
            produced: Padded(AtomicU64::new(0)),
            live_stages: AtomicUsize::new(stages),
        }
    }

    /// Records `err`: the first one stops the run, later ones are kept beside it.
    pub(crate) fn fail(&self, err: PipelineError<E>) {
        let stopping = {
            let mut errors = lock(&self.errors);
            if errors.first.is_none() && !errors.first_taken && !self.is_halted() {
                let event = PipelineEvent::Stopping {
                    stage: err.stage().map(str::to_owned),
                    index: err.index(),
                };
                errors.first = Some(err);
                Some(event)
            } else {
                errors.later.push(err);
                None
            }
        };
        if let Some(event) = stopping {
            self.events.send(event);
            self.halt();
        }
    }

    pub(crate) fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }

    /// Stops every task and closes every channel. Idempotent.
    pub(crate) fn halt(&self) {
        if self.halted.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop.cancel();
        let closers = lock(&self.closers).clone();
        for c in closers {
            c.close();
        }
        let aborts = std::mem::take(&mut *lock(&self.aborts));
        for a in aborts {
            a.abort();
        }
    }

    /// The first error, once (the stream's last item).
    pub(crate) fn take_first(&self) -> Option<PipelineError<E>> {
        let mut errors = lock(&self.errors);
        errors.first_taken = true;
        errors.first.take()
    }

    /// A copy of the first error (if not yet taken) and the later ones, in order.
    pub(crate) fn errors(&self) -> Vec<PipelineError<E>>
    where
        E: Clone,
    {
        let errors = lock(&self.errors);
        errors.first.iter().chain(&errors.later).cloned().collect()
    }

    pub(crate) fn take_later(&self) -> Vec<PipelineError<E>> {
        std::mem::take(&mut lock(&self.errors).later)
    }

    fn register_abort(&self, handle: AbortHandle) {
        let mut aborts = lock(&self.aborts);
        if self.is_halted() {
            handle.abort();
        } else {
            aborts.push(handle);
        }
    }

    fn register_close(&self, chan: Arc<dyn Close>) {
        let mut closers = lock(&self.closers);
        if self.is_halted() {
            chan.close();
        }
        closers.push(chan);
    }

    /// A stage's last worker ended.
    pub(crate) fn stage_finished(&self, stage: &StageShared) {
        if self.events.active() {
            self.events.send(PipelineEvent::StageFinished {
                stats: stage.snapshot(),
            });
        }
        if self.live_stages.fetch_sub(1, Ordering::AcqRel) == 1 {
            super::events::finish(&self.events);
        }
    }
}

/// What a stage or source needs while the run is being started.
pub(crate) struct Launch<E> {
    pub(crate) run: Arc<RunShared<E>>,
    pub(crate) tasks: JoinSet<()>,
    /// Channel capacity after the source (0) and after each stage (1..).
    pub(crate) capacities: Vec<usize>,
    /// The ordered-output window (see [`super::ordered`]).
    pub(crate) window: Option<Arc<Semaphore>>,
    pub(crate) stages: Vec<Arc<StageShared>>,
}

impl<E: Send + 'static> Launch<E> {
    pub(crate) fn spawn<F>(&mut self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = self.tasks.spawn(fut);
        self.run.register_abort(handle);
    }

    /// A blocking task: cannot be aborted, so it must return once its input
    /// channel is closed.
    pub(crate) fn spawn_blocking<F>(&mut self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        self.tasks.spawn_blocking(f);
    }

    /// A channel that [`RunShared::halt`] closes.
    pub(crate) fn channel<T: Send + 'static>(
        &mut self,
        capacity: usize,
    ) -> (Sender<T>, Receiver<T>) {
        let (tx, rx) = channel(capacity);
        self.run
            .register_close(Arc::clone(tx.channel()) as Arc<dyn Close>);
        (tx, rx)
    }
}
