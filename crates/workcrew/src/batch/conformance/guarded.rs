//! A store with a test's clean-up attached, for the store crates' test suites.

use futures::future::BoxFuture;

use crate::batch::store::{
    Append, AppendReply, Checkpoint, FailedId, FailedRange, JobInfo, JobSpec, Millis, Rate,
    Retried, Step, StepReply, Store, StoreError, StoreProgress,
};

/// A store and the clean-up of the test that uses it: `guard` is dropped right after `store`
/// (also when the test panics), so its `Drop` can delete the keys or the schema the test wrote
/// to and leave a shared server as it found it. Store calls go to `store`; so do method calls
/// through `Deref`.
pub struct Guarded<S, G> {
    /// The store the test uses.
    pub store: S,
    /// Dropped after the store; its `Drop` cleans up.
    pub guard: G,
}

impl<S, G> std::ops::Deref for Guarded<S, G> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.store
    }
}

impl<S: Store, G: Send + Sync + 'static> Store for Guarded<S, G> {
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
