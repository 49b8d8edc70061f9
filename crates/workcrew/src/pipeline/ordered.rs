//! Ordered output: the reordering buffer and the window that bounds it.
//!
//! # Implementation notes
//!
//! Items finish out of order (stages run concurrently), so an ordered run keeps
//! finished items that are ahead of the next index to deliver. To bound that
//! memory the source takes one permit of a semaphore of [`window`] permits per
//! item, and the output stream gives one back per item it delivers. So at most
//! `window` items are anywhere between the source and the caller — in channels,
//! in workers, or in this buffer — and the source waits (backpressure) when the
//! window is full. The window equals what the pipeline's channels and workers
//! hold anyway, so it never slows an ordered run below an unordered one by
//! more than the head-of-line wait for the next index.
//!
//! No deadlock: the next index to deliver was admitted (it is inside the
//! window), every stage keeps making progress because the stream always moves
//! finished items out of the last channel into this buffer, so it arrives.

use std::collections::VecDeque;

/// The window of an ordered run: `Σ (concurrency + max(buffer, 1))` over the
/// stages plus `max(source buffer, 1)`. `max(.., 1)` because a rendezvous
/// channel still holds the one item being handed over.
pub(crate) fn window(source_buffer: usize, stages: &[(usize, usize)]) -> usize {
    stages
        .iter()
        .map(|&(concurrency, buffer)| concurrency + buffer.max(1))
        .sum::<usize>()
        + source_buffer.max(1)
}

/// Finished items keyed by index, relative to the next one to deliver.
pub(crate) struct Reorder<T> {
    next: u64,
    /// `slots[i]` holds index `next + i`.
    slots: VecDeque<Option<T>>,
    held: usize,
}

impl<T> Reorder<T> {
    pub(crate) fn new(window: usize) -> Self {
        Reorder {
            next: 0,
            slots: VecDeque::with_capacity(window.min(4096)),
            held: 0,
        }
    }

    pub(crate) fn insert(&mut self, index: u64, item: T) {
        // The window guarantees `index - next < window`, so this fits in memory.
        let offset = usize::try_from(index - self.next).expect("index inside the window");
        if offset >= self.slots.len() {
            self.slots.resize_with(offset + 1, || None);
        }
        debug_assert!(
            self.slots[offset].is_none(),
            "index {index} delivered twice"
        );
        self.slots[offset] = Some(item);
        self.held += 1;
    }

    /// The item with the next index, if it has arrived.
    pub(crate) fn pop(&mut self) -> Option<T> {
        match self.slots.front_mut() {
            Some(slot @ Some(_)) => {
                let item = slot.take();
                self.slots.pop_front();
                self.next += 1;
                self.held -= 1;
                item
            }
            _ => None,
        }
    }

    /// Items held (waiting for an earlier index).
    pub(crate) fn len(&self) -> usize {
        self.held
    }
}
