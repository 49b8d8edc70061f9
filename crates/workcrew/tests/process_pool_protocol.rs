//! The pool against `docs/protocol.md`.

use std::time::Duration;

use workcrew::process::{CallError, ProcessPool};
use workcrew::protocol::Encoding;

mod support;
use support::processes::{all_gone, within};

const BOUND: Duration = Duration::from_secs(20);

/// §2: a `CALL` whose `length` is exactly `max_frame` is sent; one byte more is refused before
/// it is sent, naming its `length`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_call_of_exactly_max_frame_is_sent_and_one_byte_more_is_refused() {
    let pool = ProcessPool::builder(env!("CARGO_BIN_EXE_workcrew-demo-worker"))
        .workers(1)
        .max_frame(4096)
        .encoding(Encoding::Json)
        .build()
        .await
        .unwrap();
    // length = 9 (type, id) + 2 (name length) + 4 ("echo") + the JSON string (k + 2 bytes).
    let at_limit = "a".repeat(4096 - 17);
    let echoed = within(
        "a call at the limit",
        BOUND,
        pool.call::<_, String>("echo", &at_limit),
    )
    .await;
    let over = within(
        "a call over the limit",
        BOUND,
        pool.call::<_, String>("echo", &"a".repeat(4096 - 16)),
    )
    .await;
    let pids = pool.worker_pids();
    within("stop", BOUND, pool.stop()).await;
    assert!(all_gone(&pids).await);
    assert_eq!(
        echoed.expect("a call of exactly max_frame is sent"),
        at_limit
    );
    match over {
        Err(CallError::TooLarge { size, max, .. }) => assert_eq!((size, max), (4097, 4096)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
