//! [`RedisStore`]: the [`Store`] trait over one Redis server.
//!
//! # Implementation notes
//!
//! - **One script per operation.** Every operation of the trait is one Lua
//!   script (`src/lua/*.lua`, each with `common.lua` in front), so it is atomic:
//!   Redis runs a script alone. Scripts are sent by hash (`EVALSHA`) and loaded
//!   once; a server that forgot them (restarted, `SCRIPT FLUSH`) answers
//!   `NOSCRIPT` and the script is loaded again (`redis::Script` does this).
//!   Redis does not roll a script back when it fails halfway, so scripts fail
//!   before their first write where they can: a missing job, a conflicting
//!   request; Redis refuses to start one when it is out of memory (the scripts
//!   declare flags, so a write cannot fail halfway for lack of memory). A record
//!   that cannot be read ([`Corrupt`](StoreErrorKind::Corrupt): a key written
//!   by something else) can stop a step after its first writes; such a job needs
//!   a reset.
//! - **Keys.** A job's keys share the hash tag `{prefix:job}` (see
//!   `common.lua` for the layout), so a cluster would keep them on one slot.
//!   Done ranges are deleted and counted, so a job holds only its open and
//!   parked ranges and a claim costs O(log open ranges) however long the job.
//! - **Connection.** One multiplexed connection (`redis::aio::ConnectionManager`)
//!   carries every call of every worker, pipelined. When it breaks, the call
//!   fails as [`Unavailable`](StoreErrorKind::Unavailable) and the manager
//!   reconnects in the background; the next call uses the new connection (or
//!   waits for it, within its deadline). Every call has a deadline
//!   ([`RedisStoreBuilder::timeout`]): a dead or hung server costs at most that,
//!   then a transient error the job retries.
//! - **Time.** [`Store::now`] is the server's `TIME`, so every machine's leases
//!   agree; scripts take times as arguments and never read a clock, except
//!   `open`, which seeds the job's fencing tokens with the server's time, or
//!   above the last token of the job before a reset if that is higher (kept in
//!   the job's `floor` key, which a reset leaves), so a job made again after a
//!   reset or a lost dataset fences out every holder of the old one.
//! - **Passwords.** Messages name the store by its URL with the password
//!   replaced by `***` ([`redact_url`]); error texts are also scrubbed of the
//!   password in case the server or the driver quotes it.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation, Value};
use workcrew::batch::{
    redact_url, Append, AppendReply, Checkpoint, FailedId, FailedRange, FinishOutcome, Id, IdKind,
    JobInfo, JobSpec, JobStatus, Lease, Millis, Origin, Rate, Retried, SourceSpec, Step, StepReply,
    Store, StoreError, StoreErrorKind, StoreProgress,
};

use crate::codec::{encode_id, Reply, SpanShape};
use crate::error::{mask, store_error};

/// The scripts, each with the shared prelude in front.
macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/common.lua"),
            "\n",
            include_str!(concat!("lua/", $file))
        ))
    };
}

struct Scripts {
    open: Script,
    step: Script,
    append: Script,
    checkpoint: Script,
    renew: Script,
    progress: Script,
    retry_failed: Script,
    failed_ranges: Script,
    failed_ids: Script,
    acquire: Script,
    reset: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            open: script!("open.lua"),
            step: script!("step.lua"),
            append: script!("append.lua"),
            checkpoint: script!("checkpoint.lua"),
            renew: script!("renew.lua"),
            progress: script!("progress.lua"),
            retry_failed: script!("retry_failed.lua"),
            failed_ranges: script!("failed_ranges.lua"),
            failed_ids: script!("failed_ids.lua"),
            acquire: script!("acquire.lua"),
            reset: script!("reset.lua"),
        }
    }
}

/// The names of a job's keys, in the order the scripts take them. The last, `floor`, outlives
/// a reset: the job's last fencing token, so the job made again starts above it.
const KEY_NAMES: [&str; 9] = [
    "job", "ranges", "lists", "pending", "claimed", "parked", "failed", "errors", "floor",
];

/// A batch [`Store`] in Redis: many processes on many machines share a job
/// through one server.
///
/// Cloning is cheap and shares the connection. See the [crate docs](crate) for
/// the guide and [`RedisStoreBuilder`] for the options.
///
/// # Examples
///
/// ```no_run
/// use workcrew_redis::RedisStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), workcrew::batch::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    /// The URL without its password, for messages.
    url: String,
    /// The password, masked out of error texts.
    secret: Option<String>,
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
}

/// Options for connecting a [`RedisStore`]; from [`RedisStore::builder`].
#[derive(Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key the store writes: a job `j` lives in keys
    /// `{prefix:j}:…`. Stores with different prefixes on one server never see
    /// each other's jobs. Default: `workcrew`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one call may take, waiting for a connection included, before it
    /// fails as [`Unavailable`](StoreErrorKind::Unavailable) (which a job
    /// retries). Default: 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects to the server.
    ///
    /// # Errors
    ///
    /// A URL redis cannot read ([`Other`](StoreErrorKind::Other)); a server that
    /// does not answer within the timeout
    /// ([`Unavailable`](StoreErrorKind::Unavailable)); a refused password
    /// ([`Other`](StoreErrorKind::Other)). No message holds the password.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the connection being made.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let url = redact_url(&self.url);
        let client = redis::Client::open(self.url.as_str()).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                // The driver's text could quote the URL, password and all: only its kind.
                format!("redis store {url}: not a redis url ({:?})", e.kind()),
            )
        })?;
        let secret = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_owned);
        // Few reconnection attempts in the driver: a job retries a failed call with
        // its own backoff for its own store retry time, so the driver need not.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connect = ConnectionManager::new_with_config(client, config);
        let conn = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(store_error(&url, secret.as_deref(), "connect", None, &e)),
            Err(_) => {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!(
                        "redis store {url}: connect: no answer within {:?}",
                        self.timeout
                    ),
                ))
            }
        };
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                url,
                secret,
                prefix: self.prefix,
                timeout: self.timeout,
                scripts: Scripts::new(),
            }),
        })
    }
}

impl RedisStore {
    /// Connects to the server at `url` (`redis://[user][:password@]host[:port][/db]`,
    /// or `rediss://` for TLS when the `redis` crate has it) with default
    /// options.
    ///
    /// # Errors
    ///
    /// See [`RedisStoreBuilder::connect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), workcrew::batch::StoreError> {
    /// let store = workcrew_redis::RedisStore::connect("redis://:secret@10.0.0.5:6379/2").await?;
    /// assert_eq!(workcrew::batch::Store::describe(&store), "redis://:***@10.0.0.5:6379/2 (keys {workcrew:…})");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        RedisStore::builder(url).connect().await
    }

    /// Options for the server at `url`; [`connect`](RedisStoreBuilder::connect)
    /// them.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), workcrew::batch::StoreError> {
    /// use std::time::Duration;
    ///
    /// let store = workcrew_redis::RedisStore::builder("redis://127.0.0.1:6379")
    ///     .key_prefix("workcrew:reindex")
    ///     .timeout(Duration::from_secs(2))
    ///     .connect()
    ///     .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.to_owned(),
            prefix: "workcrew".to_owned(),
            timeout: Duration::from_secs(5),
        }
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The keys of `job`, in the order the scripts take them.
    fn keys(&self, job: &str) -> [String; 9] {
        let tag = format!("{{{}:{job}}}", self.inner.prefix);
        KEY_NAMES.map(|name| format!("{tag}:{name}"))
    }

    /// Prepares `script` with the keys of `job`.
    fn invocation<'s>(&self, script: &'s Script, job: &str) -> ScriptInvocation<'s> {
        let mut inv = script.prepare_invoke();
        for key in self.keys(job) {
            inv.key(key);
        }
        inv
    }

    /// Runs a prepared script within the deadline.
    async fn run(
        &self,
        inv: ScriptInvocation<'_>,
        operation: &'static str,
        job: &str,
    ) -> Result<Value, StoreError> {
        let mut conn = self.inner.conn.clone();
        match tokio::time::timeout(self.inner.timeout, inv.invoke_async::<Value>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(store_error(
                &self.inner.url,
                self.inner.secret.as_deref(),
                operation,
                Some(job),
                &e,
            )),
            Err(_) => Err(self.no_answer(operation, Some(job))),
        }
    }

    /// Runs one plain command within the deadline.
    async fn command(
        &self,
        cmd: &redis::Cmd,
        operation: &'static str,
        job: Option<&str>,
    ) -> Result<Value, StoreError> {
        let mut conn = self.inner.conn.clone();
        match tokio::time::timeout(self.inner.timeout, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(store_error(
                &self.inner.url,
                self.inner.secret.as_deref(),
                operation,
                job,
                &e,
            )),
            Err(_) => Err(self.no_answer(operation, job)),
        }
    }

    fn no_answer(&self, operation: &str, job: Option<&str>) -> StoreError {
        let job = job.map(|j| format!(" job {j:?}:")).unwrap_or_default();
        StoreError::new(
            StoreErrorKind::Unavailable,
            format!(
                "redis store {}:{job} {operation}: no answer within {:?}",
                self.inner.url, self.inner.timeout
            ),
        )
    }

    fn reply<'a>(&'a self, script: &'static str) -> Reply<'a> {
        Reply {
            what: &self.inner.url,
            script,
        }
    }

    fn conflict(&self, job: &str, detail: impl std::fmt::Display) -> StoreError {
        StoreError::new(
            StoreErrorKind::Conflict,
            mask(
                &format!("redis store {}: job {job:?}: {detail}", self.inner.url),
                self.inner.secret.as_deref(),
            ),
        )
    }

    async fn open_job(&self, spec: &JobSpec) -> Result<JobInfo, StoreError> {
        let job = spec.name.as_str();
        let mut inv = self.invocation(&self.inner.scripts.open, job);
        let shape = match spec.source {
            SourceSpec::Span { start, end, size } => {
                let shape = SpanShape::new(start, end, size)
                    .map_err(|e| self.conflict(job, format!("cannot store a span of {e}")))?;
                inv.arg("span")
                    .arg("int")
                    .arg(start)
                    .arg(end)
                    .arg(size)
                    .arg(shape.nranges)
                    .arg(shape.lastlen);
                Some(shape)
            }
            SourceSpec::Loader { kind } => {
                inv.arg("loader").arg(kind.as_str());
                None
            }
            ref other => {
                return Err(self.conflict(job, format!("the redis store cannot keep {other}")))
            }
        };
        let value = self.run(inv, "open", job).await?;
        let r = self.reply("open");
        let items = r.array(value)?;
        let created = items.first().map(|v| r.int(v)).transpose()? == Some(1);
        if created {
            return Ok(JobInfo {
                created: true,
                cursor: shape.map(|s| Id::Int(s.start)),
            });
        }
        let [_, src, kind, start, end, size, cut, cursor]: [Value; 8] = items
            .try_into()
            .map_err(|_| r.corrupt("expected 8 items"))?;
        let kind = IdKind::parse(&r.string(&kind)?).ok_or_else(|| r.corrupt("an id kind"))?;
        let (stored, cursor) = match r.string(&src)?.as_str() {
            "span" => {
                let (start, end, size) = (r.int(&start)?, r.int(&end)?, r.uint(&size)?);
                let cut = r.uint(&cut)?;
                (
                    SourceSpec::Span { start, end, size },
                    Some(Id::Int(SpanShape::cursor(start, size, end, cut))),
                )
            }
            "loader" => {
                let cursor = match r.opt_bytes(&cursor)? {
                    Some(bytes) => Some(crate::codec::decode_id(bytes).map_err(|e| r.corrupt(e))?),
                    None => None,
                };
                (SourceSpec::Loader { kind }, cursor)
            }
            other => return Err(r.corrupt(format!("a source {other:?}"))),
        };
        if stored != spec.source {
            return Err(self.conflict(
                job,
                format!(
                    "exists with another source ({stored}, not {}): reset it or use another name",
                    spec.source
                ),
            ));
        }
        Ok(JobInfo {
            created: false,
            cursor,
        })
    }

    async fn step_job(&self, job: &str, step: Step) -> Result<StepReply, StoreError> {
        let mut inv = self.invocation(&self.inner.scripts.step, job);
        inv.arg(&step.owner)
            .arg(step.now)
            .arg(step.lease_ms)
            .arg(step.claim)
            .arg(if step.at_most_once { "1" } else { "0" })
            .arg(step.finish.len());
        for f in &step.finish {
            inv.arg(f.range).arg(f.fence);
            match &f.outcome {
                FinishOutcome::Done { failed } => {
                    inv.arg("D").arg(failed.len());
                    for failed in failed {
                        inv.arg(encode_id(&failed.id)).arg(&failed.error);
                    }
                }
                FinishOutcome::Failed { error, retry_at } => {
                    inv.arg("F").arg(error);
                    match retry_at {
                        Some(at) => inv.arg(*at),
                        None => inv.arg(""),
                    };
                }
                FinishOutcome::Release => {
                    inv.arg("R");
                }
                other => {
                    return Err(self.conflict(
                        job,
                        format!("the redis store cannot record the outcome {other:?}"),
                    ))
                }
            }
        }
        let value = self.run(inv, "step", job).await?;
        let r = self.reply("step");
        let [finished, leases, status, span] = r.tuple::<4>(value)?;
        let finished = r
            .array(finished)?
            .iter()
            .map(|v| r.int(v).map(|x| x == 1))
            .collect::<Result<Vec<_>, _>>()?;
        let span = r.span(&span)?;
        let claimed = r
            .array(leases)?
            .into_iter()
            .map(|lease| {
                let [num, fence, k, ids, checkpoint, attempt, expires, origin, previous] =
                    r.tuple::<9>(lease)?;
                Ok(Lease {
                    range: r.uint(&num)?,
                    fence: r.uint(&fence)?,
                    ids: r.range_ids(span, &k, ids)?,
                    checkpoint: r.uint(&checkpoint)?,
                    attempt: u32::try_from(r.uint(&attempt)?).unwrap_or(u32::MAX),
                    expires: r.int(&expires)?,
                    origin: match r.string(&origin)?.as_str() {
                        "n" => Origin::New,
                        "p" => Origin::Pending,
                        "e" => Origin::Expired {
                            previous_owner: r.opt_string(&previous)?.unwrap_or_default(),
                        },
                        other => return Err(r.corrupt(format!("an origin {other:?}"))),
                    },
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let status = match status {
            Value::Nil => None,
            status => {
                let [exhausted, open, next_ready] = r.tuple::<3>(status)?;
                Some(JobStatus {
                    exhausted: r.int(&exhausted)? == 1,
                    open: r.uint(&open)?,
                    next_ready: match next_ready {
                        Value::Nil => None,
                        v => Some(r.int(&v)?),
                    },
                })
            }
        };
        Ok(StepReply {
            finished,
            claimed,
            status,
        })
    }

    async fn append_job(&self, job: &str, a: Append) -> Result<AppendReply, StoreError> {
        let (Some(first), Some(last)) = (a.ids.first(), a.ids.last()) else {
            return Err(self.conflict(job, "an appended range must have ids"));
        };
        // The order is checked here, where ids compare exactly; the script checks
        // that the cursor is still `after`.
        let sorted = a.ids.windows(2).all(|w| w[0] < w[1]);
        let valid = sorted && a.after.as_ref().is_none_or(|after| first > after);
        let mut inv = self.invocation(&self.inner.scripts.append, job);
        inv.arg(&a.owner)
            .arg(a.now)
            .arg(a.lease_ms)
            .arg(if a.at_most_once { "1" } else { "0" })
            .arg(a.after.as_ref().map(encode_id).unwrap_or_default())
            .arg(if valid { "1" } else { "0" });
        for id in &a.ids {
            inv.arg(encode_id(id));
        }
        let value = self.run(inv, "append", job).await?;
        let r = self.reply("append");
        let items = r.array(value)?;
        match items.first().map(|v| r.string(v)).transpose()?.as_deref() {
            Some("claimed") if items.len() == 4 => Ok(AppendReply::Claimed(Lease {
                range: r.uint(&items[1])?,
                fence: r.uint(&items[2])?,
                ids: workcrew::batch::Ids::List(a.ids.clone()),
                checkpoint: 0,
                attempt: 1,
                expires: r.int(&items[3])?,
                origin: Origin::New,
            })),
            Some("moved") if items.len() == 2 => {
                let cursor = match r.opt_bytes(&items[1])? {
                    Some(_) => Some(r.id(&items[1])?),
                    None => None,
                };
                Ok(AppendReply::CursorMoved(cursor))
            }
            Some("invalid") => {
                let after = a
                    .after
                    .as_ref()
                    .map_or_else(|| "the start".to_owned(), Id::to_string);
                Err(self.conflict(
                    job,
                    format!(
                        "appended ids from {first} to {last} are not strictly increasing after the cursor {after}"
                    ),
                ))
            }
            _ => Err(r.corrupt(format!("{items:?}"))),
        }
    }

    async fn failed_ranges_of(
        &self,
        job: &str,
        limit: u64,
    ) -> Result<Vec<FailedRange>, StoreError> {
        let mut inv = self.invocation(&self.inner.scripts.failed_ranges, job);
        inv.arg(limit.min(i64::MAX as u64));
        let value = self.run(inv, "list failed ranges", job).await?;
        let r = self.reply("failed_ranges");
        let [span, ranges] = r.tuple::<2>(value)?;
        let span = r.span(&span)?;
        r.array(ranges)?
            .into_iter()
            .map(|range| {
                let [num, k, ids, attempts, error] = r.tuple::<5>(range)?;
                Ok(FailedRange {
                    range: r.uint(&num)?,
                    ids: r.range_ids(span, &k, ids)?,
                    attempts: u32::try_from(r.uint(&attempts)?).unwrap_or(u32::MAX),
                    error: r.opt_string(&error)?.unwrap_or_default(),
                })
            })
            .collect()
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl Store for RedisStore {
    /// The URL without its password, and the key prefix:
    /// `redis://:***@host:6379 (keys {workcrew:…})`.
    fn describe(&self) -> String {
        format!("{} (keys {{{}:…}})", self.inner.url, self.inner.prefix)
    }

    /// The server's clock (`TIME`).
    fn now(&self) -> BoxFuture<'_, Result<Millis, StoreError>> {
        async move {
            let time = self
                .command(&redis::cmd("TIME"), "read the clock", None)
                .await?;
            let r = self.reply("TIME");
            match r.array(time)?.as_slice() {
                [secs, micros] => Ok(r.int(secs)? * 1000 + r.int(micros)? / 1000),
                _ => Err(r.corrupt("expected seconds and microseconds")),
            }
        }
        .boxed()
    }

    fn open<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<JobInfo, StoreError>> {
        self.open_job(spec).boxed()
    }

    fn step<'a>(
        &'a self,
        job: &'a str,
        step: Step,
    ) -> BoxFuture<'a, Result<StepReply, StoreError>> {
        self.step_job(job, step).boxed()
    }

    fn append<'a>(
        &'a self,
        job: &'a str,
        append: Append,
    ) -> BoxFuture<'a, Result<AppendReply, StoreError>> {
        self.append_job(job, append).boxed()
    }

    fn checkpoint<'a>(
        &'a self,
        job: &'a str,
        c: Checkpoint,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let mut inv = self.invocation(&self.inner.scripts.checkpoint, job);
            inv.arg(c.range)
                .arg(c.fence)
                .arg(c.done)
                .arg(c.now.saturating_add(lease_i64(c.lease_ms)));
            let value = self.run(inv, "checkpoint", job).await?;
            Ok(self.reply("checkpoint").int(&value)? == 1)
        }
        .boxed()
    }

    fn renew<'a>(
        &'a self,
        job: &'a str,
        owner: &'a str,
        now: Millis,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<(u64, u64)>, StoreError>> {
        async move {
            let mut inv = self.invocation(&self.inner.scripts.renew, job);
            inv.arg(owner).arg(now.saturating_add(lease_i64(lease_ms)));
            let value = self.run(inv, "renew leases", job).await?;
            let r = self.reply("renew");
            let flat = r.array(value)?;
            flat.chunks(2)
                .map(|pair| match pair {
                    [range, fence] => Ok((r.uint(range)?, r.uint(fence)?)),
                    _ => Err(r.corrupt("an odd number of items")),
                })
                .collect()
        }
        .boxed()
    }

    fn progress<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<StoreProgress, StoreError>> {
        async move {
            let inv = self.invocation(&self.inner.scripts.progress, job);
            let value = self.run(inv, "read progress", job).await?;
            let r = self.reply("progress");
            let [src, start, end, size, cut, ids_done, ids_failed, ranges_done, ranges_failed, ranges_claimed, ids_claimed, ranges_pending, ids_pending] =
                r.tuple::<13>(value)?;
            let mut p = StoreProgress {
                ids_done: r.uint(&ids_done)?,
                ids_failed: r.uint(&ids_failed)?,
                ranges_done: r.uint(&ranges_done)?,
                ranges_failed: r.uint(&ranges_failed)?,
                ranges_claimed: r.uint(&ranges_claimed)?,
                ids_claimed: r.uint(&ids_claimed)?,
                ranges_pending: r.uint(&ranges_pending)?,
                ids_pending: r.uint(&ids_pending)?,
                ..StoreProgress::default()
            };
            if r.string(&src)? == "span" {
                let (start, end, size) = (r.int(&start)?, r.int(&end)?, r.uint(&size)?);
                let cursor = SpanShape::cursor(start, size, end, r.uint(&cut)?);
                p.ids_uncut = Some(span_len(cursor.min(end), end));
                p.total = Some(span_len(start, end));
            }
            Ok(p)
        }
        .boxed()
    }

    fn reset<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let inv = self.invocation(&self.inner.scripts.reset, job);
            self.run(inv, "reset", job).await.map(|_| ())
        }
        .boxed()
    }

    fn retry_failed<'a>(
        &'a self,
        job: &'a str,
        now: Millis,
        chunk: u64,
    ) -> BoxFuture<'a, Result<Retried, StoreError>> {
        async move {
            let mut inv = self.invocation(&self.inner.scripts.retry_failed, job);
            inv.arg(now).arg(chunk.clamp(1, 1 << 40));
            let value = self.run(inv, "retry failed", job).await?;
            let r = self.reply("retry_failed");
            let [ranges, ids] = r.tuple::<2>(value)?;
            Ok(Retried {
                ranges: r.uint(&ranges)?,
                ids: r.uint(&ids)?,
            })
        }
        .boxed()
    }

    fn failed_ranges<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedRange>, StoreError>> {
        self.failed_ranges_of(job, limit).boxed()
    }

    fn failed_ids<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedId>, StoreError>> {
        async move {
            let mut inv = self.invocation(&self.inner.scripts.failed_ids, job);
            inv.arg(limit.min(i64::MAX as u64));
            let value = self.run(inv, "list failed ids", job).await?;
            let r = self.reply("failed_ids");
            let flat = r.array(value)?;
            flat.chunks(2)
                .map(|pair| match pair {
                    [id, error] => Ok(FailedId {
                        id: r.id(id)?,
                        error: r.string(error)?,
                    }),
                    _ => Err(r.corrupt("an odd number of items")),
                })
                .collect()
        }
        .boxed()
    }

    fn acquire<'a>(
        &'a self,
        job: &'a str,
        rate: Rate,
        ids: u64,
        now: Millis,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            // The costs are computed here, as `Rate::gcra` does, so both round alike.
            let cost = rate.cost_ms(ids);
            let tolerance = rate.cost_ms(rate.burst).max(cost);
            let mut inv = self.invocation(&self.inner.scripts.acquire, job);
            inv.arg(now)
                .arg(format!("{cost:?}"))
                .arg(format!("{tolerance:?}"));
            let value = self.run(inv, "rate limit", job).await?;
            self.reply("acquire").uint(&value)
        }
        .boxed()
    }
}

fn lease_i64(lease_ms: u64) -> i64 {
    i64::try_from(lease_ms).unwrap_or(i64::MAX)
}

/// How many ids `[start, end)` holds (0 when inverted).
fn span_len(start: i64, end: i64) -> u64 {
    u64::try_from((i128::from(end) - i128::from(start)).max(0)).unwrap_or(u64::MAX)
}
