//! The supervisor: keeps the pool between `min` and `max` workers, replaces
//! dead ones within the restart budget, and retires workers that are idle,
//! too old or too big.
//!
//! # Implementation notes
//!
//! One task per pool, holding it weakly. It sleeps until notified (a worker
//! exited or retired, calls queue with no room, a start finished) or until
//! the next deadline it computed (an idle timeout, a maximum age, a memory
//! check, a spawn backoff) — no fixed tick. Each turn reconciles the state
//! in one place (`reconcile`), so every rule sees the same snapshot:
//!
//! - live (non-retiring) + starting workers below `min` → start more;
//! - calls queued, no worker with room, below `max`, none starting → start one
//!   (each start that finishes wakes the supervisor, so growth continues while
//!   calls still wait);
//! - unplanned exits and failed starts within the restart window above the
//!   budget → crash loop: no more starts, queued calls fail once no worker is
//!   left;
//! - a failed start → the next attempt waits a backoff (doubling);
//! - idle above `min` → retire (only workers with nothing in flight, checked
//!   under the pool lock, so a worker holding a call is never reaped).
//!
//! Starting runs in its own task so the supervisor never waits on a slow
//! handshake.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::time::Instant;

use super::builder::WorkerCommand;
use super::conn::{self, Settings};
use super::error::{CallError, StartError};
use super::events::{ProcessEvent, RecycleReason};
use super::spawn::{self, Started};
use super::state::{Entry, Shared, WorkerHandle};

pub(crate) async fn supervise(pool: Weak<Shared>) {
    let Some(notify) = pool.upgrade().map(|p| Arc::clone(&p.supervisor)) else {
        return;
    };
    let mut backoff = Backoff::default();
    let mut next_rss_check = Instant::now();
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(shared) = pool.upgrade() else { return };
        let next = reconcile(&shared, &mut backoff, &mut next_rss_check);
        drop(shared);
        match next {
            Some(at) => {
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => notified.await,
        }
    }
}

/// Spawn failures in a row, and when the next start may be tried.
#[derive(Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

/// One turn; returns the next deadline, if any.
fn reconcile(pool: &Arc<Shared>, backoff: &mut Backoff, next_rss: &mut Instant) -> Option<Instant> {
    let config = &pool.config;
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    let mut soonest = |at: Instant| {
        next = Some(next.map_or(at, |n: Instant| n.min(at)));
    };
    // Outcomes of the starts since the last turn drive the backoff, before
    // this turn decides whether to start another.
    let failed = pool.counters.spawn_failures.swap(0, Ordering::AcqRel);
    let succeeded = pool.counters.spawn_successes.swap(0, Ordering::AcqRel);
    if succeeded > 0 && failed == 0 {
        backoff.failures = 0;
        backoff.until = None;
    }
    if failed > 0 {
        backoff.failures = backoff.failures.saturating_add(failed as u32);
        let (first, max) = config.spawn_backoff;
        let delay = first
            .saturating_mul(2u32.saturating_pow(backoff.failures.saturating_sub(1).min(16)))
            .min(max);
        backoff.until = Some(now + delay);
    }
    let mut retire: Vec<(Arc<WorkerHandle>, RecycleReason)> = Vec::new();
    let mut starts = Vec::new();
    let mut crash_loop_now = None;
    let mut fail_queue = false;
    {
        let mut st = pool.lock();
        // The restart budget.
        let window = config.restart_window;
        while st
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            st.crashes.pop_front();
        }
        if st.crash_loop.is_none() && st.crashes.len() > config.max_restarts {
            st.crash_loop = Some((config.max_restarts, window));
            crash_loop_now = Some(config.max_restarts);
        }

        // Retire by age and memory; reap idle workers above `min`.
        let mut live = st.workers.iter().filter(|w| w.retiring.is_none()).count();
        let check_rss = config.max_rss.is_some() && now >= *next_rss;
        if check_rss {
            *next_rss = now + config.rss_check;
        }
        if config.max_rss.is_some() {
            soonest(*next_rss);
        }
        for w in st.workers.iter_mut().filter(|w| w.retiring.is_none()) {
            let reason = if w.retire_at.is_some_and(|at| at <= now) {
                Some(RecycleReason::Age)
            } else if check_rss
                && config
                    .max_rss
                    .is_some_and(|max| rss(w.handle.pid).is_some_and(|r| r > max))
            {
                Some(RecycleReason::Memory)
            } else if live > config.min_workers && w.in_flight == 0 {
                let at = w.idle_since + config.idle_timeout;
                if at <= now {
                    Some(RecycleReason::Idle)
                } else {
                    soonest(at);
                    None
                }
            } else {
                None
            };
            if let Some(at) = w.retire_at {
                soonest(at);
            }
            if let Some(reason) = reason {
                w.retiring = Some(reason);
                live -= 1;
                retire.push((Arc::clone(&w.handle), reason));
            }
        }

        // Start workers: up to `min`, or one more while calls wait for room.
        let room = st
            .workers
            .iter()
            .any(|w| w.retiring.is_none() && w.in_flight < w.limit);
        let waiting = st.queue.iter().any(|j| !j.abandoned());
        let mut want = if st.stopping { 0 } else { config.min_workers };
        if waiting && !room && st.starting == 0 {
            want = want.max(live + 1);
        }
        let want = want.min(config.max_workers);
        let have = live + st.starting;
        if want > have && st.crash_loop.is_none() {
            match backoff.until {
                Some(at) if at > now => soonest(at),
                _ => {
                    for _ in have..want {
                        st.starting += 1;
                        st.next_worker += 1;
                        starts.push((st.next_worker, st.generation, st.command.clone()));
                    }
                }
            }
        }
        if st.workers.is_empty() && st.starting == 0 && !st.queue.is_empty() {
            // Nobody will ever take the queued calls.
            fail_queue = st.crash_loop.is_some() || st.stopping;
        }
    }
    if let Some(restarts) = crash_loop_now {
        tracing::error!(
            restarts,
            window = ?config.restart_window,
            "worker restart budget exhausted; not replacing workers"
        );
        pool.events.send(ProcessEvent::CrashLoop { restarts });
    }
    if fail_queue {
        let crash_loop = pool.lock().crash_loop;
        pool.fail_queue(|| match crash_loop {
            Some((restarts, window)) => CallError::CrashLoop { restarts, window },
            None => CallError::NoWorkers,
        });
    }
    for (handle, reason) in retire {
        pool.retired(&handle, reason);
    }
    for (id, generation, command) in starts {
        let weak = Arc::downgrade(pool);
        tokio::spawn(async move {
            let ok = start_worker(weak.clone(), id, generation, command).await;
            if let Some(p) = weak.upgrade() {
                if !ok {
                    p.lock().crashes.push_back(Instant::now());
                }
                p.supervisor.notify_one();
            }
        });
    }
    next
}

/// Starts one worker of `generation` and adds it to the pool. False if it
/// failed to start.
pub(crate) async fn start_worker(
    pool: Weak<Shared>,
    id: u64,
    generation: u64,
    command: WorkerCommand,
) -> bool {
    let Some(shared) = pool.upgrade() else {
        return false;
    };
    let events = |pid| {
        shared
            .events
            .send(ProcessEvent::Spawned { worker: id, pid });
    };
    let started = spawn::start(&shared.config, &command, id, &[shared.encoding], events).await;
    match started {
        Ok(started) => {
            shared
                .counters
                .spawn_successes
                .fetch_add(1, Ordering::AcqRel);
            shared.counters.restarts.fetch_add(1, Ordering::Relaxed);
            register(&shared, started, id, generation, true);
            true
        }
        Err(e) => {
            shared
                .counters
                .spawn_failures
                .fetch_add(1, Ordering::AcqRel);
            tracing::warn!(error = %e, "starting a worker failed");
            shared.events.send(ProcessEvent::SpawnFailed {
                error: e.to_string(),
            });
            shared.lock().starting -= 1;
            false
        }
    }
}

/// Adds a started worker to the pool and runs its connection task.
/// `counted`: it was counted in `starting`.
pub(crate) fn register(
    pool: &Arc<Shared>,
    started: Started,
    id: u64,
    generation: u64,
    counted: bool,
) -> Arc<WorkerHandle> {
    let config = &pool.config;
    let hello = &started.hello;
    let concurrency = hello.concurrency.max(1) as usize;
    let handle = Arc::new(WorkerHandle {
        id,
        pid: started.pid,
        functions: hello.functions.iter().cloned().collect(),
        batch: hello.batch,
        fds: hello.fds,
        wake: tokio::sync::Notify::new(),
        shutdown: std::sync::atomic::AtomicBool::new(false),
        task: std::sync::Mutex::new(None),
    });
    let now = Instant::now();
    let retire_at = config.max_age.map(|(age, jitter)| {
        let share = pool.lock().router.below(1 << 16) as f64 / f64::from(1u32 << 16);
        now + age + jitter.mul_f64(share)
    });
    let functions = hello.functions.clone();
    {
        let mut st = pool.lock();
        if counted {
            st.starting -= 1;
        }
        if st.stopping && st.queue.is_empty() {
            handle.shutdown.store(true, Ordering::Release);
        }
        st.workers.push(Entry {
            handle: Arc::clone(&handle),
            in_flight: 0,
            limit: config
                .max_per_worker
                .map_or(concurrency, |m| m.min(concurrency)),
            sent: 0,
            retiring: None,
            idle_since: now,
            retire_at,
            generation,
            outbox: Vec::new(),
            cancels: Vec::new(),
        });
    }
    let settings = Settings {
        heartbeat: config.heartbeat,
        stop_timeout: config.stop_timeout,
        stop_signal: config.stop_signal,
    };
    let task = tokio::spawn(conn::run(
        Arc::downgrade(pool),
        Arc::clone(&handle),
        started,
        settings,
    ));
    *handle
        .task
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    tracing::debug!(
        worker = id,
        worker_pid = handle.pid,
        ?functions,
        "worker ready"
    );
    pool.events.send(ProcessEvent::Ready {
        worker: id,
        pid: handle.pid,
        functions,
    });
    handle
}

/// A process's resident memory in bytes (Linux `/proc/<pid>/statm`).
fn rss(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Starts `n` workers of `generation` at once; all or nothing.
pub(crate) async fn start_generation(
    pool: &Arc<Shared>,
    command: &WorkerCommand,
    offered: &[crate::protocol::Encoding],
    n: usize,
) -> Result<Vec<(u64, Started)>, StartError> {
    let ids: Vec<u64> = {
        let mut st = pool.lock();
        (0..n)
            .map(|_| {
                st.next_worker += 1;
                st.next_worker
            })
            .collect()
    };
    let started = futures::future::join_all(ids.iter().map(|&id| {
        spawn::start(&pool.config, command, id, offered, move |pid| {
            pool.events.send(ProcessEvent::Spawned { worker: id, pid });
        })
    }))
    .await;
    let mut ok = Vec::with_capacity(n);
    let mut first_error = None;
    for (id, s) in ids.into_iter().zip(started) {
        match s {
            Ok(s) => ok.push((id, s)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        for (_, mut s) in ok {
            spawn::reap(&mut s.child, true).await;
        }
        return Err(e);
    }
    Ok(ok)
}
