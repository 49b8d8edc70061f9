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
//! process-wide table (number → weak reference). A handle keeps only the
//! number (eight bytes, no reference count), and `abort` looks the pool up
//! under the table's lock. A pool leaves the table when its state is dropped.
//! Numbers are never reused, so a handle that outlives its pool finds nothing
//! (and needs nothing: the pool's queue went with it, resolving the handle).
//!
//! The table's lock is taken only when a pool is built or dropped and by
//! `abort` of a task that had not started.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::shared::Shared;

/// Every live pool, by number.
static POOLS: Mutex<BTreeMap<u64, Weak<Shared>>> = Mutex::new(BTreeMap::new());

/// The next pool's number.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A pool's number in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolKey(u64);

impl PoolKey {
    /// A number no other pool of this process had or will have.
    pub(crate) fn new() -> Self {
        PoolKey(NEXT_KEY.fetch_add(1, Ordering::Relaxed))
    }
}

fn pools() -> MutexGuard<'static, BTreeMap<u64, Weak<Shared>>> {
    // Nothing panics while holding this lock; survive poisoning anyway.
    POOLS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Enters `shared` in the table under its key.
pub(crate) fn enter(key: PoolKey, shared: &Arc<Shared>) {
    pools().insert(key.0, Arc::downgrade(shared));
}

/// The pool with this key, if it is still alive.
pub(crate) fn find(key: PoolKey) -> Option<Arc<Shared>> {
    // The upgraded reference is dropped by the caller, after this lock is
    // released: the last reference's drop leaves the table (see `leave`).
    pools().get(&key.0).and_then(Weak::upgrade)
}

/// Removes the pool with this key (called as its state is dropped).
pub(crate) fn leave(key: PoolKey) {
    let gone = pools().remove(&key.0);
    drop(gone);
}
