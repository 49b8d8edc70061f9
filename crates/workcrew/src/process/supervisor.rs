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
    let stopping;
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
        let floor = if st.stopping { 0 } else { config.min_workers };
        let mut want = floor;
        if waiting && !room && st.starting == 0 && !st.stopping {
            want = want.max(live + 1);
        }
        let want = want.min(config.max_workers);
        let have = live + st.starting;
        if want > have && st.crash_loop.is_none() {
            match backoff.until {
                Some(at) if at > now => soonest(at),
                _ => {
                    for n in have..want {
                        // Starts up to `min` replace workers that died (restarts), then
                        // retired ones; starts above it are growth.
                        let kind = if n >= floor {
                            Start::Growth
                        } else if st.dead_unreplaced > 0 {
                            st.dead_unreplaced -= 1;
                            Start::Restart
                        } else {
                            Start::Recycle
                        };
                        st.starting += 1;
                        st.next_worker += 1;
                        starts.push((st.next_worker, st.generation, st.command.clone(), kind));
                    }
                }
            }
        }
        if have >= floor {
            // Deaths the pool did not need to make up for (above `min`) are no restarts.
            st.dead_unreplaced = 0;
        }
        if st.workers.is_empty() && st.starting == 0 && !st.queue.is_empty() {
            // Nobody will ever take the queued calls.
            fail_queue = st.crash_loop.is_some() || st.stopping;
        }
        stopping = st.stopping;
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
            _ if stopping => CallError::Stopped,
            Some((restarts, window)) => CallError::CrashLoop { restarts, window },
            None => CallError::NoWorkers,
        });
    }
    for (handle, reason) in retire {
        pool.retired(&handle, reason);
    }
    for (id, generation, command, kind) in starts {
        let weak = Arc::downgrade(pool);
        tokio::spawn(async move {
            let ok = start_worker(weak.clone(), id, generation, command).await;
            if let Some(p) = weak.upgrade() {
                let counter = match kind {
                    Start::Restart => &p.counters.restarts,
                    Start::Growth => &p.counters.growth_starts,
                    Start::Recycle => &p.counters.recycle_starts,
                };
                if ok {
                    counter.fetch_add(1, Ordering::Relaxed);
                } else {
                    let mut st = p.lock();
                    st.crashes.push_back(Instant::now());
                    if kind == Start::Restart {
                        // Still to be replaced: the next attempt is the restart.
                        st.dead_unreplaced += 1;
                    }
                }
                p.supervisor.notify_one();
            }
        });
    }
    next
}

/// Why the supervisor starts a worker, for the stats.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// A worker died: back to `min`.
    Restart,
    /// A worker retired: back to `min`.
    Recycle,
    /// Calls wait for room: above `min`.
    Growth,
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
    let Started {
        child,
        pid,
        codec,
        read_buf,
        reader,
        writer,
        hello,
        ..
    } = started;
    let reading = conn::Reading {
        child,
        codec,
        read_buf,
        reader,
    };
    let hello = &hello;
    // At least 1: the handshake refuses a `HELLO` announcing 0.
    let concurrency = hello.concurrency.max(1) as usize;
    let handle = Arc::new(WorkerHandle {
        id,
        pid,
        functions: hello.functions.iter().cloned().collect(),
        batch: hello.batch,
        fds: hello.fds,
        wake: tokio::sync::Notify::new(),
        shutdown: std::sync::atomic::AtomicBool::new(false),
        finished: std::sync::atomic::AtomicBool::new(false),
        direct: std::sync::Mutex::new(conn::Direct::new(writer)),
    });
    let now = Instant::now();
    let retire_at = config.max_age.map(|(age, jitter)| {
        let share = pool.lock().router.below(1 << 16) as f64 / f64::from(1u32 << 16);
        now + age + jitter.mul_f64(share)
    });
    let mut functions = hello.functions.clone();
    functions.sort();
    {
        let mut st = pool.lock();
        if counted {
            st.starting -= 1;
        }
        st.conns += 1;
        if st.shutdown_all || (st.stopping && st.queue.is_empty()) {
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
        // Sent under the lock: `events()` lists the live workers under it too,
        // so a subscriber sees each worker's `Ready` exactly once.
        pool.events.send(ProcessEvent::Ready {
            worker: id,
            pid: handle.pid,
            functions: functions.clone(),
        });
    }
    let settings = Settings {
        heartbeat: config.heartbeat,
        stop_timeout: config.stop_timeout,
        stop_signal: config.stop_signal,
        cancel_grace: config.cancel_grace,
    };
    // Owned by the pool state: `conns` counts it until it has reaped its worker and settled
    // its calls, and `stop` waits for that.
    tokio::spawn(conn::run(
        Arc::downgrade(pool),
        Arc::clone(&handle),
        reading,
        settings,
    ));
    tracing::debug!(
        worker = id,
        worker_pid = handle.pid,
        ?functions,
        "worker ready"
    );
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

#[cfg(test)]
mod tests {
    //! The supervisor's timing rules on tokio's paused clock, against a pool
    //! state with stand-in workers (no processes): when an idle worker is
    //! reaped, when an old one retires, how long a failed start backs off.

    use std::time::Duration;

    use super::*;
    use crate::process::builder::{Config, ProcessPoolBuilder};
    use crate::protocol::Encoding;

    fn pool(config: Config) -> Arc<Shared> {
        Arc::new(Shared::new(config, Encoding::Postcard))
    }

    /// A stand-in worker: idle since now, optionally holding calls.
    fn add_worker(pool: &Shared, in_flight: usize, retire_at: Option<Instant>) -> u64 {
        let mut st = pool.lock();
        st.next_worker += 1;
        let id = st.next_worker;
        st.workers.push(Entry {
            handle: Arc::new(WorkerHandle::stand_in(id)),
            in_flight,
            limit: 4,
            sent: 0,
            retiring: None,
            idle_since: Instant::now(),
            retire_at,
            generation: 1,
            outbox: Vec::new(),
            cancels: Vec::new(),
        });
        id
    }

    fn retiring(pool: &Shared) -> Vec<(u64, RecycleReason)> {
        pool.lock()
            .workers
            .iter()
            .filter_map(|w| w.retiring.map(|r| (w.handle.id, r)))
            .collect()
    }

    fn config(f: impl FnOnce(ProcessPoolBuilder) -> ProcessPoolBuilder) -> Config {
        f(ProcessPoolBuilder::new("unused".into())).into_config()
    }

    #[tokio::test(start_paused = true)]
    async fn idle_workers_above_min_are_reaped_at_their_idle_timeout_and_busy_ones_never() {
        let pool = pool(config(|b| {
            b.min(1).max(4).idle_timeout(Duration::from_secs(10))
        }));
        let t0 = Instant::now();
        let busy = add_worker(&pool, 2, None);
        let idle_a = add_worker(&pool, 0, None);
        let idle_b = add_worker(&pool, 0, None);
        let (mut backoff, mut rss) = (Backoff::default(), Instant::now());

        tokio::time::advance(Duration::from_millis(9_999)).await;
        let next = reconcile(&pool, &mut backoff, &mut rss);
        assert!(retiring(&pool).is_empty(), "nobody is idle long enough yet");
        assert_eq!(
            next,
            Some(t0 + Duration::from_secs(10)),
            "woken exactly at the timeout"
        );

        tokio::time::advance(Duration::from_millis(1)).await;
        reconcile(&pool, &mut backoff, &mut rss);
        // Three live above a minimum of one: both idle workers go, the busy one stays.
        assert_eq!(
            retiring(&pool),
            vec![(idle_a, RecycleReason::Idle), (idle_b, RecycleReason::Idle)]
        );

        // Much later, the busy worker, still holding calls, is still not reaped.
        tokio::time::advance(Duration::from_secs(3600)).await;
        reconcile(&pool, &mut backoff, &mut rss);
        assert!(!retiring(&pool).iter().any(|(id, _)| *id == busy));
    }

    #[tokio::test(start_paused = true)]
    async fn the_minimum_is_kept_even_when_idle() {
        let pool = pool(config(|b| {
            b.min(2).max(4).idle_timeout(Duration::from_secs(1))
        }));
        add_worker(&pool, 0, None);
        add_worker(&pool, 0, None);
        let (mut backoff, mut rss) = (Backoff::default(), Instant::now());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            reconcile(&pool, &mut backoff, &mut rss),
            None,
            "nothing to wait for"
        );
        assert!(retiring(&pool).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_retires_at_its_age() {
        let pool = pool(config(|b| b.workers(1)));
        let at = Instant::now() + Duration::from_secs(30);
        let old = add_worker(&pool, 1, Some(at));
        let (mut backoff, mut rss) = (Backoff::default(), Instant::now());
        assert_eq!(reconcile(&pool, &mut backoff, &mut rss), Some(at));
        assert!(retiring(&pool).is_empty());
        tokio::time::advance(Duration::from_secs(30)).await;
        reconcile(&pool, &mut backoff, &mut rss);
        // Retired even while busy: it finishes its calls, taking no new ones.
        assert_eq!(retiring(&pool), vec![(old, RecycleReason::Age)]);
        // Below `min` now: a replacement is being started.
        assert_eq!(pool.lock().starting, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_starts_back_off_doubling_up_to_the_maximum() {
        let pool = pool(config(|b| {
            b.workers(1)
                .spawn_backoff(Duration::from_millis(100), Duration::from_millis(350))
                .restart_budget(100, Duration::from_secs(60))
        }));
        let (mut backoff, mut rss) = (Backoff::default(), Instant::now());
        // A first failed start is reported; the later ones are real: the
        // program does not exist, so every start the supervisor makes fails.
        pool.counters.spawn_failures.fetch_add(1, Ordering::AcqRel);
        for expected_ms in [100, 200, 350, 350] {
            let now = Instant::now();
            let next = reconcile(&pool, &mut backoff, &mut rss);
            assert_eq!(next, Some(now + Duration::from_millis(expected_ms)));
            assert_eq!(pool.lock().starting, 0, "no start before the delay");
            tokio::time::advance(Duration::from_millis(expected_ms - 1)).await;
            reconcile(&pool, &mut backoff, &mut rss);
            assert_eq!(pool.lock().starting, 0, "still backing off");
            tokio::time::advance(Duration::from_millis(1)).await;
            reconcile(&pool, &mut backoff, &mut rss);
            assert_eq!(pool.lock().starting, 1, "the next start, on time");
            while pool.lock().starting != 0 {
                tokio::task::yield_now().await;
            }
        }
        // The last start's failure is counted; then a success resets the delay.
        reconcile(&pool, &mut backoff, &mut rss);
        assert_eq!(backoff.failures, 5);
        pool.counters.spawn_successes.fetch_add(1, Ordering::AcqRel);
        reconcile(&pool, &mut backoff, &mut rss);
        assert_eq!(backoff.failures, 0);
    }
}
