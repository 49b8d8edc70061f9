//! Finding a pool from a task handle, so that `abort` can take a queued task
//! out of the pool's queue.
//!
//! # Implementation notes
//!
//! A handle needs its pool only for [`TaskHandle::abort`](super::TaskHandle::abort)
//! of a task that is still queued. Keeping a reference to the pool in every
//! handle (an `Arc` or a `Weak`) would cost every spawn two atomic
//! read-modify-writes on a reference count that every producer and every
//! handle share — paid by all tasks, on a path where a no-op task costs well
//! under a microsecond, for the benefit of the few that are aborted.
//!
//! Instead a pool draws a number when it is built and enters itself in this
//! process-wide table (number → weak reference). A task keeps only the number
//! — four bytes in padding its completion already has, so no memory and no
//! reference count — and `abort` looks the pool up under the table's lock. A
//! pool leaves the table when its state is dropped.
//!
//! Numbers are never reused, so a handle that outlives its pool finds nothing
//! (and needs nothing: the pool's queue went with it, resolving the handle).
//! After 2³² − 1 pools the numbers are used up: later pools get number 0 and
//! are not entered, so `abort` of their queued tasks falls back to resolving
//! the handle at once and leaving the job for a worker to drop unpolled.
//!
//! The table's lock is taken only when a pool is built or dropped and by
//! `abort` of a task that had not started.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::shared::Shared;

/// Every live pool, by number.
static POOLS: Mutex<BTreeMap<u32, Weak<Shared>>> = Mutex::new(BTreeMap::new());

/// The next pool's number.
static NEXT_KEY: AtomicU32 = AtomicU32::new(1);

/// A pool's number in the table; 0 for a pool that is not in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolKey(u32);

impl PoolKey {
    /// A number no other pool of this process had or will have, or 0 once
    /// they are used up.
    pub(crate) fn new() -> Self {
        let next =
            NEXT_KEY.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
        // `Err`: the numbers are used up.
        PoolKey(next.unwrap_or(0))
    }
}

fn pools() -> MutexGuard<'static, BTreeMap<u32, Weak<Shared>>> {
    // Nothing panics while holding this lock; survive poisoning anyway.
    POOLS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Enters `shared` in the table under its key.
pub(crate) fn enter(key: PoolKey, shared: &Arc<Shared>) {
    if key.0 != 0 {
        pools().insert(key.0, Arc::downgrade(shared));
    }
}

/// The pool with this key, if it is still alive.
pub(crate) fn find(key: PoolKey) -> Option<Arc<Shared>> {
    if key.0 == 0 {
        return None;
    }
    // The upgraded reference is dropped by the caller, after this lock is
    // released: the last reference's drop leaves the table (see `leave`).
    pools().get(&key.0).and_then(Weak::upgrade)
}

/// Removes the pool with this key (called as its state is dropped).
pub(crate) fn leave(key: PoolKey) {
    if key.0 != 0 {
        let gone = pools().remove(&key.0);
        drop(gone);
    }
}
