//! `workcrew-demo-worker`: a worker process built with the Rust worker SDK
//! ([`workcrew::worker::Worker`]), used by the test suite's fault matrix
//! (`tests/process_pool_faults.rs`) and handy for trying the process pool.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = workcrew::process::ProcessPool::builder("workcrew-demo-worker").workers(2).build().await?;
//! let sum: i64 = pool.call("add", &(2, 3)).await?;
//! assert_eq!(sum, 5);
//! pool.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Functions
//!
//! Arguments and results are serde values (postcard on the wire: the pool and
//! the SDK negotiate it with a Rust worker).
//!
//! | function   | args         | does                                                                | returns            |
//! |------------|--------------|---------------------------------------------------------------------|--------------------|
//! | `echo`     | JSON value   | async; gives the value back                                         | the value          |
//! | `add`      | `(i64, i64)` | adds                                                                | `i64`              |
//! | `swap`     | [`Point`]    | swaps `x` and `y` (a struct through the encoding)                   | [`Point`]          |
//! | `check`    | `i64`        | fails (`negative: n`) on a negative number                          | the number         |
//! | `fail`     | `String`     | returns `Err(message)`                                              | —                  |
//! | `panic`    | `String`     | panics with the message; the worker keeps serving                   | —                  |
//! | `crash`    | `i32`        | exits the process with that code                                    | —                  |
//! | `abort`    | `()`         | `std::process::abort()` (signal 6)                                  | —                  |
//! | `sleep`    | `u64` ms     | async sleep; cancelled at once by `CANCEL`                          | the ms             |
//! | `spin`     | `u64` ms     | sync busy loop for that much wall-clock time (burns CPU time)       | the ms             |
//! | `hang`     | `()`         | sync, never returns and ignores its cancel (sleeps forever)          | —                  |
//! | `coop`     | `u64` ms     | sync; waits that long, but returns early when cancelled             | the ms             |
//! | `inc`      | `u64`        | async; adds one                                                     | `u64`              |
//! | `freeze`   | `()`         | async that blocks the serving thread: no `PONG`, no `CANCEL`        | —                  |
//! | `spam`     | `u32` n      | n lines to stdout and n to stderr                                   | n                  |
//! | `unterminated` | `u64` MiB | writes that much to stdout with no newline                         | the MiB            |
//! | `pid`      | `u64` ms     | async; sleeps, then reports the process id                         | `u32`              |
//! | `inflight` | `u64` ms     | async; counts itself in, sleeps, counts out                         | calls in flight on arrival (itself included) |
//! | `alloc`    | `u64` MiB    | allocates and touches that much, kept for good (RSS recycling)      | bytes held in all  |
//! | `garbage`  | `()`         | writes a frame header announcing 4 GiB onto the channel (fd 0)      | —                  |
//! | `greet_fd` | `String`     | takes descriptors: writes `hello <arg>` to each, closes it          | how many (`u32`)   |
//! | `env`      | `String`     | reads an environment variable                                       | `Option<String>`   |
//! | `cwd`      | `()`         | the working directory                                               | `String`           |
//!
//! `hang` is the runaway computation: a sync call that ignores its cancel. The
//! SDK does not answer it (the function has not ended), so the pool kills the
//! worker after the cancel grace. `coop` is the well-behaved sync function: it
//! sees the cancel ([`workcrew::worker::CallContext`]) and returns, and the call
//! is answered `cancelled`. `freeze` is the worker that really hangs (it breaks
//! the SDK's rule that async functions must not block): no `PONG`, no `CANCEL`
//! read, for the pool's heartbeat path.
//!
//! # Modes
//!
//! `WORKCREW_DEMO_MODE` (unset: serve normally) makes the worker fail its
//! start:
//!
//! - `never_ready`: sleeps forever without saying `HELLO`;
//! - `exit_before_hello`: exits with code 3 at once;
//! - `bad_hello`: sends a valid frame that is not `HELLO` (a `PONG`), then sleeps;
//! - `garbage_hello`: sends bytes that are no frame, then sleeps.
//!
//! `WORKCREW_DEMO_CONCURRENCY=n` sets the concurrency announced in `HELLO`
//! (default 4).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use workcrew::worker::{CallContext, ServeError, Worker};

/// The struct `swap` takes and returns.
#[derive(Debug, Serialize, Deserialize)]
pub struct Point {
    /// Becomes `y`.
    pub x: i64,
    /// Becomes `x`.
    pub y: i64,
    /// Kept.
    pub label: String,
}

/// Calls of `inflight` running now.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// What `alloc` keeps, so the memory stays resident.
static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A `PONG` frame (length 9, type 8, id 0): valid, but not `HELLO`.
const PONG_FRAME: [u8; 13] = [0, 0, 0, 9, 8, 0, 0, 0, 0, 0, 0, 0, 0];

/// A `RESULT` header for call 1 whose length (4 GiB - 1) is far above any
/// maximum frame size: the pool must treat the channel as broken.
const HUGE_HEADER: [u8; 13] = [0xff, 0xff, 0xff, 0xff, 4, 0, 0, 0, 0, 0, 0, 0, 1];

fn main() -> Result<(), ServeError> {
    match std::env::var("WORKCREW_DEMO_MODE").as_deref() {
        Err(_) | Ok("") => {}
        Ok("never_ready") => sleep_forever(),
        Ok("exit_before_hello") => std::process::exit(3),
        Ok("bad_hello") => {
            write_channel(&PONG_FRAME)?;
            sleep_forever()
        }
        Ok("garbage_hello") => {
            write_channel(b"\xde\xad\xbe\xef this is no frame at all\n")?;
            sleep_forever()
        }
        Ok(other) => {
            eprintln!("unknown WORKCREW_DEMO_MODE {other:?}");
            std::process::exit(2)
        }
    }
    let concurrency = std::env::var("WORKCREW_DEMO_CONCURRENCY")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4);
    Worker::builder()
        .async_function(
            "echo",
            |v: serde_json::Value| async move { Ok::<_, String>(v) },
        )
        .function("add", |(a, b): (i64, i64)| {
            a.checked_add(b)
                .ok_or_else(|| format!("{a} + {b} overflows"))
        })
        .function("swap", |p: Point| {
            Ok::<_, String>(Point {
                x: p.y,
                y: p.x,
                label: p.label,
            })
        })
        .function("check", |n: i64| {
            if n < 0 {
                Err(format!("negative: {n}"))
            } else {
                Ok(n)
            }
        })
        .function("fail", |message: String| Err::<(), _>(message))
        .function("panic", |message: String| -> Result<(), String> {
            panic!("{message}")
        })
        .function("crash", |code: i32| -> Result<(), String> {
            std::process::exit(code)
        })
        .function("abort", |(): ()| -> Result<(), String> {
            std::process::abort()
        })
        .async_function("sleep", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        })
        .function("spin", |ms: u64| {
            let until = Instant::now() + Duration::from_millis(ms);
            let mut x = 0u64;
            while Instant::now() < until {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            Ok::<_, String>(ms)
        })
        .function("hang", |(): ()| never_returns())
        .function("coop", |ms: u64| {
            let call = CallContext::current().ok_or("not inside a call")?;
            if call.wait_cancelled(Duration::from_millis(ms)) {
                return Err("cancelled".to_owned());
            }
            Ok::<_, String>(ms)
        })
        .async_function(
            "inc",
            |n: u64| async move { Ok::<_, String>(n.wrapping_add(1)) },
        )
        // Blocks the serving thread on purpose: see the module docs.
        .async_function("freeze", |(): ()| async move { never_returns() })
        .function("spam", |n: u32| {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            for i in 0..n {
                writeln!(out, "spam on stdout {i}").map_err(|e| e.to_string())?;
                writeln!(err, "spam on stderr {i}").map_err(|e| e.to_string())?;
            }
            out.flush().map_err(|e| e.to_string())?;
            Ok::<_, String>(n)
        })
        .async_function("pid", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(std::process::id())
        })
        .async_function("inflight", |ms: u64| async move {
            // Counted out by a guard, so a cancelled call (its future dropped) is too.
            let guard = InFlight::enter();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(guard.seen)
        })
        .function("alloc", |mib: u64| {
            let bytes = usize::try_from(mib << 20).map_err(|e| e.to_string())?;
            // Filled, not zeroed: zeroed pages may never become resident.
            let block = vec![0xa5u8; bytes];
            let mut held = HELD
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            held.push(block);
            Ok::<_, String>(held.iter().map(|b| b.len() as u64).sum::<u64>())
        })
        .function("garbage", |(): ()| {
            write_channel(&HUGE_HEADER).map_err(|e| e.to_string())
        })
        .function_with_fds("greet_fd", |name: String, fds: Vec<OwnedFd>| {
            let count = u32::try_from(fds.len()).map_err(|e| e.to_string())?;
            for fd in fds {
                let mut socket = std::net::TcpStream::from(fd);
                write!(socket, "hello {name}").map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(count)
        })
        .function("unterminated", |mib: u64| {
            // One line of `mib` MiB with no newline, then the call returns: the pool must not
            // hold the whole line to forward it.
            let chunk = vec![b'x'; 1 << 20];
            let mut out = std::io::stdout().lock();
            for _ in 0..mib {
                out.write_all(&chunk).map_err(|e| e.to_string())?;
            }
            out.flush().map_err(|e| e.to_string())?;
            Ok::<_, String>(mib)
        })
        .function("env", |name: String| {
            Ok::<_, String>(std::env::var(name).ok())
        })
        .function("cwd", |(): ()| {
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .map_err(|e| e.to_string())
        })
        .concurrency(concurrency)
        .build()
        .run()
}

/// Writes `bytes` straight onto the protocol channel (fd 0), through a
/// duplicate of the descriptor, bypassing the SDK.
fn write_channel(bytes: &[u8]) -> std::io::Result<()> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
    std::fs::File::from(fd).write_all(bytes)
}

/// `hang` and `freeze`: sleeps forever on the calling thread.
fn never_returns() -> Result<(), String> {
    sleep_forever()
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// One `inflight` call, counted while it lives.
struct InFlight {
    seen: usize,
}

impl InFlight {
    fn enter() -> Self {
        InFlight {
            seen: IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}
