//! A call's cancellation, as the function serving it sees it.
//!
//! # Implementation notes
//!
//! Each call that needs one has a [`Flag`]: set when the pool cancels the call, waited on by
//! blocking waiters (a condition variable) and async ones (a [`Notify`]). A sync function's
//! flag is made with its call (the blocking thread needs it from the start). An async call
//! gets one only if its function asks for its [`CallContext`]: an async call is dropped when
//! cancelled, so it can only see the cancel from work it handed the context to, and trivial
//! calls should not pay an allocation for that.
//!
//! The function finds its call through a thread-local: set on the blocking thread for the
//! whole of a sync function, and around each poll of an async call by the serving loop (which
//! polls every call on its own thread).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// The cancel of one call.
#[derive(Default)]
pub(crate) struct Flag {
    set: AtomicBool,
    lock: Mutex<()>,
    changed: Condvar,
    notify: Notify,
}

impl Flag {
    pub(crate) fn set(&self) {
        {
            let _held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.set.store(true, Ordering::Release);
        }
        self.changed.notify_all();
        self.notify.notify_waiters();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }
}

thread_local! {
    /// The call this thread is serving: `None` outside a call; `Some(None)` inside an async
    /// call that has not asked for its context yet.
    static CURRENT: RefCell<Option<Option<Arc<Flag>>>> = const { RefCell::new(None) };
}

/// Runs `f` as the current call's code on this thread, with `flag` (if made yet) as its
/// cancel; returns what `f` returned and the flag, which `f` may have made.
pub(crate) fn within_call<T>(
    flag: Option<Arc<Flag>>,
    f: impl FnOnce() -> T,
) -> (T, Option<Arc<Flag>>) {
    /// Puts the outer value back if `f` panics.
    struct Restore(Option<Option<Option<Arc<Flag>>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                CURRENT.with(|c| *c.borrow_mut() = outer);
            }
        }
    }
    let outer = CURRENT.with(|c| c.borrow_mut().replace(flag));
    let mut restore = Restore(Some(outer));
    let out = f();
    let outer = restore.0.take().flatten();
    let inner = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    (out, inner.flatten())
}

/// A handle on the cancellation of the call being served: whether the pool has cancelled it
/// (its caller gave it up: a timeout, a token, a dropped call), and ways to wait for that.
///
/// Get it inside a function with [`CallContext::current`]; clone it into threads or tasks the
/// function starts. What a cancel does depends on the kind of function:
///
/// - an **async** function's future is dropped at once and the call is answered `cancelled`:
///   it never sees the cancel itself, but work it handed its context to does;
/// - a **sync** function runs on a blocking thread that cannot be stopped: it should check
///   [`is_cancelled`](Self::is_cancelled) (or wait with
///   [`wait_cancelled`](Self::wait_cancelled)) and return early. The call is answered
///   `cancelled` only once the function has returned. One that never looks runs on, and the
///   pool kills its worker after the cancel grace (`docs/protocol.md`, section 3.6).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use workcrew::worker::{CallContext, Worker};
///
/// fn main() -> Result<(), workcrew::worker::ServeError> {
///     Worker::builder()
///         .function("count", |n: u64| {
///             let mut done = 0;
///             while done < n {
///                 if workcrew::worker::is_cancelled() {
///                     return Err("stopped".to_owned()); // answered `cancelled`
///                 }
///                 done += 1;
///             }
///             Ok(done)
///         })
///         .function("poll", |secs: u64| {
///             let call = CallContext::current().expect("inside a call");
///             // Sleeps, but wakes as soon as the call is cancelled.
///             if call.wait_cancelled(Duration::from_secs(secs)) {
///                 return Err("stopped".to_owned());
///             }
///             Ok(secs)
///         })
///         .build()
///         .run()
/// }
/// ```
#[derive(Clone)]
pub struct CallContext {
    flag: Arc<Flag>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CallContext {
    /// The context of the call this code serves: inside a sync function (on its thread), or
    /// while an async function's future is polled by the serving loop. `None` elsewhere (a
    /// task or thread of its own needs the context passed to it).
    pub fn current() -> Option<CallContext> {
        CURRENT.with(|c| {
            let mut current = c.borrow_mut();
            let slot = current.as_mut()?;
            let flag = slot.get_or_insert_with(Arc::default);
            Some(CallContext {
                flag: Arc::clone(flag),
            })
        })
    }

    /// Whether the pool has cancelled the call.
    pub fn is_cancelled(&self) -> bool {
        self.flag.is_set()
    }

    /// Waits until the pool cancels the call.
    ///
    /// # Cancel safety
    ///
    /// Safe: dropping the future only stops waiting.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.flag.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.flag.is_set() {
                return;
            }
            notified.await;
        }
    }

    /// Blocks this thread until the call is cancelled or `timeout` passes; true if it was
    /// cancelled. For sync functions (never on an async task: it blocks the thread).
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut held = self
            .flag
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while !self.flag.is_set() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            held = self
                .flag
                .changed
                .wait_timeout(held, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// Whether the call this code serves has been cancelled (see [`CallContext`]); false outside
/// a call. Cheap: a sync function may call it in its inner loop.
pub fn is_cancelled() -> bool {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .and_then(Option::as_ref)
            .is_some_and(|flag| flag.is_set())
    })
}
