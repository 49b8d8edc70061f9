//! Helpers shared by the Redis store's tests: the server's URL, stores with a key
//! prefix of their own that delete their keys when dropped, and (in [`server`]) a
//! Redis server a test starts itself.
//!
//! Every test crate uses a different subset of these, hence the `dead_code` allowance.
#![allow(dead_code)]

pub(crate) mod server;

use std::sync::atomic::{AtomicU32, Ordering};

use workcrew::batch::conformance::Guarded;
use workcrew::batch::redact_url;
use workcrew_redis::RedisStore;

/// The shared server: `REDIS_URL`, or the default `.ci/run` uses.
pub(crate) fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test (or run) uses: `workcrew-test:<test>:<pid>:<n>`,
/// where `<test>` is the name of the thread the test runs on (libtest names it
/// after the test).
pub(crate) fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test").replace("::", ".");
    format!(
        "workcrew-test:{test}:{}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store on the shared server under a fresh prefix; its keys are deleted when
/// it is dropped. Fails the test, naming the URL, if the server does not answer.
pub(crate) async fn store() -> TestStore {
    let url = url();
    let prefix = unique_prefix();
    let store = RedisStore::builder(&url)
        .key_prefix(&prefix)
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the redis server at {} (REDIS_URL) does not answer: {e}",
                redact_url(&url)
            )
        });
    Guarded {
        store,
        guard: KeyPrefix { url, prefix },
    }
}

/// A [`RedisStore`] that deletes every key under its prefix when dropped (also
/// when the test panics), so tests leave the shared server as they found it.
pub(crate) type TestStore = Guarded<RedisStore, KeyPrefix>;

/// The keys of a test: deleted when this is dropped.
pub(crate) struct KeyPrefix {
    pub(crate) url: String,
    pub(crate) prefix: String,
}

impl Drop for KeyPrefix {
    fn drop(&mut self) {
        delete_prefix(&self.url, &self.prefix);
    }
}

/// Deletes every key of the store with key prefix `prefix` (a blocking
/// connection: this runs in `Drop`).
pub(crate) fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(std::time::Duration::from_secs(5)) else {
        return;
    };
    for key in keys_under(&mut conn, prefix) {
        let _: Result<(), _> = redis::cmd("DEL").arg(&key).query(&mut conn);
    }
}

/// How many keys live under `prefix` (to check that a test cleaned up).
pub(crate) fn count_keys(url: &str, prefix: &str) -> usize {
    let client = redis::Client::open(url).expect("url");
    let mut conn = client.get_connection().expect("connect");
    keys_under(&mut conn, prefix).len()
}

/// The keys of the store with key prefix `prefix` (`SCAN`, which does not block
/// the shared server the way `KEYS` would).
fn keys_under(conn: &mut redis::Connection, prefix: &str) -> Vec<String> {
    let pattern = format!("{{{}:*", glob_escape(prefix));
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let reply: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn);
        let Ok((next, batch)) = reply else {
            return keys;
        };
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
