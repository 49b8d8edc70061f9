//! The bounded multi-producer, multi-consumer hand-off between stages.
//!
//! # Why a hand-written channel
//!
//! Issue 10 found a lost wake-up here (see the rendezvous invariant below), so
//! the well-kept MPMC channels with rendezvous support were weighed against
//! it: flume 0.12, kanal 0.1 and async-channel 2 (which has no capacity 0:
//! it would need a hand-off of our own). `cargo bench -p workcrew --bench
//! pipeline` runs each in the hand-written pipeline shape (every worker of a
//! stage holds a receiver clone, one `send`/`recv` per item) in the same
//! process as the pipeline on this channel. Medians of 7 interleaved rounds,
//! 2 cores shared with other builds (load 3 in the first run, 10 in the
//! second):
//!
//! | workload | this channel | flume | kanal | async-channel |
//! |---|---|---|---|---|
//! | no-op, 3 stages × 2, items/s (run 1, before the issue-10 speed-ups) | 2.6 M | 0.86 M | 0.63 M | 0.60 M |
//! | no-op, items/s (run 2) | 6.0 M | 0.77 M | 0.78 M | 0.41 M |
//! | J1000/W10 (JSON round trips), ms (run 2) | 421 | 405 | 381 | 395 |
//!
//! On CPU-bound items the channel does not matter (all within the noise of a
//! loaded machine); on quick items the per-item hand-off of the candidates
//! costs 8–15× (a lock or CAS round and often a wake-up per item), while
//! this channel moves batches: a worker takes its share of the queue with one
//! lock, a full sender parks its whole batch for receivers to move in, and
//! each side is woken once per batch. None of the candidates has a batch
//! send or a parked hand-off, so swapping would give that up; the channel is
//! kept, with the lost wake-up fixed and covered by the model and stress
//! tests in `channel/tests.rs` and `tests/pipeline_stress.rs`.
//!
//! # Implementation notes
//!
//! One `std::sync::Mutex` guards a `VecDeque` and the waiter lists; every
//! critical section is a few pointer moves, and wakers are woken after the lock
//! is released. tokio's `mpsc` has one consumer, and a stage has `concurrency`
//! of them; a distributor task per stage would add a hop and a wake per item.
//!
//! Invariants:
//!
//! - `queue.len() <= max(capacity, 1)`, except after
//!   [`Receiver::give_back`] (a receiver returning items it took but cannot
//!   start soon), by at most one receiver's batch; senders wait until it is
//!   below the capacity again. With `capacity == 0` (rendezvous) the
//!   queue is a one-item hand-off slot that a sender may fill only while a
//!   receiver is waiting, so a sender waits until a receiver is ready for its
//!   item, as with a Go unbuffered channel: no stage runs ahead of the next
//!   one by more than the item in hand. A sender is woken whenever the slot
//!   may take an item: by a receiver that starts waiting while the slot is
//!   empty, and by a receiver that empties the slot while other receivers
//!   already wait (the second was missing before issue 10: a blocked sender
//!   then slept while idle receivers waited, so N receivers had one item in
//!   flight between them).
//! - Hand-over of blocked batches ([`Sender::send_all`], buffered channels
//!   only): a batch that does not fit is parked in the channel (`parked`,
//!   with its sender in `parked_senders`) instead of staying in the sending
//!   task, and every receiver that takes items moves parked items into the
//!   queue in the same critical section, as a Go channel receiver takes a
//!   blocked sender's value. So the receiving side keeps going without the
//!   sender having to be scheduled first (on a fast pipeline that wake-up, a
//!   thread unpark, set the pace), and a blocked sender is woken once, when
//!   its whole batch is in the queue, not once per free slot. Parked items are
//!   what the sender would hold in hand anyway, so memory stays bounded by
//!   the same amount. `parked` is non-empty only while the queue is full, so
//!   a receiver never finds the queue empty while items are parked. A
//!   receiver taking a batch counts parked items as queued and takes them
//!   straight after the queue's, then refills the queue, so batches are not
//!   cut at the capacity.
//!   Measured on the no-op benchmark (3 stages, 2 worker threads): with every
//!   channel full most of the time, parking batches roughly doubled the
//!   throughput and halved the context switches.
//! - A waiter is woken only by removing it from its list (a parked sender: by
//!   moving its last item, or by close). A receive or send future that was
//!   woken but is dropped before it completed passes the wake on to the next
//!   waiter ([`Waiters`] keys make that detectable), so a cancelled `receive`
//!   never strands an item. A dropped [`SendAll`] takes its parked items back.
//! - After [`Channel::close`] receivers get `None` at once (items left in the
//!   queue stay there for [`Channel::drain`]) and senders get their items
//!   back. When the last sender is dropped, receivers get what is queued,
//!   then `None`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use waiters::Waiters;

/// Moves the first `n` items of `from` to the back of `to`: by swapping the
/// buffers when that moves everything into an empty deque, else by `append`
/// (a block copy) when it moves everything, else item by item. (Measured on
/// the no-op benchmark: the item-by-item `extend(drain(..))` everywhere was
/// ~10% of the time.)
fn move_front<T>(from: &mut VecDeque<T>, to: &mut VecDeque<T>, n: usize) {
    if n >= from.len() {
        if to.is_empty() {
            std::mem::swap(from, to);
        } else {
            to.append(from);
        }
    } else {
        to.extend(from.drain(..n));
    }
}

/// A sender whose batch is parked: `count` items of `parked`, contiguous, in
/// the order of `parked_senders`.
struct ParkedSender {
    key: u64,
    count: usize,
    /// `None` once woken by a close (the entry stays until the sender takes
    /// its items back).
    waker: Option<Waker>,
}

struct State<T> {
    queue: VecDeque<T>,
    /// 0 = rendezvous.
    capacity: usize,
    senders: usize,
    receivers: usize,
    closed: bool,
    recv_waiters: Waiters,
    /// Senders of one item waiting for room (rendezvous: for a waiting
    /// receiver).
    send_waiters: Waiters,
    /// Items of blocked [`SendAll`]s, in order; non-empty only while the queue
    /// is full.
    parked: VecDeque<T>,
    parked_senders: VecDeque<ParkedSender>,
    next_parked_key: u64,
}

impl<T> State<T> {
    /// Whether a sender may push now.
    fn room(&self) -> bool {
        if self.capacity == 0 {
            self.queue.is_empty() && !self.recv_waiters.is_empty()
        } else {
            self.queue.len() < self.capacity
        }
    }

    /// A receiver took items: refills the queue from parked batches (waking
    /// each sender whose batch is then all in the queue, and a waiting
    /// receiver per item moved), then wakes one waiting sender per free slot
    /// left. On a rendezvous channel the slot is free again: if receivers
    /// are already waiting, one sender is woken now, since none of them will
    /// *start* waiting to wake it ([`State::receiver_waiting`] covers the
    /// receivers that come later). Without that a sender slept while idle
    /// receivers waited, and a stage with a rendezvous input ran one item at
    /// a time (issue 10).
    ///
    /// (Waking senders only below half capacity, to batch wake-ups, was
    /// measured: no gain on the no-op benchmark, and it made `dispatch` wait
    /// while there was room.)
    fn took(&mut self, wakers: &mut Vec<Waker>) {
        if self.capacity == 0 {
            if self.room() {
                wakers.extend(self.send_waiters.pop());
            }
            return;
        }
        let moved = self
            .capacity
            .saturating_sub(self.queue.len())
            .min(self.parked.len());
        if moved > 0 {
            move_front(&mut self.parked, &mut self.queue, moved);
            self.unparked(moved, wakers);
        }
        if moved > 0 {
            self.recv_waiters.pop_into(moved, wakers);
        }
        let room = self.capacity.saturating_sub(self.queue.len());
        self.send_waiters.pop_into(room, wakers);
    }

    /// `moved` items left the front of `parked`: counts them off the parked
    /// senders (batches are contiguous, in the order of their senders) and
    /// wakes each sender whose whole batch has left.
    fn unparked(&mut self, moved: usize, wakers: &mut Vec<Waker>) {
        let mut left = moved;
        while left > 0 {
            let Some(front) = self.parked_senders.front_mut() else {
                break;
            };
            let k = left.min(front.count);
            front.count -= k;
            left -= k;
            if front.count == 0 {
                if let Some(w) = self.parked_senders.pop_front().and_then(|p| p.waker) {
                    wakers.push(w);
                }
            }
        }
    }

    /// Moves up to `n` items to `out`: from the queue, then straight from
    /// parked batches (not through the queue: a partial move is item by item,
    /// a whole one a block copy), then refills the queue ([`State::took`]).
    fn take(&mut self, out: &mut VecDeque<T>, n: usize, wakers: &mut Vec<Waker>) -> usize {
        let from_queue = n.min(self.queue.len());
        move_front(&mut self.queue, out, from_queue);
        let from_parked = (n - from_queue).min(self.parked.len());
        if from_parked > 0 {
            move_front(&mut self.parked, out, from_parked);
            self.unparked(from_parked, wakers);
        }
        self.took(wakers);
        from_queue + from_parked
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

    /// Wakes every sender (the channel closed, or lost its last receiver);
    /// parked senders keep their entry until they take their items back.
    fn wake_senders(&mut self, wakers: &mut Vec<Waker>) {
        wakers.extend(self.send_waiters.take_all());
        wakers.extend(
            self.parked_senders
                .iter_mut()
                .filter_map(|p| p.waker.take()),
        );
    }

    /// Removes the parked sender `key` and returns its items still parked
    /// (none if its batch was all moved to the queue).
    fn unpark(&mut self, key: u64) -> Option<std::collections::vec_deque::Drain<'_, T>> {
        let mut offset = 0;
        let pos = self.parked_senders.iter().position(|p| {
            let found = p.key == key;
            if !found {
                offset += p.count;
            }
            found
        })?;
        let count = self.parked_senders.remove(pos).map_or(0, |p| p.count);
        Some(self.parked.drain(offset..offset + count))
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

    /// Closes the channel: receivers get `None`, senders get their items
    /// back, and every waiter is woken. Queued items stay for
    /// [`Channel::drain`].
    pub(crate) fn close(&self) {
        let mut wakers = Vec::new();
        {
            let mut st = self.lock();
            st.closed = true;
            wakers.extend(st.recv_waiters.take_all());
            st.wake_senders(&mut wakers);
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Takes every queued item (after a close: the work that never started).
    pub(crate) fn drain(&self) -> Vec<T> {
        let items: Vec<T> = self.lock().queue.drain(..).collect();
        items
    }

    /// Items queued now (parked batches included).
    pub(crate) fn len(&self) -> usize {
        let st = self.lock();
        st.queue.len() + st.parked.len()
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
            parked: VecDeque::new(),
            parked_senders: VecDeque::new(),
            next_parked_key: 0,
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

    /// The channel's capacity (0 = rendezvous).
    pub(crate) fn capacity(&self) -> usize {
        self.chan.lock().capacity
    }

    /// Queues `item`, waiting for room (on a rendezvous channel: for a
    /// receiver ready to take it). Gives the item back if the channel is
    /// closed first.
    pub(crate) fn send(&self, item: T) -> Send<'_, T> {
        Send {
            chan: &self.chan,
            item: Some(item),
            key: None,
        }
    }

    /// Moves every item of `items` into the channel, in order: what fits at
    /// once with one lock and one round of wake-ups; on a buffered channel
    /// the rest is parked in the channel for receivers to move into the queue
    /// as they take items (see the module notes), and the future completes
    /// when the last of them was moved. `Err` if the channel is closed first;
    /// `items` then holds what was not sent, as it does if the future is
    /// dropped.
    pub(crate) fn send_all<'a>(&'a self, items: &'a mut VecDeque<T>) -> SendAll<'a, T> {
        SendAll {
            chan: &self.chan,
            items,
            key: None,
            parked: None,
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

/// The future of [`Sender::send_all`].
pub(crate) struct SendAll<'a, T> {
    chan: &'a Channel<T>,
    items: &'a mut VecDeque<T>,
    /// Waiting for room as a one-item sender (rendezvous channels).
    key: Option<u64>,
    /// Waiting with the batch parked (buffered channels).
    parked: Option<u64>,
}

impl<T> SendAll<'_, T> {
    /// Takes a parked batch back into `items` (before anything not yet sent:
    /// `items` is empty while the batch is parked).
    fn take_back(&mut self, st: &mut State<T>) {
        if let Some(key) = self.parked.take() {
            if let Some(back) = st.unpark(key) {
                self.items.extend(back);
            }
        }
    }
}

impl<T> Future for SendAll<'_, T> {
    type Output = Result<(), ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let this = &mut *self;
        let mut st = this.chan.lock();
        if let Some(key) = this.parked {
            let closed = st.send_closed();
            let Some(entry) = st.parked_senders.iter_mut().find(|p| p.key == key) else {
                // Receivers moved the whole batch into the queue.
                this.parked = None;
                return Poll::Ready(Ok(()));
            };
            if !closed {
                match &mut entry.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
        }
        if st.send_closed() {
            this.take_back(&mut st);
            if let Some(k) = this.key.take() {
                st.send_waiters.remove(k);
            }
            return Poll::Ready(Err(()));
        }
        let pushed = if st.capacity == 0 {
            // Rendezvous: one item, if a receiver is waiting.
            match st.room().then(|| this.items.pop_front()).flatten() {
                Some(item) => {
                    st.queue.push_back(item);
                    1
                }
                None => 0,
            }
        } else {
            let n = (st.capacity - st.queue.len().min(st.capacity)).min(this.items.len());
            move_front(this.items, &mut st.queue, n);
            n
        };
        let mut wakers = Vec::new();
        st.recv_waiters.pop_into(pushed, &mut wakers);
        let poll = if this.items.is_empty() {
            if let Some(k) = this.key.take() {
                st.send_waiters.remove(k);
            }
            Poll::Ready(Ok(()))
        } else if st.capacity > 0 {
            // Full: park the rest for receivers to move in (the queue is
            // full, so `parked` may grow). Never parks while holding a
            // one-item wait: `key` is only used on rendezvous channels.
            let key = st.next_parked_key;
            st.next_parked_key += 1;
            st.parked_senders.push_back(ParkedSender {
                key,
                count: this.items.len(),
                waker: Some(cx.waker().clone()),
            });
            st.parked.append(this.items);
            this.parked = Some(key);
            Poll::Pending
        } else {
            st.send_waiters.register(&mut this.key, cx.waker());
            Poll::Pending
        };
        drop(st);
        wakers.into_iter().for_each(Waker::wake);
        poll
    }
}

impl<T> Drop for SendAll<'_, T> {
    fn drop(&mut self) {
        if self.parked.is_some() {
            let mut st = self.chan.lock();
            self.take_back(&mut st);
            return;
        }
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
        let mut wakers = Vec::new();
        {
            let mut st = self.chan.lock();
            st.receivers -= 1;
            if st.receivers == 0 {
                st.wake_senders(&mut wakers);
            }
        }
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl<T> Receiver<T> {
    pub(crate) fn channel(&self) -> &Arc<Channel<T>> {
        &self.chan
    }

    /// Takes this receiver's share of the queue without waiting: `1/sharers`
    /// of it (so that with several receivers a batch never starves the others
    /// of work), or up to `whole` items if that is more (work too short to be
    /// worth sharing); at least one item and at most `max`.
    pub(crate) fn try_recv_share(
        &self,
        out: &mut VecDeque<T>,
        sharers: usize,
        max: usize,
        whole: usize,
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
            // Parked batches count: taking moves them into the queue.
            let len = len + st.parked.len();
            let n = len
                .div_ceil(sharers.max(1))
                .max(len.min(whole))
                .clamp(1, max.max(1));
            st.take(out, n, &mut wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
        Ok(n)
    }

    /// Puts `items` (taken by this receiver, not started) back at the front
    /// of the queue, in order, and wakes a waiting receiver per item, so that
    /// idle receivers take them. The queue may then hold more than the
    /// capacity (by at most what one receiver takes at once); senders wait
    /// until it is below it again.
    pub(crate) fn give_back(&self, items: &mut VecDeque<T>) {
        let mut wakers = Vec::new();
        {
            let mut st = self.chan.lock();
            let n = items.len();
            while let Some(item) = items.pop_back() {
                st.queue.push_front(item);
            }
            st.recv_waiters.pop_into(n, &mut wakers);
        }
        wakers.into_iter().for_each(Waker::wake);
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
        *spins = 0;
        if let Some(k) = key.take() {
            st.recv_waiters.remove(k);
        }
        // Parked batches too: taking moves them into the queue.
        let mut wakers = Vec::new();
        let taken = st.take(out, max, &mut wakers);
        drop(st);
        wakers.into_iter().for_each(Waker::wake);
        Poll::Ready(taken)
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
        if let Some(item) = st.queue.pop_front() {
            if let Some(k) = this.key.take() {
                st.recv_waiters.remove(k);
            }
            let mut wakers = Vec::new();
            st.took(&mut wakers);
            drop(st);
            wakers.into_iter().for_each(Waker::wake);
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

#[cfg(test)]
mod tests;
mod waiters;
