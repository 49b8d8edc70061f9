//! `workcrew status` and `workcrew reset`: a job's state in its journal.

use std::time::Duration;

use anyhow::{Context, Result};
use workcrew::batch::{Id, StoreProgress};

use crate::config::Selection;
use crate::exit_codes::ExitCode;
use crate::input;
use crate::output::human_duration;

/// The job's name: `--job`, or from the input and command (which reads the input).
fn job_name(select: &Selection) -> Result<(String, Option<input::Input>)> {
    if select.job.is_some() {
        let input = match &select.input {
            Some(path) => input::read(Some(path), select.text_lines).ok(),
            None => None,
        };
        return Ok((input::job_name(select, None), input));
    }
    let input = input::read(select.input.as_deref(), select.text_lines)?;
    Ok((
        input::job_name(select, Some(input.content_hash)),
        Some(input),
    ))
}

/// Prints done / failed / pending, the rate and ETA (when the job is running), and the
/// first failures. Exits 1 when the job has failures, else 0.
pub(crate) async fn status(select: Selection, failures: u64) -> Result<ExitCode> {
    let (name, input) = job_name(&select)?;
    if let Some(code) = no_journal(&select) {
        return Ok(code);
    }
    let store = crate::journal::open(&select.store).await?;
    let journal = crate::journal::describe(&select.store);
    let first = match store.progress(&name).await {
        Ok(p) => p,
        // Every store answers `Conflict` for a job it does not have.
        Err(e) if e.kind() == workcrew::batch::StoreErrorKind::Conflict => {
            println!("job {name}: not in the journal {journal} (never run, or reset)");
            return Ok(ExitCode::Success);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read job {name} in {journal}")),
    };
    // A rate needs two readings: taken only while something is in flight.
    let (p, rate) = if first.ids_claimed > 0 {
        let t = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = store
            .progress(&name)
            .await
            .with_context(|| format!("cannot read job {name} in {journal}"))?;
        let finished = |p: &StoreProgress| p.ids_done + p.ids_failed;
        let rate =
            finished(&second).saturating_sub(finished(&first)) as f64 / t.elapsed().as_secs_f64();
        (second, Some(rate))
    } else {
        (first, None)
    };
    let pending = p.ids_pending + p.ids_uncut.unwrap_or(0);
    let total = p.total.map_or("?".to_owned(), |t| t.to_string());
    println!("job {name} (journal {journal})");
    println!("  total    {total}");
    println!("  done     {}", p.ids_done);
    println!("  failed   {}", p.ids_failed);
    println!("  running  {}", p.ids_claimed);
    println!("  pending  {pending}");
    match rate {
        Some(r) if r > 0.0 => {
            let left = (pending + p.ids_claimed) as f64 / r;
            println!("  rate     {r:.1}/s");
            println!(
                "  eta      {}",
                human_duration(Duration::from_secs_f64(left))
            );
        }
        Some(_) => println!("  rate     0/s (running, nothing finished in the last second)"),
        None if pending + p.ids_claimed == 0 => println!("  state    finished"),
        None => println!("  state    not running (rerun the command to resume)"),
    }
    if p.ids_failed > 0 && failures > 0 {
        let failed = store
            .failed_ids(&name, failures)
            .await
            .with_context(|| format!("cannot list the failures of job {name}"))?;
        let ranges = store
            .failed_ranges(&name, failures)
            .await
            .with_context(|| format!("cannot list the failures of job {name}"))?;
        let line_of = |id: &Id| match (id, &input) {
            (Id::Int(i), Some(input)) => input
                .jobs
                .get(*i as usize)
                .map_or(format!("id {i}"), |j| format!("line {}", j.line)),
            (id, _) => format!("id {id}"),
        };
        println!("failures:");
        for f in &failed {
            println!("  {}: {}", line_of(&f.id), f.error);
        }
        for r in &ranges {
            println!(
                "  range {} ({} lines, {} attempts): {}",
                r.range,
                r.ids.len(),
                r.attempts,
                r.error
            );
        }
        println!("(`workcrew retry-failed` with the run's arguments runs them again)");
    }
    Ok(if p.ids_failed > 0 {
        ExitCode::Failures
    } else {
        ExitCode::Success
    })
}

/// Deletes the job from its journal.
pub(crate) async fn reset(select: Selection) -> Result<ExitCode> {
    let (name, _) = job_name(&select)?;
    if let Some(code) = no_journal(&select) {
        return Ok(code);
    }
    let store = crate::journal::open(&select.store).await?;
    let journal = crate::journal::describe(&select.store);
    store
        .reset(&name)
        .await
        .with_context(|| format!("cannot reset job {name} in {journal}"))?;
    eprintln!("workcrew: job {name} reset in {journal}; the next run starts over");
    Ok(ExitCode::Success)
}

/// A SQLite journal file that does not exist: said, instead of creating an empty one.
fn no_journal(select: &Selection) -> Option<ExitCode> {
    match &select.store {
        crate::config::StoreUrl::Sqlite(path) if !path.exists() => {
            println!("no journal at {} (never run here?)", path.display());
            Some(ExitCode::Success)
        }
        _ => None,
    }
}
