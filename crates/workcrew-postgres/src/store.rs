//! [`PostgresStore`]: the `Store` trait over one pipelined connection.
//!
//! # Implementation notes
//!
//! - Every operation is one statement (a prepared query, or a call of one of the
//!   functions in `001_functions.sql`), so it is atomic without a client transaction and
//!   costs one round trip. Concurrent operations of a job's workers and heartbeat are
//!   pipelined on the one connection.
//! - The connection lives in a slot. A call takes the slot's connection, or connects
//!   anew when there is none or it is closed (one caller connects; the others wait for
//!   it). A call that fails as unavailable, or gets no answer within the call timeout,
//!   empties the slot, so the next call reconnects: after a server restart or a killed
//!   backend the job's retries succeed by themselves.
//! - Every call is bounded: connecting by the connect timeout, the statement by the call
//!   timeout (client side, and `statement_timeout` on the server).
//! - A step whose answer is lost (the connection dropped after the server committed it)
//!   is retried by the job like any transient failure: its finishes are then rejected
//!   (they were applied; the job reports them as fenced out) and the ranges it claimed
//!   stay leased to this owner until the lease expires, then are claimed again. Nothing
//!   is skipped; nothing is run twice that was done.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use workcrew::batch::{
    Append, AppendReply, Checkpoint, FailedId, FailedRange, Id, IdKind, Ids, JobInfo, JobSpec,
    Lease, Millis, Origin, Rate, Retried, SourceSpec, Step, StepReply, Store, StoreError,
    StoreErrorKind, StoreProgress,
};

use crate::builder::{Durability, PostgresStoreBuilder};
use crate::connection::{self, parse_queries, Conn};
use crate::error::{corrupt, pg_error, store_error};
use crate::migrate::{migrate, quote};
use crate::reply::{
    cursor, decode, encode_finish, id_columns, range_ids, to_i64, to_u64, AppendOut, OpenOut,
    RetriedOut, StepOut,
};

pub(crate) const QUERIES: &str = include_str!("sql/queries.sql");

/// A batch [`Store`] in a Postgres database: several processes on several machines share
/// a job through it.
///
/// Cloning is cheap and shares the connection. See the [crate docs](crate) for the
/// guarantees and the settings.
///
/// # Examples
///
/// ```no_run
/// use workcrew::batch::BatchJob;
/// use workcrew_postgres::PostgresStore;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://app@db.internal/jobs").await?;
/// let job = BatchJob::builder(store, "reindex")
///     .span(0..1_000_000)
///     .handler(|range| async move {
///         // index range.iter() ...
///         Ok::<_, std::io::Error>(())
///     })
///     .build()?;
/// job.run().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: tokio_postgres::Config,
    /// The store for messages: URL without password, and schema.
    what: String,
    schema: String,
    application_name: String,
    /// The session set-up, run on every new connection.
    session: String,
    sql: HashMap<&'static str, String>,
    connect_timeout: Duration,
    call_timeout: Duration,
    slot: Mutex<Option<Arc<Conn>>>,
    /// Held while connecting, so one caller reconnects and the others reuse its result.
    connecting: tokio::sync::Mutex<()>,
}

/// A failure inside a call: the driver's (mapped by the call) or the store's own.
pub(crate) enum Fail {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl PostgresStore {
    /// Connects to the database at `url` with default options (schema `workcrew`), and
    /// creates or migrates the store's schema if needed.
    ///
    /// `url` is a `postgres://user:password@host:port/database` URL or a `key=value`
    /// connection string. The connection is plain TCP (no TLS).
    ///
    /// # Errors
    ///
    /// See [`PostgresStoreBuilder::connect`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future closes the connection it opened.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), workcrew::batch::StoreError> {
    /// let store = workcrew_postgres::PostgresStore::connect("postgres://postgres@127.0.0.1/test").await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::builder(url).connect().await
    }

    /// Options for the store at `url`; finish with
    /// [`connect`](PostgresStoreBuilder::connect).
    pub fn builder(url: &str) -> PostgresStoreBuilder {
        PostgresStoreBuilder::new(url)
    }

    /// The schema that holds the store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The `application_name` of the store's connections (how `pg_stat_activity` shows
    /// them).
    pub fn application_name(&self) -> &str {
        &self.inner.application_name
    }

    pub(crate) async fn start(b: PostgresStoreBuilder) -> Result<PostgresStore, StoreError> {
        let parsed = b.url.parse::<tokio_postgres::Config>();
        let what_url = b.describe_url(parsed.as_ref().ok());
        let mut config = parsed.map_err(|e| {
            store_error(
                StoreErrorKind::Other,
                &what_url,
                format!("the connection URL does not parse: {e}"),
            )
        })?;
        let schema = b.checked_schema()?.to_owned();
        let what = format!("{what_url} (schema {schema})");
        let application_name = b
            .application_name
            .clone()
            .or_else(|| config.get_application_name().map(str::to_owned))
            .unwrap_or_else(|| "workcrew".to_owned());
        config
            .application_name(application_name.as_str())
            .connect_timeout(b.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        let mut session = format!(
            "SET statement_timeout = {}; SET default_transaction_isolation = 'read committed';",
            b.call_timeout.as_millis().max(1)
        );
        if b.durability == Durability::Async {
            session.push_str(" SET synchronous_commit = off;");
        }
        let inner = Inner {
            config,
            sql: parse_queries(QUERIES, &quote(&schema)),
            what,
            schema,
            application_name,
            session,
            connect_timeout: b.connect_timeout,
            call_timeout: b.call_timeout,
            slot: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        };
        // The first connection migrates the schema before preparing the statements that
        // use it; later connections (reconnects) only prepare.
        let first = async {
            let mut raw = connection::connect(&inner.config, &inner.session, &inner.what)
                .await
                .map_err(|e| pg_error(&inner.what, "connecting", &e))?;
            migrate(&mut raw.client, &inner.schema, &inner.what).await?;
            raw.prepare(&inner.sql)
                .await
                .map_err(|e| pg_error(&inner.what, "preparing statements", &e))
        };
        let bound = inner.connect_timeout + inner.call_timeout;
        let conn = tokio::time::timeout(bound, first).await.map_err(|_| {
            inner.unavailable(format!("connecting and migrating took over {bound:?}"))
        })??;
        *inner.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(conn));
        Ok(PostgresStore {
            inner: Arc::new(inner),
        })
    }
}

impl Inner {
    fn unavailable(&self, detail: impl std::fmt::Display) -> StoreError {
        store_error(StoreErrorKind::Unavailable, &self.what, detail)
    }

    /// The slot's connection, if it is still open.
    fn current(&self) -> Option<Arc<Conn>> {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|c| !c.client.is_closed())
            .cloned()
    }

    /// The open connection, connecting anew if there is none.
    async fn conn(&self) -> Result<Arc<Conn>, StoreError> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let _turn = self.connecting.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let raw = connection::connect(&self.config, &self.session, &self.what)
            .await
            .map_err(|e| pg_error(&self.what, "connecting", &e))?;
        let conn = Arc::new(
            raw.prepare(&self.sql)
                .await
                .map_err(|e| pg_error(&self.what, "preparing statements", &e))?,
        );
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&conn));
        tracing::info!(store = %self.what, "postgres store connected");
        Ok(conn)
    }

    /// Empties the slot if it still holds `conn`, so the next call reconnects.
    fn discard(&self, conn: &Arc<Conn>) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    /// Runs one operation on the connection, within the connect and call timeouts.
    async fn call<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, Fail>>,
    {
        let conn = match tokio::time::timeout(self.connect_timeout, self.conn()).await {
            Ok(conn) => conn?,
            Err(_) => {
                return Err(self.unavailable(format!(
                    "{operation}: no connection within {:?}",
                    self.connect_timeout
                )))
            }
        };
        match tokio::time::timeout(self.call_timeout, f(Arc::clone(&conn))).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(fail)) => {
                let e = match fail {
                    Fail::Pg(e) => pg_error(&self.what, operation, &e),
                    Fail::Store(e) => e,
                };
                if e.kind() == StoreErrorKind::Unavailable {
                    self.discard(&conn);
                }
                Err(e)
            }
            Err(_) => {
                // The server may be gone without closing the socket: drop this connection.
                self.discard(&conn);
                Err(self.unavailable(format!(
                    "{operation}: no answer within {:?}",
                    self.call_timeout
                )))
            }
        }
    }

    /// Runs a function of the store that returns JSON text; returns the text.
    async fn call_json(
        &self,
        operation: &'static str,
        statement: fn(&Conn) -> &tokio_postgres::Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<String, StoreError> {
        self.call(operation, |c| async move {
            let row = c.client.query_one(statement(&c), params).await?;
            Ok(row.try_get::<_, String>(0)?)
        })
        .await
    }

    fn no_job(&self, job: &str) -> StoreError {
        store_error(
            StoreErrorKind::Conflict,
            &self.what,
            format!("no job {job:?}"),
        )
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("store", &self.inner.what)
            .field("application_name", &self.inner.application_name)
            .finish_non_exhaustive()
    }
}

/// The source a job row holds.
fn stored_source(what: &str, out: &OpenOut) -> Result<SourceSpec, StoreError> {
    match (out.source.as_str(), out.start, out.end, out.size) {
        ("span", Some(start), Some(end), Some(size)) => Ok(SourceSpec::Span {
            start,
            end,
            size: to_u64(size),
        }),
        ("loader", ..) => IdKind::parse(&out.kind)
            .map(|kind| SourceSpec::Loader { kind })
            .ok_or_else(|| corrupt(what, format!("unknown id kind {:?}", out.kind))),
        (other, ..) => Err(corrupt(what, format!("unreadable job source {other:?}"))),
    }
}

impl Store for PostgresStore {
    fn describe(&self) -> String {
        self.inner.what.clone()
    }

    fn now(&self) -> BoxFuture<'_, Result<Millis, StoreError>> {
        self.inner
            .call("reading the clock", |c| async move {
                Ok(c.client.query_one(&c.st.now, &[]).await?.try_get(0)?)
            })
            .boxed()
    }

    fn open<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<JobInfo, StoreError>> {
        async move {
            let inner = &self.inner;
            let (source, start, end, size, kind) = match &spec.source {
                SourceSpec::Span { start, end, size } => (
                    "span",
                    Some(*start),
                    Some(*end),
                    Some(to_i64(*size)),
                    IdKind::Int,
                ),
                SourceSpec::Loader { kind } => ("loader", None, None, None, *kind),
                other => {
                    return Err(store_error(
                        StoreErrorKind::Other,
                        &inner.what,
                        format!("source {other} is not supported"),
                    ))
                }
            };
            let text = inner
                .call_json(
                    "opening the job",
                    |c| &c.st.open,
                    &[&spec.name, &source, &start, &end, &size, &kind.as_str()],
                )
                .await?;
            let out: OpenOut = decode(&inner.what, "workcrew_open", &text)?;
            let stored = stored_source(&inner.what, &out)?;
            if !out.created && stored != spec.source {
                return Err(store_error(
                    StoreErrorKind::Conflict,
                    &inner.what,
                    format!(
                        "job {:?} exists with another source ({stored}, not {}): reset it or use another name",
                        spec.name, spec.source
                    ),
                ));
            }
            Ok(JobInfo {
                created: out.created,
                cursor: cursor(out.cursor_int, out.cursor_str),
            })
        }
        .boxed()
    }

    fn step<'a>(
        &'a self,
        job: &'a str,
        step: Step,
    ) -> BoxFuture<'a, Result<StepReply, StoreError>> {
        async move {
            let inner = &self.inner;
            let finish = encode_finish(&inner.what, &step.finish)?;
            let expires = step.now.saturating_add(to_i64(step.lease_ms));
            let claim = i32::try_from(step.claim).unwrap_or(i32::MAX);
            let text = inner
                .call_json(
                    "step",
                    |c| &c.st.step,
                    &[
                        &job,
                        &step.owner,
                        &step.now,
                        &expires,
                        &finish.ranges,
                        &finish.fences,
                        &finish.kinds,
                        &finish.errors,
                        &finish.retry_at,
                        &finish.failed,
                        &claim,
                        &step.at_most_once,
                    ],
                )
                .await?;
            let out: StepOut = decode(&inner.what, "workcrew_step", &text)?;
            if out.finished.len() != step.finish.len() {
                return Err(corrupt(
                    &inner.what,
                    format!(
                        "a step with {} finishes got {} verdicts",
                        step.finish.len(),
                        out.finished.len()
                    ),
                ));
            }
            let claimed = out
                .claimed
                .into_iter()
                .map(|l| l.into_lease(&inner.what, expires))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(StepReply {
                finished: out.finished,
                claimed,
                status: out.status.map(|s| s.into_status()),
            })
        }
        .boxed()
    }

    fn append<'a>(
        &'a self,
        job: &'a str,
        a: Append,
    ) -> BoxFuture<'a, Result<AppendReply, StoreError>> {
        async move {
            let inner = &self.inner;
            let expires = a.now.saturating_add(to_i64(a.lease_ms));
            let (after_int, after_str) = id_columns(a.after.as_ref());
            let first = a.ids.first();
            let first_is_str = first.map(|id| matches!(id, Id::Str(_)));
            let (first_int, first_str) = id_columns(first);
            let (last_int, last_str) = id_columns(a.ids.last());
            let ids = serde_json::to_string(&a.ids).map_err(|e| {
                store_error(
                    StoreErrorKind::Other,
                    &inner.what,
                    format!("encoding ids: {e}"),
                )
            })?;
            let text = inner
                .call_json(
                    "appending a range",
                    |c| &c.st.append,
                    &[
                        &job,
                        &a.owner,
                        &expires,
                        &after_int,
                        &after_str,
                        &first_is_str,
                        &first_int,
                        &first_str,
                        &last_int,
                        &last_str,
                        &ids,
                        &a.at_most_once,
                    ],
                )
                .await?;
            let out: AppendOut = decode(&inner.what, "workcrew_append", &text)?;
            if out.moved {
                return Ok(AppendReply::CursorMoved(cursor(
                    out.cursor_int,
                    out.cursor_str,
                )));
            }
            if out.empty {
                return Err(store_error(
                    StoreErrorKind::Conflict,
                    &inner.what,
                    format!("job {job:?}: an appended range must have ids"),
                ));
            }
            if out.not_after {
                let (first, cursor) = (first.cloned(), a.after.clone());
                return Err(store_error(
                    StoreErrorKind::Conflict,
                    &inner.what,
                    format!(
                        "job {job:?}: appended id {} is not after the cursor {}",
                        first.map_or_else(String::new, |id| id.to_string()),
                        cursor.map_or_else(String::new, |id| id.to_string())
                    ),
                ));
            }
            let (Some(range), Some(fence)) = (out.range, out.fence) else {
                return Err(corrupt(
                    &inner.what,
                    "workcrew_append replied without a range",
                ));
            };
            Ok(AppendReply::Claimed(Lease {
                range: to_u64(range),
                fence: to_u64(fence),
                ids: Ids::List(a.ids),
                checkpoint: 0,
                attempt: 1,
                expires,
                origin: Origin::New,
            }))
        }
        .boxed()
    }

    fn checkpoint<'a>(
        &'a self,
        job: &'a str,
        cp: Checkpoint,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner
            .call("checkpoint", move |c| async move {
                let n = c
                    .client
                    .execute(
                        &c.st.checkpoint,
                        &[
                            &job,
                            &to_i64(cp.range),
                            &to_i64(cp.fence),
                            &to_i64(cp.done),
                            &cp.now.saturating_add(to_i64(cp.lease_ms)),
                        ],
                    )
                    .await?;
                Ok(n == 1)
            })
            .boxed()
    }

    fn renew<'a>(
        &'a self,
        job: &'a str,
        owner: &'a str,
        now: Millis,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<(u64, u64)>, StoreError>> {
        self.inner
            .call("renewing leases", move |c| async move {
                let expires = now.saturating_add(to_i64(lease_ms));
                let rows = c
                    .client
                    .query(&c.st.renew, &[&job, &owner, &expires])
                    .await?;
                rows.iter()
                    .map(|r| Ok((to_u64(r.try_get(0)?), to_u64(r.try_get(1)?))))
                    .collect()
            })
            .boxed()
    }

    fn progress<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<StoreProgress, StoreError>> {
        async move {
            let inner = &self.inner;
            let row = inner
                .call("reading progress", |c| async move {
                    Ok(c.client.query_opt(&c.st.progress, &[&job]).await?)
                })
                .await?
                .ok_or_else(|| inner.no_job(job))?;
            let get = |i: usize| -> Result<i64, StoreError> {
                row.try_get::<_, i64>(i)
                    .map_err(|e| corrupt(&inner.what, format!("progress column {i}: {e}")))
            };
            let mut p = StoreProgress {
                ids_done: to_u64(get(4)?),
                ids_failed: to_u64(get(5)?),
                ranges_done: to_u64(get(6)?),
                ranges_failed: to_u64(get(7)?),
                ranges_pending: to_u64(get(8)?),
                ids_pending: to_u64(get(9)?),
                ranges_claimed: to_u64(get(10)?),
                ids_claimed: to_u64(get(11)?),
                ..StoreProgress::default()
            };
            let source: String = row
                .try_get(0)
                .map_err(|e| corrupt(&inner.what, format!("progress source: {e}")))?;
            let span: (Option<i64>, Option<i64>, Option<i64>) = (
                row.try_get(1).ok().flatten(),
                row.try_get(2).ok().flatten(),
                row.try_get(3).ok().flatten(),
            );
            if let ("span", (Some(start), Some(end), cursor)) = (source.as_str(), span) {
                let cursor = cursor.unwrap_or(end).min(end);
                p.ids_uncut = Some(to_u64(end.saturating_sub(cursor)));
                p.total = Some(to_u64(end.saturating_sub(start)));
            }
            Ok(p)
        }
        .boxed()
    }

    fn reset<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner
            .call("resetting the job", move |c| async move {
                c.client.execute(&c.st.reset, &[&job]).await?;
                Ok(())
            })
            .boxed()
    }

    fn retry_failed<'a>(
        &'a self,
        job: &'a str,
        now: Millis,
        chunk: u64,
    ) -> BoxFuture<'a, Result<Retried, StoreError>> {
        async move {
            let inner = &self.inner;
            let chunk = to_i64(chunk.max(1));
            let text = inner
                .call_json(
                    "retrying failures",
                    |c| &c.st.retry_failed,
                    &[&job, &now, &chunk],
                )
                .await?;
            let out: RetriedOut = decode(&inner.what, "workcrew_retry_failed", &text)?;
            Ok(Retried {
                ranges: to_u64(out.ranges),
                ids: to_u64(out.ids),
            })
        }
        .boxed()
    }

    fn failed_ranges<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedRange>, StoreError>> {
        async move {
            let inner = &self.inner;
            let rows = inner
                .call("listing failed ranges", |c| async move {
                    Ok(c.client
                        .query(&c.st.failed_ranges, &[&job, &to_i64(limit)])
                        .await?)
                })
                .await?;
            rows.iter()
                .map(|r| {
                    let bad = |e: tokio_postgres::Error| {
                        corrupt(&inner.what, format!("failed range row: {e}"))
                    };
                    let num: i64 = r.try_get(0).map_err(bad)?;
                    let list: Option<String> = r.try_get(3).map_err(bad)?;
                    let list = list
                        .map(|text| decode::<Vec<Id>>(&inner.what, "the ranges table", &text))
                        .transpose()?;
                    Ok(FailedRange {
                        range: to_u64(num),
                        ids: range_ids(
                            &inner.what,
                            num,
                            r.try_get(1).map_err(bad)?,
                            r.try_get(2).map_err(bad)?,
                            list,
                        )?,
                        attempts: u32::try_from(r.try_get::<_, i32>(4).map_err(bad)?).unwrap_or(0),
                        error: r
                            .try_get::<_, Option<String>>(5)
                            .map_err(bad)?
                            .unwrap_or_default(),
                    })
                })
                .collect()
        }
        .boxed()
    }

    fn failed_ids<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedId>, StoreError>> {
        async move {
            let inner = &self.inner;
            let rows = inner
                .call("listing failed ids", |c| async move {
                    Ok(c.client
                        .query(&c.st.failed_ids, &[&job, &to_i64(limit)])
                        .await?)
                })
                .await?;
            rows.iter()
                .map(|r| {
                    let bad = |e: tokio_postgres::Error| {
                        corrupt(&inner.what, format!("failed id row: {e}"))
                    };
                    let id = if r.try_get::<_, bool>(0).map_err(bad)? {
                        Id::Str(r.try_get(2).map_err(bad)?)
                    } else {
                        Id::Int(r.try_get(1).map_err(bad)?)
                    };
                    Ok(FailedId {
                        id,
                        error: r.try_get(3).map_err(bad)?,
                    })
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
        self.inner
            .call("acquiring the rate limit", move |c| async move {
                // The same arithmetic as `Rate::gcra`, run where the state is.
                let cost = rate.cost_ms(ids);
                let tolerance = rate.cost_ms(rate.burst).max(cost);
                let wait: i64 = c
                    .client
                    .query_one(&c.st.acquire, &[&job, &now, &cost, &tolerance])
                    .await?
                    .try_get(0)?;
                Ok(to_u64(wait))
            })
            .boxed()
    }
}
