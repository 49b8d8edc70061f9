//! The embedded default store: one SQLite file in WAL mode.
//!
//! # Implementation notes
//!
//! - One connection per [`SqliteStore`], behind a mutex, used only on tokio's
//!   blocking threads (`spawn_blocking`), never on the async workers. (A thread
//!   of the store's own was tried: tokio's paused test clock cannot see it, so
//!   time leapt ahead while it worked.)
//! - **Group commit.** Each operation joins a queue and starts a blocking task;
//!   the task that gets the connection takes every queued operation (up to 64,
//!   its own included, or none if another task took it already) and runs them in
//!   one `BEGIN IMMEDIATE` transaction, each inside its own savepoint (an
//!   operation that fails is rolled back alone), then commits once and only then
//!   answers them all. So concurrent workers share a commit,
//!   and an answered operation is always committed. `BEGIN IMMEDIATE` takes
//!   SQLite's write lock at its start, so processes sharing the file never
//!   deadlock on a lock upgrade; a writer waits for the lock up to the busy
//!   timeout, then its operations fail as [`Busy`](StoreErrorKind::Busy)
//!   (transient: the job retries with backoff for a bounded time, then fails
//!   with a clear error).
//! - Done ranges are deleted and counted in the job's row, so the range table
//!   holds only open and parked ranges and claims stay cheap however long the job.
//! - Statements live in `queries.sql` and the schema in `schema.sql`, with a
//!   table prefix so several independent sets of tables can share a file.
//!
//! # Durability
//!
//! [`Durability::Normal`] (the default) is SQLite's `synchronous=NORMAL` in WAL
//! mode: a commit survives the process being killed (SIGKILL, a crash), but the
//! last commits before an operating-system crash or power loss may be lost. Losing
//! them rolls the job back to an earlier consistent state: ranges processed since
//! then run again (duplicates), none is skipped. [`Durability::Full`] (`FULL`)
//! syncs the file at every commit: nothing committed is lost, at the cost of one
//! `fsync` per step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::FutureExt;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::id::{Id, IdKind, Ids};
use super::store::{
    Append, AppendReply, Checkpoint, FailedId, FailedRange, FinishOutcome, JobInfo, JobSpec,
    JobStatus, Lease, Millis, Origin, Rate, Retried, SourceSpec, Step, StepReply, Store,
    StoreError, StoreErrorKind, StoreProgress,
};

const SCHEMA: &str = include_str!("schema.sql");
const QUERIES: &str = include_str!("queries.sql");

/// How hard SQLite keeps a commit.
///
/// [`Normal`](Durability::Normal) (the default) is SQLite's `synchronous=NORMAL`
/// in WAL mode: a commit survives the process being killed (SIGKILL, a crash),
/// but the last commits before an operating-system crash or power loss may be
/// lost. Losing them rolls the job back to an earlier consistent state: ranges
/// processed since then run again (duplicates), none is skipped.
/// [`Full`](Durability::Full) (`FULL`) syncs the file at every commit (shared by
/// the operations committed together): nothing committed is lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous=NORMAL`: survives a killed process; an OS crash may lose the
    /// last commits (their ranges run again). Default.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is synced to disk.
    Full,
}

/// A [`Store`] in one SQLite file: the embedded default, nothing to install.
///
/// Several processes on one machine can share a job through the same file.
/// Cloning is cheap and shares the connection.
///
/// SQLite lets one process write at a time, and each step holds the file's write
/// lock for a short transaction. A process stopped inside one (a debugger, `SIGSTOP`,
/// a paused container) holds up every other process's steps until it resumes (up
/// to the [busy timeout](SqliteStoreBuilder::busy_timeout), then they fail as
/// busy and retry); their leases may run out meanwhile, and a range taken over
/// then runs twice, its late report refused by the fence. Share a job between
/// processes that may be paused through Redis or Postgres, whose steps hold no
/// lock between a client's calls.
///
/// # Examples
///
/// ```
/// use workcrew::batch::SqliteStore;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteStore::open(dir.path().join("jobs.db")).unwrap();
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    queue: Mutex<Vec<Op>>,
    sql: HashMap<&'static str, String>,
    path: PathBuf,
}

/// An operation for the store's thread: runs inside the open transaction, says
/// whether it succeeded (else its savepoint is rolled back), and gives the
/// function that answers its caller once the commit's outcome is known.
/// Given `Err` when the transaction could not begin: then it only answers.
type Op = Box<dyn FnOnce(Result<&Tx<'_>, &StoreError>) -> (bool, Answer) + Send>;
type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// Most operations one transaction takes.
const GROUP: usize = 64;

/// Options for opening a [`SqliteStore`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    durability: Durability,
    busy_timeout: Duration,
    prefix: String,
}

impl SqliteStoreBuilder {
    /// How hard a commit is kept. Default: [`Durability::Normal`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long an operation waits for the file's write lock (held by another
    /// process) before it fails as busy. Default: 5 s.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Prefix of the store's table names. Default: `workcrew_`.
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Opens (or creates) the file and its tables. Blocks briefly: call it before
    /// starting work, or from `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or is not a SQLite database; the prefix has
    /// characters other than ASCII letters, digits and `_`.
    pub fn open(self) -> Result<SqliteStore, StoreError> {
        if !self
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                format!(
                    "table prefix {:?} may hold only ASCII letters, digits and '_'",
                    self.prefix
                ),
            ));
        }
        let what = self.path.display().to_string();
        let conn = Connection::open(&self.path).map_err(|e| sql_error(&what, e))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| sql_error(&what, e))?;
        let sync = match self.durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};"
        ))
        .map_err(|e| sql_error(&what, e))?;
        conn.execute_batch(&SCHEMA.replace("{p}", &self.prefix))
            .map_err(|e| sql_error(&what, e))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                queue: Mutex::new(Vec::new()),
                sql: parse_queries(QUERIES, &self.prefix),
                path: self.path,
            }),
        })
    }
}

impl SqliteStore {
    /// Opens (or creates) the store in the file at `path` with default options.
    ///
    /// # Errors
    ///
    /// See [`SqliteStoreBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        SqliteStore::builder(path).open()
    }

    /// Options for the store in the file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_path_buf(),
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(5),
            prefix: "workcrew_".to_owned(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the store's thread, in a transaction (shared with other
    /// operations queued at the same time, see the module docs).
    fn transact<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op: Op = Box::new(move |tx| {
            let out = match tx {
                Ok(tx) => f(tx),
                Err(e) => Err(StoreError::new(e.kind(), e.to_string())),
            };
            let ok = out.is_ok();
            let answer: Answer = Box::new(move |commit: Option<&StoreError>| {
                let out = match (out, commit) {
                    (Ok(_), Some(e)) => Err(StoreError::new(e.kind(), e.to_string())),
                    (out, _) => out,
                };
                let _ = reply.send(out);
            });
            (ok, answer)
        });
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(op);
        let inner = Arc::clone(&self.inner);
        let worker = tokio::task::spawn_blocking(move || drain(&inner));
        let what = self.inner.path.display().to_string();
        async move {
            let answered = answer.await;
            // The blocking task has ended by now, or will end at once.
            drop(worker);
            answered.unwrap_or_else(|_| {
                Err(StoreError::new(
                    StoreErrorKind::Other,
                    format!("sqlite store {what}: the operation panicked"),
                ))
            })
        }
        .boxed()
    }
}

/// On a blocking thread: takes the connection, then the queued operations, and
/// runs them in one transaction (nothing if another call took them first).
fn drain(inner: &Inner) {
    let conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner());
    let what = inner.path.display().to_string();
    let tx = Tx {
        conn: &conn,
        sql: &inner.sql,
        what: &what,
    };
    loop {
        let batch: Vec<Op> = {
            let mut queue = inner.queue.lock().unwrap_or_else(|e| e.into_inner());
            let n = queue.len().min(GROUP);
            queue.drain(..n).collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = tx.run("BEGIN IMMEDIATE") {
            for op in batch {
                op(Err(&e)).1(None);
            }
            continue;
        }
        let mut answers = Vec::with_capacity(batch.len());
        for op in batch {
            let _ = tx.run("SAVEPOINT op");
            let run = std::panic::AssertUnwindSafe(|| op(Ok(&tx)));
            let (ok, answer) = match std::panic::catch_unwind(run) {
                Ok(done) => done,
                Err(_) => {
                    let _ = tx.run("ROLLBACK TO op");
                    let _ = tx.run("RELEASE op");
                    continue;
                }
            };
            if !ok {
                let _ = tx.run("ROLLBACK TO op");
            }
            let _ = tx.run("RELEASE op");
            answers.push(answer);
        }
        let commit = tx.run("COMMIT").err();
        if commit.is_some() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for answer in answers {
            answer(commit.as_ref());
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Splits `queries.sql` into its named statements, with the table prefix in place.
fn parse_queries(text: &'static str, prefix: &str) -> HashMap<&'static str, String> {
    let mut out = HashMap::new();
    for block in text.split("-- name: ").skip(1) {
        let (name, body) = block.split_once('\n').unwrap_or((block, ""));
        out.insert(name.trim(), body.trim().replace("{p}", prefix));
    }
    out
}

/// Maps a SQLite error to a store error: a held lock is busy, an unopenable file
/// unavailable, anything else other.
fn sql_error(what: &str, e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi::ErrorCode;
    let kind = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreErrorKind::Busy,
        Some(ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::DiskFull) => {
            StoreErrorKind::Unavailable
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreErrorKind::Corrupt,
        _ => StoreErrorKind::Other,
    };
    let msg = match kind {
        StoreErrorKind::Busy => {
            format!("sqlite store {what} is locked by another connection (waited the busy timeout)")
        }
        _ => format!("sqlite store {what}: {e}"),
    };
    StoreError::new(kind, msg).with_source(e)
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        StoreErrorKind::Corrupt,
        format!("sqlite store {what}: {detail}"),
    )
}

fn id_value(id: &Id) -> Value {
    match id {
        Id::Int(i) => Value::Integer(*i),
        Id::Str(s) => Value::Text(s.clone()),
    }
}

fn value_id(v: ValueRef<'_>) -> Option<Id> {
    match v {
        ValueRef::Integer(i) => Some(Id::Int(i)),
        ValueRef::Text(t) => Some(Id::Str(String::from_utf8_lossy(t).into_owned())),
        _ => None,
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A transaction with the store's statements.
struct Tx<'a> {
    conn: &'a Connection,
    sql: &'a HashMap<&'static str, String>,
    what: &'a str,
}

/// The job's row, read at the start of a step and written back at its end.
struct JobRow {
    source: SourceSpec,
    cursor: Option<Id>,
    next_range: i64,
    fence: i64,
    ids_done: i64,
    ids_failed: i64,
    ranges_done: i64,
    ranges_failed: i64,
    rate_tat: Option<f64>,
}

impl Tx<'_> {
    fn stmt(&self, name: &str) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
        let sql = self
            .sql
            .get(name)
            .unwrap_or_else(|| panic!("queries.sql has no statement {name}"));
        self.conn
            .prepare_cached(sql)
            .map_err(|e| sql_error(self.what, e))
    }

    /// Runs a statement without parameters or rows (transaction control), cached.
    fn run(&self, sql: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| st.execute([]))
            .map(drop)
            .map_err(|e| sql_error(self.what, e))
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        sql_error(self.what, e)
    }

    fn exec(&self, name: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
        self.stmt(name)?.execute(params).map_err(|e| self.err(e))
    }

    fn job(&self, job: &str) -> Result<JobRow, StoreError> {
        self.job_opt(job)?.ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Conflict,
                format!("no job {job:?} in sqlite store {}", self.what),
            )
        })
    }

    fn job_opt(&self, job: &str) -> Result<Option<JobRow>, StoreError> {
        let mut stmt = self.stmt("job_get")?;
        let row = stmt
            .query_row([job], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, String>(4)?,
                    value_id(r.get_ref(5)?),
                    (
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, i64>(8)?,
                        r.get::<_, i64>(9)?,
                        r.get::<_, i64>(10)?,
                        r.get::<_, i64>(11)?,
                        r.get::<_, Option<f64>>(12)?,
                    ),
                ))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((source, start, end, size, kind, cursor, counters)) = row else {
            return Ok(None);
        };
        let kind =
            IdKind::parse(&kind).ok_or_else(|| corrupt(self.what, format!("id kind {kind:?}")))?;
        let source = match (source.as_str(), start, end, size) {
            ("span", Some(start), Some(end), Some(size)) => SourceSpec::Span {
                start,
                end,
                size: to_u64(size),
            },
            ("loader", ..) => SourceSpec::Loader { kind },
            _ => {
                return Err(corrupt(
                    self.what,
                    format!("job {job:?} has source {source:?}"),
                ))
            }
        };
        let (next_range, fence, ids_done, ids_failed, ranges_done, ranges_failed, rate_tat) =
            counters;
        Ok(Some(JobRow {
            source,
            cursor,
            next_range,
            fence,
            ids_done,
            ids_failed,
            ranges_done,
            ranges_failed,
            rate_tat,
        }))
    }

    fn save(&self, job: &str, row: &JobRow) -> Result<(), StoreError> {
        self.exec(
            "job_update",
            params![
                job,
                row.cursor.as_ref().map(id_value),
                row.next_range,
                row.fence,
                row.ids_done,
                row.ids_failed,
                row.ranges_done,
                row.ranges_failed
            ],
        )?;
        Ok(())
    }

    /// Reads a range's ids from its columns.
    fn ids(
        &self,
        start: Option<i64>,
        end: Option<i64>,
        list: Option<String>,
    ) -> Result<Ids, StoreError> {
        match (start, end, list) {
            (Some(s), Some(e), _) => Ok(Ids::Span(s, e)),
            (_, _, Some(json)) => serde_json::from_str(&json)
                .map(Ids::List)
                .map_err(|e| corrupt(self.what, format!("range ids: {e}"))),
            _ => Err(corrupt(self.what, "a range with neither span nor ids")),
        }
    }

    fn insert_range(
        &self,
        job: &str,
        num: i64,
        state: i64,
        ids: &Ids,
        claim: Option<(&str, i64, Millis, bool)>,
        due: Millis,
    ) -> Result<(), StoreError> {
        let (span_start, span_end, list) = match ids {
            Ids::Span(s, e) => (Some(*s), Some(*e), None),
            Ids::List(list) => (
                None,
                None,
                Some(serde_json::to_string(list).expect("ids serialise")),
            ),
        };
        let (owner, fence, attempts, amo) = match claim {
            Some((owner, fence, _, amo)) => (Some(owner), fence, 1, amo),
            None => (None, 0, 0, false),
        };
        self.exec(
            "range_insert",
            params![
                job,
                num,
                state,
                span_start,
                span_end,
                list,
                to_i64(ids.len()),
                owner,
                fence,
                claim.map_or(due, |c| c.2),
                attempts,
                amo
            ],
        )?;
        Ok(())
    }

    fn step(&self, job: &str, step: &Step) -> Result<StepReply, StoreError> {
        let mut row = self.job(job)?;
        let mut finished = Vec::with_capacity(step.finish.len());
        for f in &step.finish {
            let current = self
                .stmt("range_get")?
                .query_row(params![job, to_i64(f.range)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .optional()
                .map_err(|e| self.err(e))?;
            let len = match current {
                Some((1, fence, len)) if fence == to_i64(f.fence) => len,
                _ => {
                    finished.push(false);
                    continue;
                }
            };
            finished.push(true);
            let num = to_i64(f.range);
            match &f.outcome {
                FinishOutcome::Done { failed } => {
                    self.exec("range_delete", params![job, num])?;
                    for failure in failed {
                        self.exec(
                            "failed_id_insert",
                            params![job, id_value(&failure.id), num, failure.error],
                        )?;
                    }
                    let failed = to_i64(failed.len() as u64).min(len);
                    row.ids_done += len - failed;
                    row.ids_failed += failed;
                    row.ranges_done += 1;
                }
                FinishOutcome::Failed {
                    error,
                    retry_at: Some(at),
                } => {
                    self.exec("range_pend", params![job, num, at, error])?;
                }
                FinishOutcome::Failed {
                    error,
                    retry_at: None,
                } => {
                    self.exec("range_park", params![job, num, error])?;
                    row.ranges_failed += 1;
                    row.ids_failed += len;
                }
                FinishOutcome::Release => {
                    self.exec(
                        "range_pend",
                        params![job, num, step.now, Option::<String>::None],
                    )?;
                }
            }
        }

        let want = step.claim as usize;
        let mut claimed = Vec::with_capacity(want);
        let expires = step.now.saturating_add(to_i64(step.lease_ms));
        if want > 0 {
            self.claim_due(job, &mut row, step, 0, want, expires, &mut claimed)?;
            self.claim_due(job, &mut row, step, 1, want, expires, &mut claimed)?;
            if let SourceSpec::Span { end, size, .. } = row.source {
                let mut cursor = row.cursor.as_ref().and_then(Id::as_int).unwrap_or(end);
                while claimed.len() < want && cursor < end {
                    let hi = cursor.saturating_add(to_i64(size)).min(end);
                    let ids = Ids::Span(cursor, hi);
                    row.fence += 1;
                    let num = row.next_range;
                    row.next_range += 1;
                    self.insert_range(
                        job,
                        num,
                        1,
                        &ids,
                        Some((&step.owner, row.fence, expires, step.at_most_once)),
                        expires,
                    )?;
                    claimed.push(Lease {
                        range: to_u64(num),
                        fence: to_u64(row.fence),
                        ids,
                        checkpoint: 0,
                        attempt: 1,
                        expires,
                        origin: Origin::New,
                    });
                    cursor = hi;
                }
                row.cursor = Some(Id::Int(cursor));
            }
        }
        let status = if claimed.len() < want || want == 0 {
            let (open, next_ready) = self
                .stmt("ranges_status")?
                .query_row([job], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
                })
                .map_err(|e| self.err(e))?;
            let exhausted = match row.source {
                SourceSpec::Span { end, .. } => {
                    row.cursor.as_ref().and_then(Id::as_int).unwrap_or(end) >= end
                }
                SourceSpec::Loader { .. } => false,
            };
            Some(JobStatus {
                exhausted,
                open: to_u64(open),
                next_ready,
            })
        } else {
            None
        };
        self.save(job, &row)?;
        Ok(StepReply {
            finished,
            claimed,
            status,
        })
    }

    /// Claims ranges in `state` (0 pending, 1 claimed with an expired lease) that
    /// are due, oldest first, until `claimed` holds `want`. Expired ranges claimed
    /// under at-most-once are parked instead.
    #[allow(clippy::too_many_arguments)]
    fn claim_due(
        &self,
        job: &str,
        row: &mut JobRow,
        step: &Step,
        state: i64,
        want: usize,
        expires: Millis,
        claimed: &mut Vec<Lease>,
    ) -> Result<(), StoreError> {
        while claimed.len() < want {
            let ask = want - claimed.len();
            let due: Vec<_> = self
                .stmt("ranges_due")?
                .query_map(params![job, state, step.now, to_i64(ask as u64)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, bool>(8)?,
                    ))
                })
                .map_err(|e| self.err(e))?
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(e))?;
            let found = due.len();
            for (num, start, end, list, len, checkpoint, owner, attempts, amo) in due {
                if state == 1 && amo {
                    let error = format!(
                        "lease of {} expired; at-most-once: not run again",
                        owner.as_deref().unwrap_or("?")
                    );
                    self.exec("range_park", params![job, num, error])?;
                    row.ranges_failed += 1;
                    row.ids_failed += len;
                    continue;
                }
                row.fence += 1;
                self.exec(
                    "range_claim",
                    params![job, num, step.owner, row.fence, expires, step.at_most_once],
                )?;
                claimed.push(Lease {
                    range: to_u64(num),
                    fence: to_u64(row.fence),
                    ids: self.ids(start, end, list)?,
                    checkpoint: to_u64(checkpoint),
                    attempt: u32::try_from(attempts + 1).unwrap_or(u32::MAX),
                    expires,
                    origin: if state == 0 {
                        Origin::Pending
                    } else {
                        Origin::Expired {
                            previous_owner: owner.unwrap_or_default(),
                        }
                    },
                });
            }
            if found < ask {
                break;
            }
        }
        Ok(())
    }

    fn append(&self, job: &str, a: &Append) -> Result<AppendReply, StoreError> {
        let mut row = self.job(job)?;
        if row.cursor != a.after {
            return Ok(AppendReply::CursorMoved(row.cursor));
        }
        let (Some(first), Some(last)) = (a.ids.first(), a.ids.last()) else {
            return Err(StoreError::new(
                StoreErrorKind::Conflict,
                format!("job {job:?}: an appended range must have ids"),
            ));
        };
        if let Some(cursor) = &row.cursor {
            if first <= cursor {
                return Err(StoreError::new(
                    StoreErrorKind::Conflict,
                    format!("job {job:?}: appended id {first} is not after the cursor {cursor}"),
                ));
            }
        }
        let expires = a.now.saturating_add(to_i64(a.lease_ms));
        row.fence += 1;
        let num = row.next_range;
        row.next_range += 1;
        let ids = Ids::List(a.ids.clone());
        self.insert_range(
            job,
            num,
            1,
            &ids,
            Some((&a.owner, row.fence, expires, a.at_most_once)),
            expires,
        )?;
        row.cursor = Some(last.clone());
        self.save(job, &row)?;
        Ok(AppendReply::Claimed(Lease {
            range: to_u64(num),
            fence: to_u64(row.fence),
            ids,
            checkpoint: 0,
            attempt: 1,
            expires,
            origin: Origin::New,
        }))
    }

    fn open(&self, spec: &JobSpec) -> Result<JobInfo, StoreError> {
        if let Some(row) = self.job_opt(&spec.name)? {
            if row.source != spec.source {
                return Err(StoreError::new(
                    StoreErrorKind::Conflict,
                    format!(
                        "job {:?} exists with another source ({}, not {}): reset it or use another name",
                        spec.name, row.source, spec.source
                    ),
                ));
            }
            return Ok(JobInfo {
                created: false,
                cursor: row.cursor,
            });
        }
        let (source, start, end, size, kind, cursor) = match spec.source {
            SourceSpec::Span { start, end, size } => (
                "span",
                Some(start),
                Some(end),
                Some(to_i64(size)),
                IdKind::Int,
                Some(Id::Int(start)),
            ),
            SourceSpec::Loader { kind } => ("loader", None, None, None, kind, None),
        };
        self.exec(
            "job_insert",
            params![
                spec.name,
                source,
                start,
                end,
                size,
                kind.as_str(),
                cursor.as_ref().map(id_value)
            ],
        )?;
        Ok(JobInfo {
            created: true,
            cursor,
        })
    }

    fn progress(&self, job: &str) -> Result<StoreProgress, StoreError> {
        let row = self.job(job)?;
        let mut p = StoreProgress {
            ids_done: to_u64(row.ids_done),
            ids_failed: to_u64(row.ids_failed),
            ranges_done: to_u64(row.ranges_done),
            ranges_failed: to_u64(row.ranges_failed),
            ..StoreProgress::default()
        };
        let counts: Vec<(i64, i64, i64)> = self
            .stmt("ranges_count")?
            .query_map([job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        for (state, n, ids) in counts {
            match state {
                0 => (p.ranges_pending, p.ids_pending) = (to_u64(n), to_u64(ids)),
                1 => (p.ranges_claimed, p.ids_claimed) = (to_u64(n), to_u64(ids)),
                _ => {}
            }
        }
        if let SourceSpec::Span { start, end, .. } = row.source {
            let cursor = row.cursor.as_ref().and_then(Id::as_int).unwrap_or(end);
            p.ids_uncut = Some(to_u64(end - cursor.min(end)));
            p.total = Some(to_u64(end - start));
        }
        Ok(p)
    }

    fn retry_failed(&self, job: &str, now: Millis, chunk: u64) -> Result<Retried, StoreError> {
        let mut row = self.job(job)?;
        let lens: Vec<i64> = self
            .stmt("ranges_unpark")?
            .query_map(params![job, now], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        let mut ids: Vec<Id> = self
            .stmt("failed_ids_take")?
            .query_map([job], |r| Ok(value_id(r.get_ref(0)?)))
            .map_err(|e| self.err(e))?
            .filter_map(|r| r.transpose())
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        ids.sort();
        row.ranges_failed -= lens.len() as i64;
        row.ids_failed -= lens.iter().sum::<i64>() + ids.len() as i64;
        for part in ids.chunks(usize::try_from(chunk.max(1)).unwrap_or(usize::MAX)) {
            let num = row.next_range;
            row.next_range += 1;
            self.insert_range(job, num, 0, &Ids::List(part.to_vec()), None, now)?;
        }
        row.ids_failed = row.ids_failed.max(0);
        row.ranges_failed = row.ranges_failed.max(0);
        self.save(job, &row)?;
        Ok(Retried {
            ranges: lens.len() as u64,
            ids: ids.len() as u64,
        })
    }
}

impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.inner.path.display())
    }

    fn now(&self) -> BoxFuture<'_, Result<Millis, StoreError>> {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        futures::future::ready(Ok(ms)).boxed()
    }

    fn open<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<JobInfo, StoreError>> {
        let spec = spec.clone();
        self.transact(move |tx| tx.open(&spec))
    }

    fn step<'a>(
        &'a self,
        job: &'a str,
        step: Step,
    ) -> BoxFuture<'a, Result<StepReply, StoreError>> {
        let job = job.to_owned();
        self.transact(move |tx| tx.step(&job, &step))
    }

    fn append<'a>(
        &'a self,
        job: &'a str,
        append: Append,
    ) -> BoxFuture<'a, Result<AppendReply, StoreError>> {
        let job = job.to_owned();
        self.transact(move |tx| tx.append(&job, &append))
    }

    fn checkpoint<'a>(
        &'a self,
        job: &'a str,
        c: Checkpoint,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let job = job.to_owned();
        self.transact(move |tx| {
            let n = tx.exec(
                "range_checkpoint",
                params![
                    job,
                    to_i64(c.range),
                    to_i64(c.fence),
                    to_i64(c.done),
                    c.now.saturating_add(to_i64(c.lease_ms))
                ],
            )?;
            Ok(n == 1)
        })
    }

    fn renew<'a>(
        &'a self,
        job: &'a str,
        owner: &'a str,
        now: Millis,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<(u64, u64)>, StoreError>> {
        let (job, owner) = (job.to_owned(), owner.to_owned());
        self.transact(move |tx| {
            let held = tx
                .stmt("ranges_renew")?
                .query_map(
                    params![job, owner, now.saturating_add(to_i64(lease_ms))],
                    |r| Ok((to_u64(r.get(0)?), to_u64(r.get(1)?))),
                )
                .map_err(|e| tx.err(e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tx.err(e))?;
            Ok(held)
        })
    }

    fn progress<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<StoreProgress, StoreError>> {
        let job = job.to_owned();
        self.transact(move |tx| tx.progress(&job))
    }

    fn reset<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let job = job.to_owned();
        self.transact(move |tx| {
            tx.exec("fence_keep", [&job])?;
            tx.exec("ranges_delete", [&job])?;
            tx.exec("failed_ids_delete", [&job])?;
            tx.exec("job_delete", [&job])?;
            Ok(())
        })
    }

    fn retry_failed<'a>(
        &'a self,
        job: &'a str,
        now: Millis,
        chunk: u64,
    ) -> BoxFuture<'a, Result<Retried, StoreError>> {
        let job = job.to_owned();
        self.transact(move |tx| tx.retry_failed(&job, now, chunk))
    }

    fn failed_ranges<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedRange>, StoreError>> {
        let job = job.to_owned();
        self.transact(move |tx| {
            let rows: Vec<_> = tx
                .stmt("ranges_failed")?
                .query_map(params![job, to_i64(limit)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<String>>(5)?,
                    ))
                })
                .map_err(|e| tx.err(e))?
                .collect::<Result<_, _>>()
                .map_err(|e| tx.err(e))?;
            rows.into_iter()
                .map(|(num, start, end, list, attempts, error)| {
                    Ok(FailedRange {
                        range: to_u64(num),
                        ids: tx.ids(start, end, list)?,
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                        error: error.unwrap_or_default(),
                    })
                })
                .collect()
        })
    }

    fn failed_ids<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedId>, StoreError>> {
        let job = job.to_owned();
        self.transact(move |tx| {
            let rows = tx
                .stmt("failed_ids_list")?
                .query_map(params![job, to_i64(limit)], |r| {
                    Ok(value_id(r.get_ref(0)?).map(|id| FailedId {
                        id,
                        error: r.get(1).unwrap_or_default(),
                    }))
                })
                .map_err(|e| tx.err(e))?
                .filter_map(|r| r.transpose())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tx.err(e))?;
            Ok(rows)
        })
    }

    fn acquire<'a>(
        &'a self,
        job: &'a str,
        rate: Rate,
        ids: u64,
        now: Millis,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let job = job.to_owned();
        self.transact(move |tx| {
            let row = tx.job(&job)?;
            match rate.gcra(row.rate_tat, ids, now) {
                (Some(tat), _) => {
                    tx.exec("job_rate", params![job, tat])?;
                    Ok(0)
                }
                (None, wait) => Ok(wait),
            }
        })
    }
}
