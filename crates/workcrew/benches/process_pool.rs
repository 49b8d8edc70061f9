//! Process pool figures, with the baseline measured in the same run:
//!
//! ```text
//! cargo bench -p workcrew --bench process_pool
//! ```
//!
//! The workers are this benchmark binary re-executed in worker mode (built with
//! [`workcrew::worker`], one thread each), so no other program is needed.
//!
//! Criterion reports its statistics first (group `process_pool`: a burst of 100,000 echo calls,
//! a map of 1,000,000 items, one call at a time and, as its baseline, a raw socket-pair round
//! trip). Then the figures, each measured again:
//!
//! - `echo_calls_per_s`: 100,000 trivial echo calls issued at once to 2 workers (median of 5).
//!   The workers announce a concurrency of 1024 (their `echo` is async, so it costs nothing to
//!   hold many calls): the pool then keeps 2,048 calls in flight and each write and read carries
//!   hundreds of frames.
//! - `echo_in_task_calls_per_s`: the same bursts issued from a runtime task (`tokio::spawn`), as
//!   a server's request handler issues calls, instead of from `block_on`'s thread;
//!   `ratio echo_in_task/echo`. It was 0.02–0.05 until a call's wait for its answer stopped
//!   spending tokio's cooperative budget (a `tokio::sync::oneshot` did: a task's poll then took
//!   128 answers and spun on the rest; now `futures::channel::oneshot`).
//! - `echo_timed_calls_per_s`: the same bursts with a deadline on every call (the pool's
//!   `call_timeout`, 60 s, never reached); `ratio echo_timed/echo`. A timed call waits in the
//!   same hand-written future as an untimed one, plus one boxed tokio `Sleep` (its timer
//!   registered and cleared: about 1,100 instructions per call on the caller's thread); it
//!   went through boxed `async` blocks and a `select!` before, about 2,100 (0.8M calls/s
//!   against 1.9M untimed, measured outside the bench).
//! - `echo_default_calls_per_s`: the same bursts to workers that set no concurrency (an async
//!   echo and the SDK's default, 1,024 for async functions); `ratio echo_default/echo`.
//! - `framed_rpc_limit_calls_per_s`: the same trivial round trips without a pool — 20-byte frames
//!   (length, call id, payload) over socket pairs to 2 child processes that echo them through
//!   buffers, at most 1,024 unanswered per child, blocking std I/O on a writer and a reader
//!   thread per child (median of 5 runs of 4,000,000 calls). `ratio echo/framed_rpc_limit` is
//!   the share of what the wire allows that the pool keeps.
//! - `burst_harness_limit_calls_per_s`: the burst's own ceiling — the same 100,000 futures in
//!   one `FuturesUnordered`, each sending a oneshot sender through a channel to a thread that
//!   answers at once: a pool that costs nothing but what any pool's caller pays per call (a
//!   future, a channel send, a oneshot, a cross-thread wake). `ratio echo/burst_harness_limit`
//!   is the share of that ceiling the pool keeps, and `ratio burst_harness_limit/framed_rpc_limit`
//!   shows how far below the framing limit the ceiling itself is (see below).
//! - `pending_once_limit_calls_per_s`: the bound under that ceiling — the same 100,000 futures
//!   in one `FuturesUnordered`, each of which only goes pending once and is then woken and
//!   answered from this same thread: no pool, no channel, no other thread, no allocation but
//!   the futures' own. Every call to another process goes pending at least once, so no burst
//!   of separate call futures issued this way goes faster; `ratio pending_once_limit/
//!   framed_rpc_limit` is the most `ratio echo/framed_rpc_limit` could be (see below).
//! - `call_p50_us` / `call_p99_us`: one call at a time, from a runtime task (as a server's
//!   request handler calls). Measured in blocks of 50 interleaved with blocks of two baselines,
//!   so that all three see the same machine, and with both sides pinned (this thread and the
//!   runtime's on CPU 0, workers and echo children on CPU 1; unpinned, a blocking round trip
//!   sometimes runs both ends on one CPU and is twice as fast, so the raw figure jumped between
//!   about 7 and 15 us from run to run):
//!   - `raw_p50_us` / `raw_p99_us`: a 16-byte frame over a socket pair to a child process that
//!     echoes it, blocking std I/O on both ends (the physical limit); `ratio call_p50/raw_p50`,
//!     `ratio call_p99/raw_p99`;
//!   - `tokio_raw_p50_us` / `tokio_raw_p99_us`: the same echo with tokio on both ends (a
//!     current-thread runtime in the child, as the bench's workers run; this runtime here), so
//!     non-blocking I/O woken through `epoll`, as any async pool and worker do it;
//!     `ratio call_p50/tokio_raw_p50` is what the SDK worker and the pool add to it;
//!   - `sdk_worker_raw_p50_us`: a `CALL` written and its `RESULT` read by hand, through tokio,
//!     to a worker of this bench (the SDK's serving loop) — the protocol's round trip without
//!     the pool; `ratio call_p50/sdk_worker_raw_p50` is what the pool itself adds;
//!   - `sdk_worker_blocking_p50_us`: the same `CALL` to another such worker from blocking std
//!     I/O on our end, as the raw round trip: `ratio sdk_worker_blocking_p50/raw_p50` is what
//!     the SDK worker costs against the raw echo child, nothing of the caller's side in it.
//!
//!   `call_p50_block_on_us` measures from `block_on`'s own thread, where every answer costs one
//!   more cross-thread wake-up (the connection task runs on the runtime), beside raw and tokio
//!   round trips made from that thread: `ratio call_p50_block_on/raw_p50`,
//!   `ratio call_p50_block_on/tokio_raw_p50_block_on`.
//! - `map_items_per_s`: `map` of 5,000,000 trivial echo items (chunked `CALL_MANY`), in order;
//!   `ratio map/framed_rpc_limit`, what batched calls keep of the wire.
//! - `startup_ms`: from `build()` (2 workers) to the first answered call.
//! - `cpu_efficiency`: 200 calls of ~10 ms of CPU work on 1 worker, divided by 2 times the same
//!   on 2 workers (workers announcing concurrency 1, which the pool respects).
//! - `node_worker_calls_per_s`: the echo figure with 2 Node.js workers (`workers/node/serve.js`
//!   serving `benches/node_echo.js`, a synchronous echo; JSON payloads) announcing a concurrency
//!   of 1024 like the Rust workers, median of 5 bursts of 100,000 calls after a warm-up one;
//!   `ratio node_worker/piscina` divides it by piscina's 32,357 calls/s on this machine (a
//!   constant from issue 9, not measured by this bench: piscina is an npm package). Also
//!   `node_worker_c1_calls_per_s`, the same with a concurrency of 1, the Node worker's default
//!   for a synchronous function (one call per worker at a time, so each call is a round trip). Without `node` on `PATH` the
//!   bench prints one `skip` line instead.

//!
//! # Where the time goes (issue 13, item 2)
//!
//! `WORKCREW_BENCH_PROFILE_ECHO=20 perf record -e cpu-clock -F 4000 <bench binary>` runs only
//! twenty echo bursts of 100,000 calls, for a profiler; `WORKCREW_BENCH_PROFILE_LATENCY=20000`
//! only the latency measurement (for `strace -c -f`, `perf stat`). This machine's `perf` has no
//! hardware counters, so `cpu-clock` sampling; `valgrind --tool=callgrind` gives instruction
//! counts instead.
//!
//! **Throughput**, first profile (2026-12-02, 17,475 samples): 46% on the caller's thread (the
//! `block_on` thread that creates and polls the 100,000 call futures), 34% on the runtime's two
//! threads (the connection tasks), 20% in the two worker processes: the caller's thread is the
//! bottleneck. Of its time, about 45% was `malloc`/`free`: per call the future and its
//! `FuturesUnordered` node (the bench's), the function name (`Arc<str>`), the argument's
//! postcard `Vec` and its `Bytes`, the `oneshot`, and the answer's share of the read buffer
//! (a reference count shared with the connection task's thread). Then `Shared::submit` (the
//! pool lock, 4%), `oneshot` and `FuturesUnordered` wake-ups (about 12% of all samples).
//! Fixed since: arguments and answers of up to 30 bytes are held inline in the call (encoded
//! into a stack buffer; copied out of the read buffer), a call shares the function name of the
//! thread's previous call, answers are parsed in place: three allocations fewer per call, echo
//! from about 0.72M to 0.8–1.1M calls/s. In the profile after (11,049 samples) the caller's
//! thread is still 46%, now mostly the bench's own `FuturesUnordered` (`push`,
//! `poll_next`, `release_task`: about a quarter of it), the remaining two allocations (future
//! node, `oneshot`), `submit` and the call future's own poll.
//!
//! That is also why `ratio echo/framed_rpc_limit` cannot reach 0.10 with this burst: the
//! harness ceiling (`burst_harness_limit`, a pool that does nothing) is itself about 0.045 of
//! the framed limit — 1.6M calls/s against 35–41M — because 100,000 futures, each with a
//! oneshot and a cross-thread wake, polled from one thread, cost more than the whole framed
//! round trip. The pool keeps 50–70% of that ceiling. Batched calls do reach the wire:
//! `map_items_per_s` is 21–26M items/s, 0.6–0.7 of the framed limit.
//!
//! The bound under it (2026-12-03, another machine: AMD EPYC, framed limit 53–68M calls/s,
//! nine runs): 100,000 futures that do nothing but go pending once and be woken from their
//! own thread — no pool, no channel, no allocation of their own, no other thread, no wire and
//! no worker — come in at 6.2–6.9M calls/s, `ratio pending_once_limit/framed_rpc_limit`
//! 0.091–0.121. A call to a worker process pays at least that on the caller's thread,
//! and the pool's connection tasks and the two worker processes share the same two cores, so
//! 0.10 of the framed limit is out of reach for separate call futures issued this way by
//! construction, not by a cost the pool could remove. The pool keeps 0.26–0.34 of that bound
//! (`ratio echo/pending_once_limit`) and 0.59–0.67 of the harness ceiling; echo/framed was
//! 0.026–0.038. Per call in a burst (callgrind, 200,000 calls): the caller's thread
//! about 2,700 instructions (the bench's `FuturesUnordered` about 800 of them, `malloc` and
//! `free` of the future's node and the answer's `oneshot` about 700), the two connection
//! tasks about 1,200, the worker about 1,400.
//!
//! The same burst from a runtime task ran at 0.04–0.10M calls/s, 20–40 times slower, until the
//! answer's channel changed: tokio's `oneshot` spends the task's cooperative budget (128
//! operations per poll), so each poll of the task took 128 answers and `FuturesUnordered` spun
//! on the rest (futures-rs issue 2053). With `futures::channel::oneshot` the call's wait spends
//! none: `ratio echo_in_task/echo` 0.83–0.93.
//!
//! **Latency** (`perf stat`, 40,000 calls one at a time, pinned): a round trip costs about as
//! much CPU as it takes time — it is serial — and most of it is the kernel's wake-up path
//! (0.71–0.77 s of system time per 40,000 round trips for the pool, the raw and the tokio echo
//! alike: about 18 us each on this VM). User time per round trip: raw 1 us, tokio echo 4–5 us,
//! pool 6–7 us. Context switches: 2 per round trip for all three. Step by step (p50 of one
//! quiet profiling run, `WORKCREW_BENCH_PROFILE_LATENCY=20000`): raw 9.9 us, tokio on both ends
//! 11.9 us, the SDK worker called by hand 14.5 us, the pool 17.1 us — tokio, the worker's
//! serving loop and the pool's caller side each add 2–3 us. Two wastes found and fixed:
//! tokio's `UnixStream` registers for writable edges too, and each read by the peer is one, so
//! every call woke the pool's thread and every answer the worker's for nothing (4
//! `epoll_wait` returns per call, now 2; see `workcrew::protocol::socket`); and a lone call
//! went through the connection task, a hand-over that from `block_on` is one more
//! cross-thread wake-up (now its caller writes it, `conn::Direct`: `call_p50_block_on/raw_p50`
//! 2.16–2.33 before, 1.76–2.02 after, five alternating runs each).
//!
//! **Latency, second look** (2026-12-02, later; `perf stat` over loops of 50,000 lone calls of
//! one kind at a time, `strace -f`, and `valgrind --tool=callgrind` over 10,000 pool calls):
//! - The kernel is most of a round trip's cost on this VM: of the CPU time all processes spend
//!   per round trip, 85% is system time (about 30 us of system time against 4–6 us of user
//!   time per round trip, for the pool and for an SDK worker called by hand alike), the
//!   wake-up of a sleeping thread on the other CPU each way. User-space instructions are the
//!   smaller lever; sleeps and system calls the larger.
//! - System calls per lone call are at their floor: the pool's side makes three (`send` of
//!   the call, `epoll_wait`, `read` of the answer), as any async client does; a blocking
//!   client makes two. The worker made three (`epoll_wait`, `recvmsg`, `send`) and now makes
//!   two, as the raw echo child: between calls its serving loop waits for the next one in
//!   `recvmsg` itself when nothing else can need its thread (see `workcrew::worker`'s serving
//!   notes). Measured: the SDK worker called by hand in a loop of 50,000, five alternating
//!   runs, 1.29–1.37 s with the wait against 1.40–1.46 s without, about 2 us per round trip;
//!   user time 0.21–0.27 s against 0.27–0.40 s.
//! - Instructions per lone call (callgrind): the pool's side about 8,500 — the connection task
//!   3,450 (its `select!` of seven branches, built twice per answer, 1,490; the exchange with
//!   the pool 390; delivering the answer 334; parsing it 297; latency statistics 203), the
//!   call future 2,090 (routing and the direct write 850), the runtime's park 1,470, the
//!   oneshot 370. The SDK worker about 2,730 (handler, `FuturesUnordered`, serving loop), now
//!   2,210: a trivial async call is answered when first polled, without joining the worker's
//!   `FuturesUnordered`, and function names are hashed with FNV-1a instead of SipHash. A tokio
//!   echo child (read_exact, write_all, the runtime's park) takes about 3,500. With a blocking
//!   client on our end, the SDK worker's round trip is 18.7–20.1 us against 17.1–17.9 us for
//!   the raw echo child (three runs). Right after a wake-up these instructions run slowly
//!   (cold caches): the pool's ~6,000 instructions per call more than a hand-written tokio
//!   client cost it several microseconds, not one.
//! - So with an async caller the floor is about the SDK worker called by hand,
//!   `call_p50/raw_p50` 1.15–1.45 in the same runs, before the pool does anything; the pool's
//!   bookkeeping (routing, the in-flight count, statistics, the hand-over from the connection
//!   task to the caller) adds the rest. Going below needs the caller to read its own answer
//!   instead of the connection task (one task and one oneshot fewer per call), which the
//!   connection task's ownership of the socket's reading half does not allow today.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use futures::stream::{FuturesUnordered, StreamExt};
use workcrew::process::ProcessPool;
use workcrew::worker::Worker;

/// In a child process: `worker` serves the protocol, `raw` echoes raw 16-byte frames.
const MODE_ENV: &str = "WORKCREW_BENCH_PROCESS_MODE";

/// piscina's echo throughput on this machine, in calls per second: the figure given in issue 9
/// for the Node.js worker pool the seeds' users would otherwise pick. A constant: piscina is an
/// npm package, and this repository installs none.
const PISCINA_CALLS_PER_S: f64 = 32_357.0;

fn spin(ms: u64) -> u64 {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut x = 0u64;
    while Instant::now() < end {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    x
}

fn serve_worker(concurrency: u32) {
    // One thread: a worker process gains nothing from cross-thread wake-ups.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(
        Worker::builder()
            .async_function("echo", |x: u64| async move { Ok::<_, String>(x) })
            .function("spin", |ms: u64| Ok::<_, String>(spin(ms)))
            .concurrency(concurrency)
            .build()
            .serve(),
    )
    .expect("serve");
}

/// A worker as a user writes it who sets nothing: an async echo, the SDK's default concurrency.
fn serve_default_worker() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(
        Worker::builder()
            .async_function("echo", |x: u64| async move { Ok::<_, String>(x) })
            .build()
            .serve(),
    )
    .expect("serve");
}

fn serve_raw() {
    // fd 0 is a socket: read 16-byte frames and write them back until end of file.
    let fd = std::io::stdin().lock();
    let owned = std::os::fd::AsFd::as_fd(&fd).try_clone_to_owned().unwrap();
    let mut sock = std::os::unix::net::UnixStream::from(owned);
    let mut buf = [0u8; 16];
    while sock.read_exact(&mut buf).is_ok() {
        if sock.write_all(&buf).is_err() {
            break;
        }
    }
}

/// Bytes of a framed-RPC frame: a 4-byte length, an 8-byte call id and an 8-byte payload.
const FRAMED_LEN: usize = 20;

fn serve_framed() {
    // fd 0 is a socket: read framed requests and answer each with the same frame, through
    // buffers, flushing only when no more requests are already buffered (one write per batch,
    // as the pool's connection does).
    let fd = std::io::stdin().lock();
    let owned = std::os::fd::AsFd::as_fd(&fd).try_clone_to_owned().unwrap();
    let sock = std::os::unix::net::UnixStream::from(owned);
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, sock.try_clone().unwrap());
    let mut writer = std::io::BufWriter::with_capacity(64 * 1024, sock);
    let mut frame = [0u8; FRAMED_LEN];
    while reader.read_exact(&mut frame).is_ok() {
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, FRAMED_LEN - 4, "framed echo: bad length");
        if writer.write_all(&frame).is_err() {
            break;
        }
        if reader.buffer().is_empty() && writer.flush().is_err() {
            break;
        }
    }
}

/// The framing limit: `calls` request/response round trips with call ids over socket pairs to
/// 2 child processes that echo them, at most `FRAMED_WINDOW` unanswered per child, with blocking
/// std I/O on a writer and a reader thread per child and no pool. What the wire allows a pool of
/// 2 workers; `echo_calls_per_s` is divided by it.
fn framed_rpc_calls_per_s(calls: u64) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    const FRAMED_WINDOW: u64 = 1024;
    const CHILDREN: u64 = 2;

    let per_child = calls / CHILDREN;
    let mut children = Vec::new();
    let mut socks = Vec::new();
    for _ in 0..CHILDREN {
        let (sock, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .env(MODE_ENV, "framed")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .unwrap();
        children.push(child);
        socks.push(sock);
    }
    let t = Instant::now();
    std::thread::scope(|scope| {
        for sock in &socks {
            let answered = Arc::new(AtomicU64::new(0));
            let writer_thread = {
                let answered = Arc::clone(&answered);
                let sock = sock.try_clone().unwrap();
                scope.spawn(move || {
                    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sock);
                    let mut sent = 0u64;
                    while sent < per_child {
                        let room = FRAMED_WINDOW - (sent - answered.load(Ordering::Acquire));
                        if room == 0 {
                            std::thread::park();
                            continue;
                        }
                        let end = (sent + room).min(per_child);
                        for id in sent..end {
                            let mut frame = [0u8; FRAMED_LEN];
                            frame[..4].copy_from_slice(&((FRAMED_LEN - 4) as u32).to_le_bytes());
                            frame[4..12].copy_from_slice(&id.to_le_bytes());
                            frame[12..].copy_from_slice(&id.wrapping_mul(3).to_le_bytes());
                            out.write_all(&frame).unwrap();
                        }
                        sent = end;
                        out.flush().unwrap();
                    }
                })
            };
            let writer = writer_thread.thread().clone();
            let sock = sock.try_clone().unwrap();
            scope.spawn(move || {
                let mut input = std::io::BufReader::with_capacity(64 * 1024, sock);
                let mut frame = [0u8; FRAMED_LEN];
                for expected in 0..per_child {
                    input.read_exact(&mut frame).unwrap();
                    let id = u64::from_le_bytes(frame[4..12].try_into().unwrap());
                    assert_eq!(id, expected, "framed echo: answers out of order");
                    if input.buffer().is_empty() || expected + 1 == per_child {
                        answered.store(expected + 1, Ordering::Release);
                        writer.unpark();
                    }
                }
            });
        }
    });
    let elapsed = t.elapsed();
    for (sock, mut child) in socks.into_iter().zip(children) {
        drop(sock);
        let _ = child.wait();
    }
    (per_child * CHILDREN) as f64 / elapsed.as_secs_f64()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// The runtime's worker threads, as they start: their thread ids, for [`Pinned`].
static RUNTIME_THREADS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| {
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            RUNTIME_THREADS.lock().unwrap().push(tid);
        })
        .enable_all()
        .build()
        .unwrap()
}

/// While alive, the caller's side of a latency measurement (this thread and the runtime's
/// threads, which run the connection tasks) runs on CPU 0 and the other side (the workers
/// and the raw echo child) on CPU 1, so a pool call and a raw round trip cross between the
/// same two CPUs. Unpinned, the kernel sometimes runs a blocking round trip's two ends on one
/// CPU (a hand-over without an inter-processor interrupt, about twice as fast on this VM) and
/// sometimes not, and the raw baseline jumps between the two from run to run. With fewer than
/// two CPUs it does nothing.
struct Pinned {
    pinned: Vec<Option<rustix::process::Pid>>,
}

impl Pinned {
    fn new(workers: &[u32]) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            return Pinned { pinned: Vec::new() };
        }
        let mut pinned = vec![None];
        pinned.extend(
            RUNTIME_THREADS
                .lock()
                .unwrap()
                .iter()
                .map(|&tid| rustix::process::Pid::from_raw(tid)),
        );
        for pid in &pinned {
            set_cpus(*pid, &[0]);
        }
        for &pid in workers {
            set_cpus(rustix::process::Pid::from_raw(pid as i32), &[1]);
        }
        Pinned { pinned }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let all: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU).collect();
        for pid in &self.pinned {
            set_cpus(*pid, &all);
        }
    }
}

/// Lets `pid` (`None`: the calling thread) run only on `cpus`.
fn set_cpus(pid: Option<rustix::process::Pid>, cpus: &[usize]) {
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    if let Err(e) = rustix::thread::sched_setaffinity(pid, &set) {
        eprintln!("cannot pin {pid:?} to CPUs {cpus:?}: {e}");
    }
}

/// Pool calls, raw round trips and tokio round trips per block of [`latencies`].
const LATENCY_BLOCK: usize = 50;

/// `rounds` echo calls one after another, `rounds` raw round trips and `rounds` tokio round
/// trips, interleaved in blocks of [`LATENCY_BLOCK`] so that all three see the same machine (a
/// drift in the VM's wake-up cost moves all, not their ratios), with both sides pinned
/// ([`Pinned`]). Raw round trips block the thread, which is idle in between.
async fn latencies(p: &ProcessPool, rounds: usize) -> Latencies {
    let mut raw = RawEcho::start("raw");
    let mut tokio_raw = TokioEcho::start().await;
    let mut sdk = SdkEcho::start().await;
    let mut sdk_blocking = SdkEcho::start().await.into_blocking();
    let mut workers = p.worker_pids();
    workers.extend([raw.pid(), tokio_raw.pid(), sdk.pid(), sdk_blocking.pid()]);
    let pinned = Pinned::new(&workers);
    let mut calls = Vec::with_capacity(rounds);
    let mut raws = Vec::with_capacity(rounds);
    let mut tokio_raws = Vec::with_capacity(rounds);
    let mut sdk_raws = Vec::with_capacity(rounds);
    let mut sdk_blockings = Vec::with_capacity(rounds);
    let mut i = 0u64;
    while calls.len() < rounds {
        for _ in 0..LATENCY_BLOCK {
            let t = Instant::now();
            let _: u64 = p.call("echo", &i).await.unwrap();
            calls.push(t.elapsed());
            i += 1;
        }
        for _ in 0..LATENCY_BLOCK {
            let t = Instant::now();
            raw.round_trip();
            raws.push(t.elapsed());
        }
        for _ in 0..LATENCY_BLOCK {
            let t = Instant::now();
            tokio_raw.round_trip().await;
            tokio_raws.push(t.elapsed());
        }
        for _ in 0..LATENCY_BLOCK {
            let t = Instant::now();
            sdk.round_trip().await;
            sdk_raws.push(t.elapsed());
        }
        for _ in 0..LATENCY_BLOCK {
            let t = Instant::now();
            sdk_blocking.round_trip();
            sdk_blockings.push(t.elapsed());
        }
    }
    drop(pinned);
    raw.stop();
    tokio_raw.stop().await;
    sdk.stop().await;
    sdk_blocking.stop().await;
    for v in [
        &mut calls,
        &mut raws,
        &mut tokio_raws,
        &mut sdk_raws,
        &mut sdk_blockings,
    ] {
        v.sort();
    }
    Latencies {
        calls,
        raws,
        tokio_raws,
        sdk_raws,
        sdk_blockings,
    }
}

/// Sorted latencies measured side by side: pool calls, raw round trips (blocking std I/O on
/// both ends: the physical limit), tokio round trips (non-blocking I/O through the runtime on
/// both ends, as any async pool and worker do it: the limit for one).
struct Latencies {
    calls: Vec<Duration>,
    raws: Vec<Duration>,
    tokio_raws: Vec<Duration>,
    /// Protocol round trips to an SDK worker by hand, without the pool.
    sdk_raws: Vec<Duration>,
    /// The same with blocking std I/O on our end, as the raw round trips: the worker's own
    /// cost against the raw echo child's.
    sdk_blockings: Vec<Duration>,
}

impl Latencies {
    /// Pool, raw, tokio, SDK-worker and SDK-worker-from-a-blocking-client round trips at
    /// quantile `q`.
    fn at(&self, q: f64) -> [Duration; 5] {
        [
            &self.calls,
            &self.raws,
            &self.tokio_raws,
            &self.sdk_raws,
            &self.sdk_blockings,
        ]
        .map(|v| percentile(v, q))
    }
}

/// A child that echoes raw 16-byte frames, and our end of its socket pair.
struct RawEcho {
    sock: std::os::unix::net::UnixStream,
    child: std::process::Child,
}

impl RawEcho {
    /// A child in `mode` (`raw`: blocking reads and writes; `tokio_raw`: through tokio).
    fn start(mode: &str) -> Self {
        let (sock, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .env(MODE_ENV, mode)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .unwrap();
        RawEcho { sock, child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn round_trip(&mut self) {
        let mut buf = [7u8; 16];
        self.sock.write_all(&buf).unwrap();
        self.sock.read_exact(&mut buf).unwrap();
    }

    fn stop(self) {
        let RawEcho { sock, mut child } = self;
        drop(sock);
        let _ = child.wait();
    }
}

/// The same echo with tokio on both ends: a child echoing through a current-thread runtime
/// (as the bench's workers run), and our end read and written through this runtime.
struct TokioEcho {
    sock: tokio::net::UnixStream,
    child: std::process::Child,
}

impl TokioEcho {
    async fn start() -> Self {
        let RawEcho { sock, child } = RawEcho::start("tokio_raw");
        sock.set_nonblocking(true).unwrap();
        let sock = tokio::net::UnixStream::from_std(sock).unwrap();
        TokioEcho { sock, child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn round_trip(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [7u8; 16];
        self.sock.write_all(&buf).await.unwrap();
        self.sock.read_exact(&mut buf).await.unwrap();
    }

    async fn stop(self) {
        let TokioEcho { sock, child } = self;
        drop(sock);
        reap(child).await;
    }
}

/// A worker of this bench (the SDK's serving loop, as the pool's workers run) called by hand
/// over its socket: the protocol's round trip without the pool, through tokio on our end.
struct SdkEcho {
    sock: tokio::net::UnixStream,
    child: std::process::Child,
    next: u64,
}

impl SdkEcho {
    async fn start() -> Self {
        use futures::SinkExt;
        use workcrew::protocol::{Encoding, FrameCodec, Message, Welcome, DEFAULT_MAX_FRAME};
        let RawEcho { sock, child } = RawEcho::start("worker");
        sock.set_nonblocking(true).unwrap();
        let sock = tokio::net::UnixStream::from_std(sock).unwrap();
        let mut framed = tokio_util::codec::Framed::new(sock, FrameCodec::default());
        let hello = match Message::from_frame(framed.next().await.unwrap().unwrap()).unwrap() {
            Message::Hello(hello) => hello,
            other => panic!("expected HELLO, got {other:?}"),
        };
        let welcome = Welcome::negotiate(&hello, &[Encoding::Postcard], DEFAULT_MAX_FRAME, 0)
            .expect("the bench worker takes postcard");
        framed
            .send(Message::Welcome(welcome).to_frame())
            .await
            .unwrap();
        let parts = framed.into_parts();
        assert!(
            parts.read_buf.is_empty(),
            "nothing comes before the first call"
        );
        SdkEcho {
            sock: parts.io,
            child,
            next: 1,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn round_trip(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let id = self.next;
        self.next += 1;
        self.sock.write_all(&echo_call(id, id)).await.unwrap();
        // The answer in one read, as the pool reads it (it is a few bytes).
        let mut buf = [0u8; 256];
        let mut have = 0;
        while !whole_result(&buf[..have]) {
            let n = self.sock.read(&mut buf[have..]).await.unwrap();
            assert!(n > 0, "the worker closed the channel");
            have += n;
        }
    }

    /// The same worker, called from blocking std I/O on our end.
    fn into_blocking(self) -> SdkBlocking {
        let SdkEcho { sock, child, .. } = self;
        let sock = sock.into_std().unwrap();
        sock.set_nonblocking(false).unwrap();
        SdkBlocking {
            sock,
            child,
            // One call, sent again and again: the worker answers each, one at a time.
            call: echo_call(1, 7),
        }
    }

    async fn stop(self) {
        let SdkEcho { sock, child, .. } = self;
        drop(sock);
        reap(child).await;
    }
}

/// The encoded `CALL` of the bench worker's `echo` with id `id` and argument `arg`.
fn echo_call(id: u64, arg: u64) -> Vec<u8> {
    use tokio_util::codec::Encoder;
    use workcrew::protocol::{Encoding, FrameCodec, Message};
    let call = Message::Call {
        id,
        function: "echo".into(),
        payload: Encoding::Postcard.encode(&arg).unwrap(),
    };
    let mut wire = bytes::BytesMut::new();
    FrameCodec::default()
        .encode(call.to_frame(), &mut wire)
        .unwrap();
    wire.to_vec()
}

/// Whether `read` holds a whole frame; if so, asserts that it is a `RESULT`.
fn whole_result(read: &[u8]) -> bool {
    if read.len() < 5 || read.len() < 4 + u32::from_be_bytes(read[..4].try_into().unwrap()) as usize
    {
        return false;
    }
    assert_eq!(read[4], workcrew::protocol::FrameType::Result as u8);
    true
}

/// An SDK worker of this bench called by hand from blocking std I/O: a `CALL` written and its
/// `RESULT` read, as the raw echo's 16 bytes are.
struct SdkBlocking {
    sock: std::os::unix::net::UnixStream,
    child: std::process::Child,
    /// The encoded `CALL`.
    call: Vec<u8>,
}

impl SdkBlocking {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn round_trip(&mut self) {
        self.sock.write_all(&self.call).unwrap();
        let mut buf = [0u8; 256];
        let mut have = 0;
        while !whole_result(&buf[..have]) {
            let n = self.sock.read(&mut buf[have..]).unwrap();
            assert!(n > 0, "the worker closed the channel");
            have += n;
        }
    }

    async fn stop(self) {
        let SdkBlocking { sock, child, .. } = self;
        drop(sock);
        reap(child).await;
    }
}

/// Waits for an echo child whose socket was closed (it exits at end of file), off the runtime.
async fn reap(mut child: std::process::Child) {
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

fn serve_tokio_raw() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fd = std::os::fd::AsFd::as_fd(&std::io::stdin())
            .try_clone_to_owned()
            .unwrap();
        let sock = std::os::unix::net::UnixStream::from(fd);
        sock.set_nonblocking(true).unwrap();
        let mut sock = tokio::net::UnixStream::from_std(sock).unwrap();
        let mut buf = [0u8; 16];
        while sock.read_exact(&mut buf).await.is_ok() {
            if sock.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
}

/// `calls` echo calls issued at once; the time until every answer is in.
async fn echo_burst(p: &ProcessPool, calls: u64) -> Duration {
    let t = Instant::now();
    let mut running: FuturesUnordered<_> = (0..calls)
        .map(|i| async move { (i, p.call::<_, u64>("echo", &i).await) })
        .collect();
    let mut answered = 0u64;
    while let Some((i, r)) = running.next().await {
        assert!(matches!(r, Ok(v) if v == i));
        answered += 1;
    }
    assert_eq!(answered, calls);
    t.elapsed()
}

/// The burst's own ceiling: `calls` futures in one `FuturesUnordered`, as in [`echo_burst`],
/// each sending its argument and a oneshot sender through a channel to a thread that answers
/// at once (one thread: two contend on the channel and do less) — a pool with no wire, no
/// worker and no bookkeeping, only what any pool's caller pays per call (a future, a channel
/// send, a oneshot, a cross-thread wake). The time until every answer is in.
async fn harness_burst(calls: u64) -> Duration {
    let (to_answer, calls_in) = flume::unbounded::<(u64, tokio::sync::oneshot::Sender<u64>)>();
    let answerer = std::thread::spawn(move || {
        while let Ok((i, reply)) = calls_in.recv() {
            let _ = reply.send(i);
        }
    });
    let t = Instant::now();
    let mut running: FuturesUnordered<_> = (0..calls)
        .map(|i| {
            let to_answer = &to_answer;
            async move {
                let (reply, answer) = tokio::sync::oneshot::channel();
                to_answer.send((i, reply)).unwrap();
                (i, answer.await)
            }
        })
        .collect();
    let mut answered = 0u64;
    while let Some((i, r)) = running.next().await {
        assert!(matches!(r, Ok(v) if v == i));
        answered += 1;
    }
    assert_eq!(answered, calls);
    let elapsed = t.elapsed();
    drop(running);
    drop(to_answer);
    answerer.join().unwrap();
    elapsed
}

/// The bound under any pool's burst: `calls` futures in one `FuturesUnordered`, as in
/// [`echo_burst`], each of which goes pending once and is then woken and answered — what every
/// call to another process does at the least — with no pool, no channel and no other thread:
/// the answers are handed out on this thread, each with a same-thread wake (cheaper than the
/// cross-thread wake a real answer costs). The time until every answer is in.
async fn pending_once_burst(calls: u64) -> Duration {
    use std::cell::{Cell, RefCell};
    use std::task::{Poll, Waker};

    struct Slot {
        answer: Cell<Option<u64>>,
        waker: Cell<Option<Waker>>,
    }
    let slots: Vec<Slot> = (0..calls)
        .map(|_| Slot {
            answer: Cell::new(None),
            waker: Cell::new(None),
        })
        .collect();
    let waiting = RefCell::new(Vec::new());
    let t = Instant::now();
    let mut running: FuturesUnordered<_> = (0..calls)
        .map(|i| {
            let (slots, waiting) = (&slots, &waiting);
            futures::future::poll_fn(move |cx| {
                let slot = &slots[i as usize];
                match slot.answer.take() {
                    Some(v) => Poll::Ready((i, v)),
                    None => {
                        slot.waker.set(Some(cx.waker().clone()));
                        waiting.borrow_mut().push(i);
                        Poll::Pending
                    }
                }
            })
        })
        .collect();
    let mut answered = 0u64;
    futures::future::poll_fn(|cx| loop {
        match running.poll_next_unpin(cx) {
            Poll::Ready(Some((i, v))) => {
                assert_eq!(i, v);
                answered += 1;
            }
            Poll::Ready(None) => return Poll::Ready(()),
            Poll::Pending => {
                let ids = std::mem::take(&mut *waiting.borrow_mut());
                if ids.is_empty() {
                    // `FuturesUnordered` yielded and woke itself.
                    return Poll::Pending;
                }
                for i in ids {
                    let slot = &slots[i as usize];
                    slot.answer.set(Some(i));
                    slot.waker.take().expect("a pending call's waker").wake();
                }
            }
        }
    })
    .await;
    assert_eq!(answered, calls);
    t.elapsed()
}

/// Set to a number N: the binary only runs N echo bursts of 100,000 calls (no criterion, no
/// figures), for a profiler (`perf record`, `valgrind --tool=callgrind`) to watch.
const PROFILE_ENV: &str = "WORKCREW_BENCH_PROFILE_ECHO";

/// Set to a number N: the binary only makes N echo calls one at a time from a runtime task
/// (beside as many raw and tokio round trips; no criterion, no figures), for `strace -c` or a
/// profiler to watch the latency path.
const PROFILE_LATENCY_ENV: &str = "WORKCREW_BENCH_PROFILE_LATENCY";

fn profile_latency(calls: usize) {
    let rt = runtime();
    rt.block_on(async {
        let p = pool(2, "worker").await;
        let in_task = p.clone();
        let measured = tokio::spawn(async move { latencies(&in_task, calls).await })
            .await
            .unwrap();
        let [call50, raw50, tokio50, sdk50, blocking50] = measured.at(0.5);
        let [call99, raw99, tokio99, sdk99, blocking99] = measured.at(0.99);
        println!(
            "p50: call {call50:?}, raw {raw50:?}, tokio {tokio50:?}, sdk worker {sdk50:?}, \
             sdk worker from a blocking client {blocking50:?}"
        );
        println!(
            "p99: call {call99:?}, raw {raw99:?}, tokio {tokio99:?}, sdk worker {sdk99:?}, \
             sdk worker from a blocking client {blocking99:?}"
        );
        p.stop().await;
    });
}

fn profile_echo(bursts: u32) {
    let rt = runtime();
    rt.block_on(async {
        let p = pool(2, "worker").await;
        for _ in 0..bursts {
            echo_burst(&p, 100_000).await;
        }
        p.stop().await;
    });
}

/// Criterion statistics, each pool figure next to its baseline from the same run: a burst of
/// 100,000 echo calls; one call at a time against a raw socket-pair round trip; a map of
/// 1,000,000 items.
fn bench_criterion(c: &mut Criterion, rt: &tokio::runtime::Runtime, p: &ProcessPool) {
    let mut g = c.benchmark_group("process_pool");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("echo_burst_100k", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += echo_burst(p, 100_000).await;
                }
                total
            })
        })
    });
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("map_1m", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    let out: Vec<u64> = p.map("echo", 0..1_000_000u64).await.unwrap();
                    assert_eq!(out.len(), 1_000_000);
                }
                t.elapsed()
            })
        })
    });
    g.throughput(Throughput::Elements(1));
    g.sample_size(50);
    g.bench_function("call_round_trip", |b| {
        b.iter_custom(|iters| {
            let p = p.clone();
            rt.block_on(async move {
                tokio::spawn(async move {
                    let t = Instant::now();
                    for i in 0..iters {
                        let _: u64 = p.call("echo", &i).await.unwrap();
                    }
                    t.elapsed()
                })
                .await
                .unwrap()
            })
        })
    });
    let mut raw = RawEcho::start("raw");
    g.bench_function("raw_socketpair_round_trip", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                raw.round_trip();
            }
            t.elapsed()
        })
    });
    raw.stop();
    g.finish();
}

async fn pool(workers: usize, mode: &str) -> ProcessPool {
    pool_builder(workers, mode)
        .build()
        .await
        .expect("bench workers start")
}

/// `workers` workers of this binary in `mode` ([`MODE_ENV`]), to be built.
fn pool_builder(workers: usize, mode: &str) -> workcrew::process::ProcessPoolBuilder {
    ProcessPool::builder(std::env::current_exe().unwrap())
        .env(MODE_ENV, mode)
        .workers(workers)
}

/// The real `node` executable, or why there is none.
fn node() -> Result<PathBuf, String> {
    let out = Command::new("node")
        .args(["-p", "process.execPath"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("node -p failed: {}", out.status));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Two Node.js workers serving `benches/node_echo.js`, each announcing `concurrency`.
async fn node_pool(node: &std::path::Path, concurrency: u32) -> ProcessPool {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    ProcessPool::builder(node)
        .arg(root.join("../../workers/node/serve.js"))
        .arg(root.join("benches/node_echo.js"))
        .env("WORKCREW_NODE_CONCURRENCY", concurrency.to_string())
        .workers(2)
        .build()
        .await
        .expect("node workers start")
}

/// Echo calls per second: the median of 5 bursts of `calls`, after one to warm up.
async fn echo_calls_per_s(p: &ProcessPool, calls: u64) -> f64 {
    median_calls_per_s(calls, || echo_burst(p, calls)).await
}

/// Calls per second of the median of 5 `burst`s of `calls`, after one to warm up (as criterion
/// does).
async fn median_calls_per_s<F>(calls: u64, mut burst: impl FnMut() -> F) -> f64
where
    F: std::future::Future<Output = Duration>,
{
    burst().await;
    let mut bursts = Vec::new();
    for _ in 0..5 {
        bursts.push(burst().await);
    }
    bursts.sort();
    calls as f64 / bursts[2].as_secs_f64()
}

/// Prints latency figure `name` in microseconds.
fn print_us(name: &str, d: Duration) {
    println!("figure {name} {:.1} us", d.as_secs_f64() * 1e6);
}

/// Prints `ratio name` of two latencies.
fn print_ratio(name: &str, a: Duration, b: Duration) {
    println!("ratio {name} {:.2}", a.as_secs_f64() / b.as_secs_f64());
}

fn main() {
    match std::env::var(MODE_ENV).as_deref() {
        // Async echo may run many calls at once: a deep pipeline per worker.
        Ok("worker") => return serve_worker(1024),
        // One call at a time, for the CPU-bound figure.
        Ok("worker1") => return serve_worker(1),
        Ok("raw") => return serve_raw(),
        Ok("tokio_raw") => return serve_tokio_raw(),
        Ok("framed") => return serve_framed(),
        Ok("worker_default") => return serve_default_worker(),
        _ => {}
    }
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if let Ok(calls) = std::env::var(PROFILE_LATENCY_ENV) {
        return profile_latency(
            calls
                .parse()
                .expect("WORKCREW_BENCH_PROFILE_LATENCY: a number"),
        );
    }
    if let Ok(bursts) = std::env::var(PROFILE_ENV) {
        return profile_echo(
            bursts
                .parse()
                .expect("WORKCREW_BENCH_PROFILE_ECHO: a number"),
        );
    }
    let (calls, rounds, cpu_tasks, map_items) = if benchmarking {
        (100_000u64, 20_000, 200u64, 5_000_000u64)
    } else {
        (1_000, 200, 4, 10_000)
    };
    let rt = runtime();
    if benchmarking {
        let p = rt.block_on(pool(2, "worker"));
        let mut criterion = Criterion::default().configure_from_args();
        bench_criterion(&mut criterion, &rt, &p);
        criterion.final_summary();
        rt.block_on(p.stop());
    }
    rt.block_on(async {
        // Start-up: build to first answer.
        let t = Instant::now();
        let p = pool(2, "worker").await;
        let _: u64 = p.call("echo", &1u64).await.unwrap();
        let startup = t.elapsed();

        // Throughput: all calls issued at once, answers taken as they come;
        // the median of 5 bursts, after one to warm up (as criterion does).
        let calls_per_s = echo_calls_per_s(&p, calls).await;
        // The same from a runtime task, as a server's request handler issues them.
        let in_task_per_s = {
            let p = p.clone();
            tokio::spawn(async move { echo_calls_per_s(&p, calls).await })
                .await
                .unwrap()
        };

        // The burst with a pool that costs nothing: the harness's own ceiling.
        let harness_per_s = median_calls_per_s(calls, || harness_burst(calls)).await;
        // The same burst's bound: futures that only go pending once and are woken.
        let pending_once_per_s = median_calls_per_s(calls, || pending_once_burst(calls)).await;

        // Batched map: results in order.
        let t = Instant::now();
        let mapped: Vec<u64> = p.map("echo", 0..map_items).await.unwrap();
        let map_elapsed = t.elapsed();
        assert!(mapped.iter().enumerate().all(|(i, v)| *v == i as u64));
        let map_per_s = map_items as f64 / map_elapsed.as_secs_f64();

        // Latency at concurrency 1, from a runtime task (as a server's request
        // handler calls), and from `block_on`'s thread; each beside raw round trips.
        let in_task = {
            let p = p.clone();
            tokio::spawn(async move { latencies(&p, rounds).await })
                .await
                .unwrap()
        };
        let [p50, raw, tokio_raw, sdk_raw, sdk_blocking] = in_task.at(0.5);
        let [p99, raw_p99, tokio_raw_p99, _, _] = in_task.at(0.99);
        let from_main = latencies(&p, rounds).await;
        let [main_p50, main_raw, main_tokio_raw, _, _] = from_main.at(0.5);

        p.stop().await;

        // The same burst with a deadline on every call (the pool's `call_timeout`).
        let timed = pool_builder(2, "worker")
            .call_timeout(Duration::from_secs(60))
            .build()
            .await
            .expect("bench workers start");
        let timed_calls_per_s = echo_calls_per_s(&timed, calls).await;
        timed.stop().await;

        // The same burst to workers that set no concurrency (the SDK's default).
        let defaults = pool(2, "worker_default").await;
        let default_calls_per_s = echo_calls_per_s(&defaults, calls).await;
        defaults.stop().await;

        // The framing limit, with the pool stopped: the median of 5 runs after one to warm up.
        let framed_calls = if benchmarking { 4_000_000 } else { 20_000 };
        framed_rpc_calls_per_s(framed_calls);
        let mut framed_runs: Vec<f64> = (0..5)
            .map(|_| framed_rpc_calls_per_s(framed_calls))
            .collect();
        framed_runs.sort_by(f64::total_cmp);
        let framed = framed_runs[framed_runs.len() / 2];

        // CPU-bound parallel efficiency: workers that run one call at a time.
        let one = pool(1, "worker1").await;
        let t = Instant::now();
        futures::future::join_all((0..cpu_tasks).map(|_| one.call::<_, u64>("spin", &10u64))).await;
        let t1 = t.elapsed();
        one.stop().await;
        let two = pool(2, "worker1").await;
        let t = Instant::now();
        futures::future::join_all((0..cpu_tasks).map(|_| two.call::<_, u64>("spin", &10u64))).await;
        let t2 = t.elapsed();
        two.stop().await;

        // The same echo burst with Node.js workers, deep and one call at a time.
        let node_figures = match node() {
            Ok(node) => {
                let mut figures = Vec::new();
                for concurrency in [1024, 1] {
                    let p = node_pool(&node, concurrency).await;
                    figures.push(echo_calls_per_s(&p, calls).await);
                    p.stop().await;
                }
                Ok(figures)
            }
            Err(e) => Err(e),
        };

        if benchmarking {
            println!("figure echo_calls_per_s {calls_per_s:.0} calls/s");
            println!("figure echo_in_task_calls_per_s {in_task_per_s:.0} calls/s");
            println!("ratio echo_in_task/echo {:.3}", in_task_per_s / calls_per_s);
            println!("figure echo_timed_calls_per_s {timed_calls_per_s:.0} calls/s");
            println!(
                "ratio echo_timed/echo {:.3}",
                timed_calls_per_s / calls_per_s
            );
            println!("figure echo_default_calls_per_s {default_calls_per_s:.0} calls/s");
            println!(
                "ratio echo_default/echo {:.3}",
                default_calls_per_s / calls_per_s
            );
            println!("figure framed_rpc_limit_calls_per_s {framed:.0} calls/s");
            println!("ratio echo/framed_rpc_limit {:.3}", calls_per_s / framed);
            println!("figure burst_harness_limit_calls_per_s {harness_per_s:.0} calls/s");
            println!(
                "ratio echo/burst_harness_limit {:.3}",
                calls_per_s / harness_per_s
            );
            println!(
                "ratio burst_harness_limit/framed_rpc_limit {:.3}",
                harness_per_s / framed
            );
            println!("figure pending_once_limit_calls_per_s {pending_once_per_s:.0} calls/s");
            println!(
                "ratio echo/pending_once_limit {:.3}",
                calls_per_s / pending_once_per_s
            );
            println!(
                "ratio pending_once_limit/framed_rpc_limit {:.3}",
                pending_once_per_s / framed
            );
            print_us("call_p50_us", p50);
            print_us("call_p99_us", p99);
            print_us("raw_p50_us", raw);
            print_us("raw_p99_us", raw_p99);
            print_ratio("call_p50/raw_p50", p50, raw);
            print_ratio("call_p99/raw_p99", p99, raw_p99);
            print_us("tokio_raw_p50_us", tokio_raw);
            print_us("tokio_raw_p99_us", tokio_raw_p99);
            print_us("sdk_worker_raw_p50_us", sdk_raw);
            print_ratio("call_p50/sdk_worker_raw_p50", p50, sdk_raw);
            print_us("sdk_worker_blocking_p50_us", sdk_blocking);
            print_ratio("sdk_worker_blocking_p50/raw_p50", sdk_blocking, raw);
            print_ratio("call_p50/tokio_raw_p50", p50, tokio_raw);
            print_ratio("call_p99/tokio_raw_p99", p99, tokio_raw_p99);
            print_us("call_p50_block_on_us", main_p50);
            print_us("raw_p50_block_on_us", main_raw);
            print_ratio("call_p50_block_on/raw_p50", main_p50, main_raw);
            print_us("tokio_raw_p50_block_on_us", main_tokio_raw);
            print_ratio(
                "call_p50_block_on/tokio_raw_p50_block_on",
                main_p50,
                main_tokio_raw,
            );
            println!("figure map_items_per_s {map_per_s:.0} items/s");
            println!("ratio map/framed_rpc_limit {:.3}", map_per_s / framed);
            println!("figure startup_ms {:.1} ms", startup.as_secs_f64() * 1e3);
            println!(
                "ratio cpu_efficiency {:.3}",
                t1.as_secs_f64() / (2.0 * t2.as_secs_f64())
            );
            match node_figures {
                Ok(figures) => {
                    println!("figure node_worker_calls_per_s {:.0} calls/s", figures[0]);
                    println!(
                        "ratio node_worker/piscina {:.2}",
                        figures[0] / PISCINA_CALLS_PER_S
                    );
                    println!(
                        "figure node_worker_c1_calls_per_s {:.0} calls/s",
                        figures[1]
                    );
                }
                Err(e) => println!("skip node_worker_calls_per_s: no node on PATH ({e})"),
            }
        }
    });
}
