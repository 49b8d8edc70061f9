//! What only the Postgres store has: migrations, the schema name, ids' order whatever the
//! database's locale, passwords kept out of messages and logs, reconnecting after a lost
//! connection, and a deadline on every call.

mod support;

use std::fmt::Write as _;

use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{admin, database_url, isolated, kill_backends, Mode, Proxy};
use workcrew::batch::{
    Append, AppendReply, FailedId, Finish, FinishOutcome, Id, IdKind, JobSpec, SourceSpec, Step,
    Store, StoreErrorKind,
};
use workcrew_postgres::PostgresStore;

fn loader(name: &str, kind: IdKind) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        source: SourceSpec::Loader { kind },
    }
}

fn span(name: &str, end: i64) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        source: SourceSpec::Span {
            start: 0,
            end,
            size: 10,
        },
    }
}

fn append(after: Option<Id>, ids: &[Id]) -> Append {
    Append {
        owner: "a".to_owned(),
        now: 0,
        lease_ms: 1000,
        after,
        ids: ids.to_vec(),
        at_most_once: false,
    }
}

fn claim(owner: &str, finish: Vec<Finish>) -> Step {
    Step {
        owner: owner.to_owned(),
        now: 0,
        lease_ms: 60_000,
        finish,
        claim: 1,
        at_most_once: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_when_processes_connect_at_the_same_time() {
    let name = support::unique_name("migrate_race");
    let _cleanup = support::SchemaGuard(name.clone());
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let name = name.clone();
        connecting.spawn(async move {
            PostgresStore::builder(&database_url())
                .schema(name.as_str())
                .connect()
                .await
        });
    }
    let mut stores = Vec::new();
    while let Some(joined) = connecting.join_next().await {
        stores.push(joined.unwrap().expect("every concurrent connect succeeds"));
    }
    let admin = admin().await;
    let versions: Vec<i32> = admin
        .query(
            &format!("SELECT version FROM \"{name}\".schema_version ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1], "each migration applied once");
    // Every one of them works on the one schema.
    stores[0].open(&span("j", 100)).await.unwrap();
    let info = stores[5].open(&span("j", 100)).await.unwrap();
    assert!(!info.created);
}

// Multi-threaded: the refused connect's connection is closed by its aborted driver task,
// which must run while the isolated store's drop waits for its schema to be dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_version_is_refused() {
    let store = isolated("newer_schema").await;
    let admin = admin().await;
    admin
        .execute(
            &format!(
                "INSERT INTO \"{}\".schema_version (version) VALUES (99)",
                store.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    let err = PostgresStore::builder(&database_url())
        .schema(store.schema())
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("version 99"), "{err}");
}

#[tokio::test]
async fn schema_names_other_than_plain_identifiers_are_refused() {
    for bad in [
        "",
        "Upper",
        "1starts_with_digit",
        "semi;colon",
        "quo\"te",
        &"x".repeat(64),
    ] {
        let err = PostgresStore::builder(&database_url())
            .schema(bad)
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Other, "{bad:?}: {err}");
        assert!(err.to_string().contains("schema"), "{err}");
    }
}

/// A database whose default collation is ICU English: there `'a' < 'B'`, so only
/// `COLLATE "C"` keeps string ids in byte order (the test server's own database is
/// `C.UTF-8`, which would not tell).
struct IcuDatabase {
    name: String,
}

impl IcuDatabase {
    async fn create() -> IcuDatabase {
        let name = support::unique_name("icu");
        admin()
            .await
            .batch_execute(&format!(
                "CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu \
                 ICU_LOCALE 'en' LOCALE 'C.UTF-8' ENCODING 'UTF8'"
            ))
            .await
            .expect("create a database with an ICU collation");
        IcuDatabase { name }
    }

    fn url(&self) -> String {
        let config: tokio_postgres::Config = database_url().parse().unwrap();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let password = config
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        format!(
            "postgres://{}{password}@{host}:{port}/{}",
            config.get_user().unwrap_or("postgres"),
            self.name
        )
    }
}

impl Drop for IcuDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                admin()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
            })
        })
        .join();
    }
}

#[tokio::test]
async fn string_ids_keep_byte_order_under_any_locale_and_integers_numeric_order() {
    let db = IcuDatabase::create().await;
    let check = admin().await;
    let (client, connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let locale_order: bool = client
        .query_one("SELECT 'a' < 'B'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(locale_order, "the test database really orders by locale");
    drop((client, check));

    let store = PostgresStore::connect(&db.url()).await.unwrap();
    store.open(&loader("s", IdKind::Str)).await.unwrap();
    let ids = |v: &[&str]| v.iter().map(|s| Id::from(*s)).collect::<Vec<_>>();
    let AppendReply::Claimed(first) = store.append("s", append(None, &ids(&["B"]))).await.unwrap()
    else {
        panic!("claimed");
    };
    // In byte order "a" (0x61) comes after "B" (0x42); a locale puts it before.
    let AppendReply::Claimed(second) = store
        .append("s", append(Some(Id::from("B")), &ids(&["a", "b"])))
        .await
        .unwrap()
    else {
        panic!("\"a\" is after \"B\" in byte order");
    };
    let err = store
        .append("s", append(Some(Id::from("b")), &ids(&["C"])))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict, "\"C\" < \"b\": {err}");
    // Failed ids are listed lowest first, in byte order.
    let done = |lease: &workcrew::batch::Lease, failed: Vec<FailedId>| Finish {
        range: lease.range,
        fence: lease.fence,
        outcome: FinishOutcome::Done { failed },
    };
    let reply = store
        .step(
            "s",
            claim(
                "a",
                vec![
                    done(&first, vec![FailedId::new("B", "x")]),
                    done(
                        &second,
                        vec![FailedId::new("b", "y"), FailedId::new("a", "z")],
                    ),
                ],
            ),
        )
        .await
        .unwrap();
    assert_eq!(reply.finished, vec![true, true]);
    let listed: Vec<Id> = store
        .failed_ids("s", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(listed, ids(&["B", "a", "b"]));
    // retry_failed makes ranges of them in the same order.
    store.retry_failed("s", 0, 10).await.unwrap();
    let lease = store.step("s", claim("a", vec![])).await.unwrap().claimed;
    assert_eq!(
        lease[0].ids,
        workcrew::batch::Ids::List(ids(&["B", "a", "b"]))
    );

    // Integers: numerically, not as text.
    store.open(&span("n", 1000)).await.unwrap();
    let lease = store
        .step("n", claim("a", vec![]))
        .await
        .unwrap()
        .claimed
        .remove(0);
    let failed = [100, 9, 10]
        .map(|i| FailedId::new(i64::from(i), "e"))
        .to_vec();
    store
        .step("n", claim("a", vec![done(&lease, failed)]))
        .await
        .unwrap();
    let listed: Vec<Id> = store
        .failed_ids("n", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(listed, vec![Id::Int(9), Id::Int(10), Id::Int(100)]);
    drop(store);
    drop(db);
}

/// Records every tracing event's fields as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        span.record(&mut Fields(&mut self.0.lock().unwrap()));
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut Fields(&mut self.0.lock().unwrap()));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = self.0.lock().unwrap();
        event.record(&mut Fields(&mut text));
        text.push('\n');
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The URL's password appears nowhere: not in `describe()`, not in the errors of a failed
/// connect, a missing database or a lost server, not in the job's events, not in logs.
#[tokio::test]
async fn a_password_never_shows_in_descriptions_errors_events_or_logs() {
    // Everything this test's runtime logs (one thread: the store's tasks log here too).
    let logs = Capture::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let password = support::test_password();
    let hidden = |text: &str| {
        assert!(!text.contains(&password), "the password shows in: {text}");
    };

    let proxy = Proxy::start().await;
    let url = support::url_via(proxy.port(), &password);
    let store = support::isolated_with(
        PostgresStore::builder(&url).schema(support::unique_name("password")),
    )
    .await;
    let described = store.describe();
    hidden(&described);
    assert!(described.contains(":***@127.0.0.1"), "{described}");
    hidden(&format!("{:?}", store.store));

    // A password in the query string, and in a key=value connection string.
    for text in [
        format!(
            "{}?password={password}&application_name=x",
            url.replace(&format!(":{password}"), "")
        ),
        format!(
            "host=127.0.0.1 port={} user=postgres password={password} dbname=nowhere_{}",
            proxy.port(),
            std::process::id()
        ),
    ] {
        match PostgresStore::connect(&text).await {
            Ok(s) => hidden(&s.describe()),
            Err(e) => hidden(&e.to_string()),
        }
    }

    // A database that does not exist: a clear, permanent error.
    let missing = format!("{}_missing_db", url);
    let err = PostgresStore::connect(&missing).await.unwrap_err();
    hidden(&err.to_string());
    assert_eq!(err.kind(), StoreErrorKind::Other, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(err.to_string().contains(":***@"), "names the URL: {err}");

    // A port nobody listens on: unavailable (transient), naming the URL.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = PostgresStore::connect(&support::url_via(closed, &password))
        .await
        .unwrap_err();
    hidden(&err.to_string());
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{closed}")),
        "{err}"
    );

    // The server goes away under a running job: its error and events name the store
    // without the password.
    let job = workcrew::batch::BatchJob::builder(store.store.clone(), "pw")
        .span(0..1_000_000)
        .range_size(100)
        .workers(1)
        .store_retry_for(Duration::from_millis(800))
        .handler(|_range| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, String>(())
        })
        .build()
        .unwrap();
    let mut events = job.events();
    let cut = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.set(Mode::Down);
    };
    let (result, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), job.run()),
        cut
    );
    let err = result.expect("bounded").expect_err("the store is gone");
    let text = err.to_string();
    hidden(&text);
    assert!(err.is_store() && text.contains(":***@127.0.0.1"), "{text}");
    let mut seen = 0;
    while let Some(event) = events.next().await {
        seen += 1;
        hidden(&format!("{event:?}"));
        if matches!(event, workcrew::batch::BatchEvent::BeforeStop { .. }) {
            break;
        }
    }
    assert!(seen > 1, "events were delivered");
    let logged = logs.0.lock().unwrap().clone();
    hidden(&logged);
    assert!(logged.contains("postgres"), "the store logged: {logged}");
}

#[tokio::test]
async fn a_killed_connection_is_replaced_by_the_next_call() {
    let store = isolated("killed_conn").await;
    store.open(&span("j", 100)).await.unwrap();
    let admin = admin().await;
    for round in 0..3 {
        let killed = kill_backends(&admin, store.application_name()).await;
        assert_eq!(killed, 1, "round {round}: the store's one connection");
        // The first call may see the loss (transient), never a lasting failure.
        let first = store.now().await;
        if let Err(e) = &first {
            assert!(e.is_transient(), "{e}");
            assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
        }
        let reply = store
            .step("j", claim("a", vec![]))
            .await
            .expect("reconnected");
        assert_eq!(reply.claimed[0].range, round);
    }
}

#[tokio::test]
async fn a_server_that_stops_answering_fails_each_call_in_bounded_time_then_recovers() {
    let proxy = Proxy::start().await;
    let store = support::isolated_with(
        PostgresStore::builder(&support::url_via(proxy.port(), &support::test_password()))
            .schema(support::unique_name("frozen"))
            .call_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500)),
    )
    .await;
    store.open(&span("j", 100)).await.unwrap();
    proxy.set(Mode::Frozen);
    for _ in 0..2 {
        let started = Instant::now();
        let err = store.step("j", claim("a", vec![])).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
        assert!(err.to_string().contains("within"), "{err}");
        // The call timeout, plus at most the connect timeout for the new connection.
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
    proxy.set(Mode::Up);
    let reply = store
        .step("j", claim("a", vec![]))
        .await
        .expect("answers again");
    assert_eq!(reply.claimed.len(), 1);
}

#[tokio::test]
async fn a_connect_to_a_server_that_never_answers_is_bounded() {
    let proxy = Proxy::start().await;
    proxy.set(Mode::Frozen);
    let started = Instant::now();
    let err = PostgresStore::builder(&support::url_via(proxy.port(), "pw"))
        .connect_timeout(Duration::from_millis(300))
        .call_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
