//! The supervisor: one task per pool that enforces `max_runtime` and detects
//! stalls. Started with the first busy period, only if either is configured.
//!
//! It holds the pool only weakly and sleeps until the next deadline the core
//! reports (or until woken by a new busy period or by close), so it costs
//! nothing between deadlines and never polls.

use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::events::PoolEvent;
use super::output::CancelReason;
use super::shared::Shared;

pub(crate) async fn run(pool: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let deadline = {
            let Some(shared) = pool.upgrade() else { return };
            match step(&shared) {
                Step::Again => continue,
                Step::Exit => return,
                Step::Sleep(deadline) => deadline,
            }
        };
        match deadline {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = &mut notified => {}
                }
            }
            None => notified.await,
        }
    }
}

enum Step {
    Again,
    Exit,
    Sleep(Option<Instant>),
}

fn step(shared: &Arc<Shared>) -> Step {
    let now = Instant::now();
    let mut st = shared.lock();
    if let Some(cancellation) = st.core.check_runtime(now) {
        drop(st);
        let (cancelled_queued, aborted_running) =
            shared.carry_out(cancellation, CancelReason::RuntimeLimit);
        tracing::warn!(
            pool = shared.config.name.as_deref().unwrap_or(""),
            cancelled_queued,
            aborted_running,
            "task pool runtime limit reached"
        );
        shared.events.send(PoolEvent::RuntimeExceeded {
            cancelled_queued,
            aborted_running,
        });
        return Step::Again;
    }
    if let Some((oldest, fx)) = st.core.check_stall(now) {
        drop(st);
        tracing::warn!(
            pool = shared.config.name.as_deref().unwrap_or(""),
            oldest = ?oldest,
            "task pool stalled"
        );
        shared.events.send(PoolEvent::Stalled { oldest });
        shared.apply(fx);
        return Step::Again;
    }
    if st.core.is_closed() && st.core.is_idle() {
        return Step::Exit;
    }
    Step::Sleep(st.core.next_deadline())
}
