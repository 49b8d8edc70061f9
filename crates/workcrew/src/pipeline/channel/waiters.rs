//! The waiter lists of the channel: wakers in arrival order, each with a key
//! so that a future dropped after being woken can tell it was (and pass the
//! wake on).

use std::collections::VecDeque;
use std::task::Waker;

/// Wakers of tasks waiting on one side of the channel, in arrival order.
pub(super) struct Waiters {
    list: VecDeque<(u64, Waker)>,
    next_key: u64,
}

impl Waiters {
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(super) fn new() -> Self {
        Waiters {
            list: VecDeque::new(),
            next_key: 0,
        }
    }

    /// Registers (or refreshes) the waiter `key`.
    pub(super) fn register(&mut self, key: &mut Option<u64>, waker: &Waker) {
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
    pub(super) fn remove(&mut self, key: u64) -> bool {
        match self.list.iter().position(|(id, _)| *id == key) {
            Some(pos) => {
                self.list.remove(pos);
                true
            }
            None => false,
        }
    }

    pub(super) fn pop(&mut self) -> Option<Waker> {
        self.list.pop_front().map(|(_, w)| w)
    }

    /// Moves up to `n` wakers into `out`.
    pub(super) fn pop_into(&mut self, n: usize, out: &mut Vec<Waker>) {
        for _ in 0..n {
            match self.pop() {
                Some(w) => out.push(w),
                None => break,
            }
        }
    }

    pub(super) fn take_all(&mut self) -> Vec<Waker> {
        self.list.drain(..).map(|(_, w)| w).collect()
    }
}
