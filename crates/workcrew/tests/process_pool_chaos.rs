//! Chaos: while a stream of calls runs through the pool, random workers of the pool are killed
//! with `SIGKILL`, one every 1,000 to 4,000 settled calls (counted in calls, not time, so a
//! faster pool meets as many kills). Every call must settle (with its value, or as lost when
//! its worker was killed holding it), the pool must come back to `min` workers, and no worker
//! process and no file descriptor may be left once it stops.
//!
//! The short run (100,000 calls) is part of `cargo test`; the long one (1,000,000 calls) is
//! ignored by default. Run it with
//! `cargo test -p workcrew --release --test process_pool_chaos -- --ignored`.
//!
//! Only pids the pool reports ([`ProcessPool::worker_pids`]) that are still children of this
//! process are killed. The tests of this file run one at a time (they count this process's
//! file descriptors).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use workcrew::process::{CallError, ProcessEvent, ProcessPool, ProcessPoolBuilder};

mod support;
use support::processes::{all_gone, within};

/// One chaos run at a time: each counts this process's file descriptors.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Calls kept in flight by the driver.
const IN_FLIGHT: usize = 256;

fn pool() -> ProcessPoolBuilder {
    ProcessPool::builder(env!("CARGO_BIN_EXE_workcrew-demo-worker"))
        .env("WORKCREW_DEMO_CONCURRENCY", "64")
        .min(2)
        .max(4)
        .idle_timeout(Duration::from_millis(300))
        // Deaths are the point here: never a crash loop.
        .restart_budget(usize::MAX / 2, Duration::from_secs(1))
        .spawn_backoff(Duration::from_millis(1), Duration::from_millis(20))
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Whether `pid` is (still) a child of this process: never kill a pid that was reused.
fn is_our_child(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the command (in parentheses, which may hold spaces): state, ppid, ...
    let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let ppid: Option<u32> = after.split_whitespace().nth(1).and_then(|p| p.parse().ok());
    ppid == Some(std::process::id())
}

/// A small xorshift generator: the test needs spread, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What a chaos run saw.
#[derive(Debug)]
struct Outcome {
    ok: u64,
    lost: u64,
    kills: u64,
}

async fn chaos(calls: u64) -> Outcome {
    let _serial = SERIAL.lock().await;
    // The runtime's process machinery (its signal pipe) is made with the first child: warm it
    // up before counting descriptors.
    let warm = pool().min(1).max(1).build().await.unwrap();
    let warm_pids = warm.worker_pids();
    warm.stop().await;
    assert!(all_gone(&warm_pids).await);
    let fds_before = open_fds();

    let pool = within("build", Duration::from_secs(20), pool().build())
        .await
        .unwrap();
    let seen: Arc<Mutex<HashSet<u32>>> =
        Arc::new(Mutex::new(pool.worker_pids().into_iter().collect()));
    {
        let mut events = pool.events();
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let ProcessEvent::Spawned { pid, .. } = event {
                    seen.lock().unwrap().insert(pid);
                }
            }
        });
    }

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    let mut kills = 0u64;
    let mut next_kill = 1_000 + rng.below(3_001);
    let (mut ok, mut lost) = (0u64, 0u64);
    let drive = async {
        let mut running = FuturesUnordered::new();
        let mut next = 0u64;
        loop {
            while running.len() < IN_FLIGHT && next < calls {
                let n = next;
                next += 1;
                let pool = &pool;
                running.push(async move { (n, pool.call::<_, u64>("inc", &n).await) });
            }
            let Some((n, result)) = running.next().await else {
                break;
            };
            match result {
                Ok(v) => {
                    assert_eq!(v, n + 1);
                    ok += 1;
                }
                Err(CallError::WorkerLost { .. }) => lost += 1,
                Err(other) => panic!("call {n} failed with {other:?}"),
            }
            if ok + lost >= next_kill {
                next_kill = ok + lost + 1_000 + rng.below(3_001);
                kills += u64::from(kill_one(&pool, &mut rng));
            }
        }
    };
    // Generous: a debug build on a loaded machine; a hang fails here instead of never ending.
    within("the calls", Duration::from_secs(600), drive).await;
    assert_eq!(ok + lost, calls, "every call settled (seed {seed})");

    // Back to `min`, nothing in flight or queued.
    let start = std::time::Instant::now();
    loop {
        let s = pool.stats();
        if s.workers == 2 && s.starting == 0 && s.in_flight == 0 && s.queued == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pool did not come back to min: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.lost), (ok, lost), "{stats:?}");

    within("stop", Duration::from_secs(30), pool.stop()).await;
    let seen: Vec<u32> = seen.lock().unwrap().iter().copied().collect();
    assert!(all_gone(&seen).await, "a worker process outlived the pool");
    drop(pool);
    // Descriptors are closed by the tasks that held them, which have ended with `stop`; give
    // the runtime a moment to drop what it still holds.
    let start = std::time::Instant::now();
    while open_fds() > fds_before && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open_fds(), fds_before, "file descriptors leaked");
    Outcome { ok, lost, kills }
}

/// SIGKILLs one of the pool's workers, picked at random, if it is still our child: whether one
/// was killed.
fn kill_one(pool: &ProcessPool, rng: &mut Rng) -> bool {
    let pids = pool.worker_pids();
    if pids.is_empty() {
        return false;
    }
    let pid = pids[rng.below(pids.len() as u64) as usize];
    if !is_our_child(pid) {
        return false;
    }
    let target = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(target, rustix::process::Signal::KILL).is_ok()
}

/// Workers were killed, and each kill lost at most the calls one worker may hold (its
/// concurrency, 64): calls routed but not yet sent to it went to another worker.
fn check(outcome: &Outcome) {
    assert!(outcome.kills > 0, "{outcome:?}");
    assert!(outcome.ok > 0, "{outcome:?}");
    assert!(outcome.lost <= outcome.kills * 64, "{outcome:?}");
}

/// 100,000 calls under random `SIGKILL`s: every call settles, the pool returns to `min`, no
/// process or descriptor is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_settles_while_random_workers_are_killed() {
    let outcome = chaos(100_000).await;
    println!("{outcome:?}");
    check(&outcome);
}

/// The long run: 1,000,000 calls (see the module docs to run it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 1,000,000 calls; run with --ignored (see the module docs)"]
async fn every_call_settles_while_random_workers_are_killed_long() {
    let outcome = chaos(1_000_000).await;
    println!("{outcome:?}");
    check(&outcome);
}
