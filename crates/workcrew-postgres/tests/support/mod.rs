//! What the Postgres store's tests share: the server's URL, a store in a schema of its
//! own that is dropped afterwards, and an admin connection for the faults.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use workcrew::batch::{
    redact_url, Append, AppendReply, Checkpoint, FailedId, FailedRange, JobInfo, JobSpec, Millis,
    Rate, Retried, Step, StepReply, Store, StoreError, StoreProgress,
};
use workcrew_postgres::{PostgresStore, PostgresStoreBuilder};

/// The test server: `DATABASE_URL`, else the `.ci/run` default.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema (and application name) unique to this test, process and call.
pub fn unique_name(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let test: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(36)
        .collect();
    format!("wct_{test}_{}_{n}", std::process::id())
}

/// A store in a schema of its own, dropped (with everything in it) when this is.
pub struct Isolated {
    pub store: PostgresStore,
}

impl std::ops::Deref for Isolated {
    type Target = PostgresStore;

    fn deref(&self) -> &PostgresStore {
        &self.store
    }
}

/// The builder for a store isolated for `test` (schema and application name alike).
pub fn builder(test: &str) -> PostgresStoreBuilder {
    let name = unique_name(test);
    PostgresStore::builder(&database_url())
        .schema(name.as_str())
        .application_name(name)
}

/// A store isolated for `test`; fails the test, naming the URL, if the server does not
/// answer.
pub async fn isolated(test: &str) -> Isolated {
    isolated_with(builder(test)).await
}

/// A store from `builder`, dropped like [`isolated`]'s.
pub async fn isolated_with(builder: PostgresStoreBuilder) -> Isolated {
    match builder.connect().await {
        Ok(store) => Isolated { store },
        Err(e) => panic!(
            "the Postgres server at {} (DATABASE_URL) did not answer: {e}",
            redact_url(&database_url())
        ),
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        drop_schema(self.store.schema());
    }
}

/// Drops `schema`, from a thread of its own (this may run inside a runtime).
pub fn drop_schema(schema: &str) {
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let done = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), async {
                let admin = admin().await;
                admin.batch_execute(&sql).await
            })
            .await
        })
    })
    .join();
    match done {
        Ok(Ok(Ok(()))) => {}
        other => eprintln!("could not drop schema {schema}: {other:?}"),
    }
}

/// A plain connection to the test server, for what the store does not do.
pub async fn admin() -> tokio_postgres::Client {
    let url = database_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the Postgres server at {} (DATABASE_URL) did not answer: {e}",
                redact_url(&url)
            )
        });
    tokio::spawn(connection);
    client
}

/// Terminates the server backends of the connections named `application_name`; returns
/// how many there were.
pub async fn kill_backends(admin: &tokio_postgres::Client, application_name: &str) -> usize {
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&application_name],
        )
        .await
        .expect("pg_terminate_backend");
    rows.len()
}

impl Store for Isolated {
    fn describe(&self) -> String {
        self.store.describe()
    }
    fn now(&self) -> BoxFuture<'_, Result<Millis, StoreError>> {
        self.store.now()
    }
    fn open<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<JobInfo, StoreError>> {
        self.store.open(spec)
    }
    fn step<'a>(
        &'a self,
        job: &'a str,
        step: Step,
    ) -> BoxFuture<'a, Result<StepReply, StoreError>> {
        self.store.step(job, step)
    }
    fn append<'a>(
        &'a self,
        job: &'a str,
        append: Append,
    ) -> BoxFuture<'a, Result<AppendReply, StoreError>> {
        self.store.append(job, append)
    }
    fn checkpoint<'a>(
        &'a self,
        job: &'a str,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.store.checkpoint(job, checkpoint)
    }
    fn renew<'a>(
        &'a self,
        job: &'a str,
        owner: &'a str,
        now: Millis,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<(u64, u64)>, StoreError>> {
        self.store.renew(job, owner, now, lease_ms)
    }
    fn progress<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<StoreProgress, StoreError>> {
        self.store.progress(job)
    }
    fn reset<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.store.reset(job)
    }
    fn retry_failed<'a>(
        &'a self,
        job: &'a str,
        now: Millis,
        chunk: u64,
    ) -> BoxFuture<'a, Result<Retried, StoreError>> {
        self.store.retry_failed(job, now, chunk)
    }
    fn failed_ranges<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedRange>, StoreError>> {
        self.store.failed_ranges(job, limit)
    }
    fn failed_ids<'a>(
        &'a self,
        job: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<FailedId>, StoreError>> {
        self.store.failed_ids(job, limit)
    }
    fn acquire<'a>(
        &'a self,
        job: &'a str,
        rate: Rate,
        ids: u64,
        now: Millis,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.store.acquire(job, rate, ids, now)
    }
}
