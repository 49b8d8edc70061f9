//! Progress on stderr: an indicatif bar on a terminal, else a plain line every few seconds,
//! nothing with `-q`.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::output::human_duration;

/// Jobs finished by this run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Succeeded.
    pub(crate) ok: AtomicU64,
    /// Failed (after retries).
    pub(crate) failed: AtomicU64,
}

/// How often the plain line is printed.
pub(crate) const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// What the display knows up front.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Totals {
    /// All jobs.
    pub(crate) total: u64,
    /// Done by earlier runs (or other processes) when this one started.
    pub(crate) done_before: u64,
    /// Failed earlier.
    pub(crate) failed_before: u64,
}

/// A running display; [`finish`](Self::finish) ends it.
#[derive(Debug)]
pub(crate) struct Display {
    task: Option<tokio::task::JoinHandle<()>>,
    done: CancellationToken,
}

impl Display {
    /// Starts the display for `counters`.
    pub(crate) fn start(counters: Arc<Counters>, totals: Totals, quiet: bool) -> Display {
        let done = CancellationToken::new();
        let task = if quiet {
            None
        } else if std::io::stderr().is_terminal() {
            Some(tokio::spawn(bar(counters, totals, done.clone())))
        } else {
            Some(tokio::spawn(plain(counters, totals, done.clone())))
        };
        Display { task, done }
    }

    /// Ends the display (the bar is cleared; the summary follows).
    pub(crate) async fn finish(mut self) {
        self.done.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The rate over the last ten seconds.
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    fn new() -> Rate {
        Rate {
            samples: VecDeque::new(),
        }
    }

    fn sample(&mut self, finished: u64) -> Option<f64> {
        let now = Instant::now();
        self.samples.push_back((now, finished));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(10))
        {
            self.samples.pop_front();
        }
        let (t0, n0) = *self.samples.front()?;
        let secs = now.duration_since(t0).as_secs_f64();
        (secs >= 0.5).then(|| finished.saturating_sub(n0) as f64 / secs)
    }
}

/// `done/total, N failed, rate, ETA`.
fn describe(counters: &Counters, totals: Totals, rate: &mut Rate) -> (u64, String) {
    let ok = counters.ok.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    let finished = totals.done_before + totals.failed_before + ok + failed;
    let failed_all = totals.failed_before + failed;
    let r = rate.sample(ok + failed);
    let left = totals.total.saturating_sub(finished);
    let rate_text = match r {
        Some(r) if r >= 10.0 => format!("{r:.0}/s"),
        Some(r) => format!("{r:.1}/s"),
        None => "-/s".to_owned(),
    };
    let eta = match r {
        _ if left == 0 => "0s".to_owned(),
        Some(r) if r > 0.0 => human_duration(Duration::from_secs_f64(left as f64 / r)),
        _ => "?".to_owned(),
    };
    (
        finished,
        format!("{failed_all} failed, {rate_text}, ETA {eta}"),
    )
}

async fn bar(counters: Arc<Counters>, totals: Totals, done: CancellationToken) {
    let bar = ProgressBar::with_draw_target(Some(totals.total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut rate = Rate::new();
    loop {
        let (finished, msg) = describe(&counters, totals, &mut rate);
        bar.set_position(finished);
        bar.set_message(msg);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = done.cancelled() => break,
        }
    }
    bar.finish_and_clear();
}

async fn plain(counters: Arc<Counters>, totals: Totals, done: CancellationToken) {
    let mut rate = Rate::new();
    // The first sample, so the first line has a rate.
    let _ = describe(&counters, totals, &mut rate);
    loop {
        tokio::select! {
            () = tokio::time::sleep(PLAIN_EVERY) => {}
            () = done.cancelled() => return,
        }
        let (finished, msg) = describe(&counters, totals, &mut rate);
        eprintln!("workcrew: {finished}/{} done, {msg}", totals.total);
    }
}
