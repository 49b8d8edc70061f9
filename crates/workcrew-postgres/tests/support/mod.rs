//! What the Postgres store's tests share: the server's URL, a store in a schema of its
//! own that is dropped afterwards, and an admin connection for the faults.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use workcrew::batch::conformance::Guarded;
use workcrew::batch::redact_url;
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
///
/// The drop waits for the schema's locks: on a current-thread runtime, a connection of
/// the test that is still in a transaction cannot be closed meanwhile (its driver task
/// cannot run), so such tests use the multi-threaded runtime.
pub type Isolated = Guarded<PostgresStore, SchemaGuard>;

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
        Ok(store) => Guarded {
            guard: SchemaGuard(store.schema().to_owned()),
            store,
        },
        Err(e) => panic!(
            "the Postgres server at {} (DATABASE_URL) did not answer: {e}",
            redact_url(&database_url())
        ),
    }
}

/// Drops its schema when dropped, also when the test fails.
pub struct SchemaGuard(pub String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        drop_schema(&self.0);
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

/// The test server's host and port, from `DATABASE_URL`.
pub async fn server_addr() -> std::net::SocketAddr {
    let config: tokio_postgres::Config = database_url().parse().expect("DATABASE_URL parses");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("resolve the server");
    addrs.next().expect("an address")
}

/// The password the tests put in URLs: `DATABASE_URL`'s own if it has one (the server
/// may need it), else a made-up one (a `trust` server ignores it).
pub fn test_password() -> String {
    let config: tokio_postgres::Config = database_url().parse().expect("DATABASE_URL parses");
    config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "Sekrit-Pw-9f3a".to_owned())
}

/// A URL for the test database through `port` on 127.0.0.1, with `password` in it.
pub fn url_via(port: u16, password: &str) -> String {
    let config: tokio_postgres::Config = database_url().parse().expect("DATABASE_URL parses");
    format!(
        "postgres://{}:{password}@127.0.0.1:{port}/{}",
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("test")
    )
}

/// What a [`Proxy`] does with the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Up,
    /// Keeps every connection open and accepts new ones, but forwards nothing: a server
    /// that stopped answering.
    Frozen,
    /// Closes every connection, and new ones at once: a server that is gone.
    Down,
}

/// A TCP proxy to the test server on a port of its own, whose traffic a test can freeze
/// or cut. Dropping it closes everything it holds.
pub struct Proxy {
    port: u16,
    mode: tokio::sync::watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to the test server, forwarding.
    pub async fn start() -> Proxy {
        let target = server_addr().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (mode, _) = tokio::sync::watch::channel(Mode::Up);
        let modes = mode.clone();
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let rx = modes.subscribe();
                if *rx.borrow() == Mode::Down {
                    continue;
                }
                pipes.spawn(pipe(client, target, rx));
                while pipes.try_join_next().is_some() {}
            }
        });
        Proxy { port, mode, task }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes what the proxy does, for open connections too.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut client: tokio::net::TcpStream,
    target: std::net::SocketAddr,
    mut mode: tokio::sync::watch::Receiver<Mode>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Down => return,
            Mode::Frozen => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            Mode::Up => tokio::select! {
                n = cr.read(&mut up) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => if sw.write_all(&up[..n]).await.is_err() { return },
                },
                n = sr.read(&mut down) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => if cw.write_all(&down[..n]).await.is_err() { return },
                },
                changed = mode.changed() => if changed.is_err() { return },
            },
        }
    }
}
