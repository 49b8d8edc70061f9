//! The bounded multi-producer, multi-consumer hand-off between stages.
//!
//! # Implementation notes
//!
//! One `std::sync::Mutex` guards a `VecDeque` and two waiter lists; every
//! critical section is a few pointer moves, and wakers are woken after the lock
//! is released. tokio's `mpsc` has one consumer, and a stage has `concurrency`
//! of them; a distributor task per stage would add a hop and a wake per item.
//!
//! Invariants:
//!
//! - `queue.len() <= max(capacity, 1)`. With `capacity == 0` (rendezvous) the
//!   queue is a one-item hand-off slot that a sender may fill only while a
//!   receiver is waiting, so a sender waits until a receiver is ready for its
//!   item, as with a Go unbuffered channel: no stage runs ahead of the next
//!   one by more than the item in hand. A receiver that starts waiting wakes
//!   one waiting sender.
//! - A waiter is woken only by removing it from its list. A receive or send
//!   future that was woken but is dropped before it completed passes the wake
//!   on to the next waiter ([`Waiters`] keys make that detectable), so a
//!   cancelled `receive` never strands an item.
//! - After [`Channel::close`] receivers get `None` at once (items left in the
//!   queue stay there for [`Channel::drain`]) and senders get their item back.
//!   When the last sender is dropped, receivers get what is queued, then `None`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Wakers of tasks waiting on one side of the channel, in arrival order.
struct Waiters {
    list: VecDeque<(u64, Waker)>,
    next_key: u64,
}

impl Waiters {
    fn new() -> Self {
        Waiters {
            list: VecDeque::new(),
            next_key: 0,
        }
    }

    /// Registers (or refreshes) the waiter `key`.
    fn register(&mut self, key: &mut Option<u64>, waker: &Waker) {
        if let Some(k) = *key {
            if let Some(entry) = self.list.iter_mut().find(|(id, _)| *id == k) {
                if !entry.1.will_wake(waker) {
                    entry.1 = waker.clone();
                }
                return;
            }
        }
        let k = self.next_key;
        self.next_key += 1;
        self.list.push_back((k, waker.clone()));
        *key = Some(k);
    }

    /// Removes `key`; true if it was still waiting (not woken).
    fn remove(&mut self, key: u64) -> bool {
        match self.list.iter().position(|(id, _)| *id == key) {
            Some(pos) => {
                self.list.remove(pos);
                true
            }
            None => false,
        }
    }

    fn pop(&mut self) -> Option<Waker> {
        self.list.pop_front().map(|(_, w)| w)
    }

    fn take_all(&mut self) -> Vec<Waker> {
        self.list.drain(..).map(|(_, w)| w).collect()
    }
}

struct State<T> {
    queue: VecDeque<T>,
    /// 0 = rendezvous.
    capacity: usize,
    senders: usize,
    receivers: usize,
    closed: bool,
    recv_waiters: Waiters,
    /// Senders waiting for room (rendezvous: for a waiting receiver).
    send_waiters: Waiters,
}

impl<T> State<T> {
    /// Whether a sender may push now.
    fn room(&self) -> bool {
        if self.capacity == 0 {
            self.queue.is_empty() && !self.recv_waiters.list.is_empty()
        } else {
            self.queue.len() < self.capacity
        }
    }

    /// Whether a receiver that just took items should wake a sender waiting
    /// for room. (Waking only below half capacity, to batch wake-ups, was
    /// measured: no gain on the no-op benchmark, and it made `dispatch` wait
    /// while there was room.) A rendezvous sender waits for a receiver
    /// instead ([`State::receiver_waiting`]).
    fn refill(&self) -> bool {
        self.capacity > 0
    }

    /// A receiver is about to wait: on a rendezvous channel that is what a
    /// sender waits for.
    fn receiver_waiting(&mut self) -> Option<Waker> {
        if self.capacity == 0 && self.queue.is_empty() {
            self.send_waiters.pop()
        } else {
            None
        }
    }

    fn send_closed(&self) -> bool {
        self.closed || self.receivers == 0
    }
}

/// The shared part of a channel.
pub(crate) struct Channel<T> {
    state: Mutex<State<T>>,
}

impl<T> Channel<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic never happens while the lock is held (no user code runs under
        // it), so poisoning cannot leave the state inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes the channel: receivers get `None`, senders get their item back,
    /// and every waiter is woken. Queued items stay for [`Channel::drain`].
    pub(crate) fn close(&self) {
        let (a, b) = {
            let mut st = self.lock();
            st.closed = true;
            (st.recv_waiters.take_all(), st.send_waiters.take_all())
        };
        a.into_iter().chain(b).for_each(Waker::wake);
    }

    /// Takes every queued item (after a close: the work that never started).
    pub(crate) fn drain(&self) -> Vec<T> {
        let items: Vec<T> = self.lock().queue.drain(..).collect();
        items
    }

    /// Items queued now.
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

/// Makes a channel holding up to `capacity` items (0 = rendezvous).
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Channel {
        state: Mutex::new(State {
            queue: VecDeque::with_capacity(capacity.clamp(1, 1024)),
            capacity,
            senders: 1,
            receivers: 1,
            closed: false,
            recv_waiters: Waiters::new(),
            send_waiters: Waiters::new(),
        }),
    });
    (
        Sender {
            chan: Arc::clone(&chan),
        },
        Receiver { chan },
    )
}

/// Why [`Receiver::try_recv_share`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryRecvError {
    Empty,
    Closed,
}

/// Why [`Sender::try_send`] did not take the item (given back).
pub(crate) enum TrySendError<T> {
    Full(T),
    Closed(T),
}

/// The sending side; cloning adds a sender.
pub(crate) struct Sender<T> {
    chan: Arc<Channel<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.lock().senders += 1;
        Sender {
            chan: Arc::clone(&self.chan),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let wakers = {
            let mut st = self.chan.lock();
            st.senders -= 1;
            if st.senders == 0 {
                st.recv_waiters.take_all()
            } else {
                Vec::new()
            }
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl<T> Sender<T> {
    pub(crate) fn channel(&self) -> &Arc<Channel<T>> {
        &self.chan
    }

    /// Queues `item` if there is room now. A rendezvous channel accepts an item
    /// here only when a receiver is already waiting for it.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut st = self.chan.lock();
            if st.send_closed() {
                return Err(TrySendError::Closed(item));
            }
            if !st.room() {
                return Err(TrySendError::Full(item));
            }
            st.queue.push_back(item);
            st.recv_waiters.pop()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Queues `item`, waiting for room (on a rendezvous channel: for a
    /// receiver ready to take it). Gives the item back if the channel is
    /// closed first.
    /// Moves as many of `items` as there is room for, in order, without
    /// waiting; one lock and one round of wake-ups for the lot.
    ///
    /// # Errors
    ///
    /// `Closed` if the channel is closed (`items` keeps what was not sent).
    pub(crate) fn try_send_many(&self, items: &mut VecDeque<T>) -> Result<(), ()> {
        let mut wakers = Vec::new();
        {
            let mut st = self.chan.lock();
            if st.send_closed() {
                return Err(());
            }
            let mut pushed = 0;
            while !items.is_empty() && st.room() {
                if let Some(item) = items.pop_front() {
                    st.queue.push_back(item);
                    pushed += 1;
                }
            }
            for _ in 0..pushed {
                match st.recv_waiters.pop() {
                    Some(w) => wakers.push(w),
                    None => break,
                }
            }
        }
        wakers.into_iter().for_each(Waker::wake);
        Ok(())
    }

    pub(crate) fn send(&self, item: T) -> Send<'_, T> {
        Send {
            chan: &self.chan,
            item: Some(item),
            key: None,
        }
    }
}

/// The future of [`Sender::send`].
pub(crate) struct Send<'a, T> {
    chan: &'a Channel<T>,
    item: Option<T>,
    key: Option<u64>,
}

impl<T> Unpin for Send<'_, T> {}

impl<T> Future for Send<'_, T> {
    type Output = Result<(), T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), T>> {
        let this = &mut *self;
        let Some(item) = this.item.take() else {
            return Poll::Ready(Ok(()));
        };
        let mut st = this.chan.lock();
        if st.send_closed() {
            if let Some(k) = this.key.take() {
                st.send_waiters.remove(k);
            }
            return Poll::Ready(Err(item));
        }
        if !st.room() {
            this.item = Some(item);
            st.send_waiters.register(&mut this.key, cx.waker());
            return Poll::Pending;
        }
        st.queue.push_back(item);
        if let Some(k) = this.key.take() {
            st.send_waiters.remove(k);
        }
        let receiver = st.recv_waiters.pop();
        drop(st);
        if let Some(w) = receiver {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T> Drop for Send<'_, T> {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let next = {
            let mut st = self.chan.lock();
            if !st.send_waiters.remove(key) && st.room() {
                // Woken (removed) but never completed: pass the wake on.
                st.send_waiters.pop()
            } else {
                None
            }
        };
        if let Some(w) = next {
            w.wake();
        }
    }
}

/// The receiving side; cloning adds a receiver (the channel is MPMC).
pub(crate) struct Receiver<T> {
    chan: Arc<Channel<T>>,
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.chan.lock().receivers += 1;
        Receiver {
            chan: Arc::clone(&self.chan),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let wakers = {
            let mut st = self.chan.lock();
            st.receivers -= 1;
            if st.receivers == 0 {
                st.send_waiters.take_all()
            } else {
                Vec::new()
            }
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl<T> Receiver<T> {
    pub(crate) fn channel(&self) -> &Arc<Channel<T>> {
        &self.chan
    }

    /// Takes one item, and the sender to wake now that there is room.
    fn take(st: &mut State<T>) -> Option<(T, Option<Waker>)> {
        let item = st.queue.pop_front()?;
        let waker = if st.refill() {
            st.send_waiters.pop()
        } else {
            None
        };
        Some((item, waker))
    }

    /// Takes this receiver's share of the queue without waiting: `1/sharers`
    /// of it, at least one item and at most `max`, so that with several
    /// receivers a batch never starves the others of work.
    pub(crate) fn try_recv_share(
        &self,
        out: &mut VecDeque<T>,
        sharers: usize,
        max: usize,
    ) -> Result<usize, TryRecvError> {
        let mut wakers = Vec::new();
        let n = {
            let mut st = self.chan.lock();
            if st.closed {
                return Err(TryRecvError::Closed);
            }
            let len = st.queue.len();
            if len == 0 {
                return Err(if st.senders == 0 {
                    TryRecvError::Closed
                } else {
                    TryRecvError::Empty
                });
            }
            let n = len.div_ceil(sharers.max(1)).clamp(1, max.max(1));
            out.extend(st.queue.drain(..n));
            if st.refill() {
                for _ in 0..n {
                    match st.send_waiters.pop() {
                        Some(w) => wakers.push(w),
                        None => break,
                    }
                }
            }
            n
        };
        wakers.into_iter().for_each(Waker::wake);
        Ok(n)
    }

    /// Waits for an item; `None` once the channel is closed, or drained with
    /// every sender gone.
    pub(crate) fn recv(&self) -> Recv<'_, T> {
        Recv {
            chan: &self.chan,
            key: None,
            spins: 0,
        }
    }

    /// Moves up to `max` items into `out`; `Ready(0)` means closed. `spins`
    /// counts the caller's empty looks (see [`RECV_SPINS`]).
    pub(crate) fn poll_recv_many(
        &self,
        cx: &mut Context<'_>,
        key: &mut Option<u64>,
        spins: &mut u8,
        out: &mut VecDeque<T>,
        max: usize,
    ) -> Poll<usize> {
        let mut st = self.chan.lock();
        if st.closed {
            return Poll::Ready(0);
        }
        let n = st.queue.len().min(max);
        if n == 0 {
            if st.senders == 0 {
                return Poll::Ready(0);
            }
            // As in `Recv`: yield a few times before waiting (never on a rendezvous).
            if st.capacity > 0 && key.is_none() && *spins < RECV_SPINS {
                *spins += 1;
                drop(st);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            st.recv_waiters.register(key, cx.waker());
            let sender = st.receiver_waiting();
            drop(st);
            if let Some(w) = sender {
                w.wake();
            }
            return Poll::Pending;
        }
        out.extend(st.queue.drain(..n));
        *spins = 0;
        if let Some(k) = key.take() {
            st.recv_waiters.remove(k);
        }
        let mut wakers = Vec::new();
        let n_wake = if st.refill() { n } else { 0 };
        for _ in 0..n_wake {
            match st.send_waiters.pop() {
                Some(w) => wakers.push(w),
                None => break,
            }
        }
        drop(st);
        wakers.into_iter().for_each(Waker::wake);
        Poll::Ready(n)
    }

    /// Unregisters a waiter left by [`Receiver::poll_recv_many`].
    pub(crate) fn forget(&self, key: &mut Option<u64>) {
        if let Some(k) = key.take() {
            let next = {
                let mut st = self.chan.lock();
                if !st.recv_waiters.remove(k) && !st.queue.is_empty() {
                    st.recv_waiters.pop()
                } else {
                    None
                }
            };
            if let Some(w) = next {
                w.wake();
            }
        }
    }
}

/// The future of [`Receiver::recv`].
pub(crate) struct Recv<'a, T> {
    chan: &'a Channel<T>,
    key: Option<u64>,
    /// Polls that found the queue empty and yielded instead of waiting.
    spins: u8,
}

/// Times a receiver finding an empty (buffered) queue yields before it
/// registers to be woken. Upstream stages usually push again within a
/// microsecond; waiting instead costs a sleep and a cross-thread wake-up per
/// item (measured on the no-op benchmark: most of the time went to context
/// switches).
const RECV_SPINS: u8 = 3;

impl<T> Future for Recv<'_, T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        let mut st = this.chan.lock();
        if st.closed {
            if let Some(k) = this.key.take() {
                st.recv_waiters.remove(k);
            }
            return Poll::Ready(None);
        }
        if let Some((item, waker)) = Receiver::take(&mut st) {
            if let Some(k) = this.key.take() {
                st.recv_waiters.remove(k);
            }
            drop(st);
            if let Some(w) = waker {
                w.wake();
            }
            return Poll::Ready(Some(item));
        }
        if st.senders == 0 {
            if let Some(k) = this.key.take() {
                st.recv_waiters.remove(k);
            }
            return Poll::Ready(None);
        }
        // A rendezvous sender waits for a registered receiver: never spin there.
        if st.capacity > 0 && this.key.is_none() && this.spins < RECV_SPINS {
            this.spins += 1;
            drop(st);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        st.recv_waiters.register(&mut this.key, cx.waker());
        let sender = st.receiver_waiting();
        drop(st);
        if let Some(w) = sender {
            w.wake();
        }
        Poll::Pending
    }
}

impl<T> Drop for Recv<'_, T> {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let next = {
            let mut st = self.chan.lock();
            // Woken (removed) but never took its item: pass the wake on.
            if !st.recv_waiters.remove(key) && !st.queue.is_empty() {
                st.recv_waiters.pop()
            } else {
                None
            }
        };
        if let Some(w) = next {
            w.wake();
        }
    }
}
