//! A store URL's password never shows: not in `describe()`, not in `Debug`, not
//! in any error (a refused password, a bad URL, a server gone). Events and the
//! engine's log lines carry these texts, so they cannot show it either (the
//! outage tests check the events of real runs).

mod support;

use std::time::Duration;

use support::server::RedisServer;
use workcrew::batch::{JobSpec, SourceSpec, Store, StoreErrorKind};
use workcrew_redis::RedisStore;

const RIGHT: &str = "right-horse-battery-4e1d";
const WRONG: &str = "wrong-staple-9b7a";

fn no_secret(text: &str) {
    assert!(!text.contains(RIGHT), "the password leaked: {text}");
    assert!(!text.contains(WRONG), "the password leaked: {text}");
}

#[tokio::test]
async fn a_refused_password_is_an_error_without_it() {
    let server = RedisServer::start(&["--save", "", "--appendonly", "no"], Some(RIGHT));
    let url = server.url().replace(RIGHT, WRONG);
    let err = RedisStore::builder(&url)
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect_err("a wrong password is refused");
    let text = err.to_string();
    no_secret(&text);
    no_secret(&format!("{err:?}"));
    assert!(
        text.contains("redis://:***@127.0.0.1:"),
        "names the server: {text}"
    );
    assert!(
        !err.is_transient(),
        "retrying a wrong password cannot help: {text}"
    );
}

#[tokio::test]
async fn describe_and_debug_hide_the_password() {
    let server = RedisServer::start(&["--save", "", "--appendonly", "no"], Some(RIGHT));
    let builder = RedisStore::builder(&server.url()).key_prefix("secrets");
    no_secret(&format!("{builder:?}"));
    let store = builder.connect().await.expect("the right password");
    let described = store.describe();
    no_secret(&described);
    assert!(
        described.starts_with("redis://:***@127.0.0.1:") && described.contains("secrets"),
        "{described}"
    );
    no_secret(&format!("{store:?}"));
}

#[tokio::test]
async fn errors_of_a_server_gone_away_hide_the_password() {
    let mut server = RedisServer::start(&["--save", "", "--appendonly", "no"], Some(RIGHT));
    let store = RedisStore::builder(&server.url())
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let spec = JobSpec {
        name: "gone".to_owned(),
        source: SourceSpec::Span {
            start: 0,
            end: 10,
            size: 5,
        },
    };
    store.open(&spec).await.unwrap();
    server.shutdown_nosave();
    for _ in 0..3 {
        let err = store
            .progress("gone")
            .await
            .expect_err("the server is gone");
        assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
        no_secret(&err.to_string());
        no_secret(&format!("{err:?}"));
    }
    // Connecting anew to the closed port fails the same way.
    let err = RedisStore::builder(&server.url())
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    no_secret(&err.to_string());
}

#[tokio::test]
async fn a_url_that_does_not_parse_is_an_error_without_its_password() {
    let url = format!("redis://:{RIGHT}@127.0.0.1:notaport/0");
    let err = RedisStore::connect(&url).await.expect_err("not a url");
    no_secret(&err.to_string());
    assert!(err.to_string().contains("not a redis url"), "{err}");
}
