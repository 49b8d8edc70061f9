//! Unit tests of the channel: order, waiting batches, close, rendezvous, a stress run.

use super::*;
use std::task::Waker;
use std::time::Duration;

fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

fn batch(items: std::ops::Range<u32>) -> VecDeque<u32> {
    items.collect()
}

/// A batch that does not fit is parked; receivers move it into the queue
/// as they take items, in order, and the sender completes once all of it
/// was moved, without being polled in between.
#[test]
fn a_parked_batch_is_moved_in_by_receivers_in_order() {
    let (tx, rx) = channel::<u32>(2);
    let mut items = batch(0..5);
    let mut send = tx.send_all(&mut items);
    assert!(poll(&mut send).is_pending());
    assert_eq!(rx.chan.len(), 5);
    let mut got = VecDeque::new();
    while got.len() < 5 {
        rx.try_recv_share(&mut got, 1, 1, 0).unwrap();
    }
    assert_eq!(got, batch(0..5));
    assert_eq!(poll(&mut send), Poll::Ready(Ok(())));
}

/// Two blocked senders: each batch stays contiguous and each sender
/// completes when its own last item is in the queue.
#[test]
fn parked_batches_complete_one_by_one() {
    let (tx, rx) = channel::<u32>(1);
    let tx2 = tx.clone();
    let (mut a, mut b) = (batch(0..3), batch(10..12));
    let mut send_a = tx.send_all(&mut a);
    let mut send_b = tx2.send_all(&mut b);
    assert!(poll(&mut send_a).is_pending()); // 0 queued, 1 2 parked
    assert!(poll(&mut send_b).is_pending()); // 10 11 parked
    let mut got = VecDeque::new();
    rx.try_recv_share(&mut got, 1, 1, 0).unwrap(); // takes 0, moves 1
    rx.try_recv_share(&mut got, 1, 1, 0).unwrap(); // takes 1, moves 2: a done
    assert_eq!(poll(&mut send_a), Poll::Ready(Ok(())));
    assert!(poll(&mut send_b).is_pending());
    while got.len() < 5 {
        rx.try_recv_share(&mut got, 1, 8, 0).unwrap();
    }
    assert_eq!(got, VecDeque::from([0, 1, 2, 10, 11]));
    assert_eq!(poll(&mut send_b), Poll::Ready(Ok(())));
}

/// Dropping a parked send takes the unsent items back; the batch parked
/// behind it moves up.
#[test]
fn a_dropped_send_takes_its_parked_items_back() {
    let (tx, rx) = channel::<u32>(1);
    let tx2 = tx.clone();
    let (mut a, mut b) = (batch(0..3), batch(10..12));
    let mut send_a = tx.send_all(&mut a);
    let mut send_b = tx2.send_all(&mut b);
    assert!(poll(&mut send_a).is_pending());
    assert!(poll(&mut send_b).is_pending());
    drop(send_a);
    assert_eq!(a, batch(1..3));
    let mut got = VecDeque::new();
    while got.len() < 3 {
        rx.try_recv_share(&mut got, 1, 8, 0).unwrap();
    }
    assert_eq!(got, VecDeque::from([0, 10, 11]));
    assert_eq!(poll(&mut send_b), Poll::Ready(Ok(())));
}

/// A close wakes a parked sender, which gets its items back with `Err`.
#[test]
fn a_close_gives_parked_items_back() {
    let (tx, rx) = channel::<u32>(1);
    let mut items = batch(0..3);
    let mut send = tx.send_all(&mut items);
    assert!(poll(&mut send).is_pending());
    rx.chan.close();
    assert_eq!(poll(&mut send), Poll::Ready(Err(())));
    drop(send);
    assert_eq!(items, batch(1..3));
    assert_eq!(rx.chan.drain(), [0]);
}

/// The last receiver gone: a parked sender is woken and fails.
#[test]
fn losing_every_receiver_fails_a_parked_send() {
    let (tx, rx) = channel::<u32>(1);
    let mut items = batch(0..2);
    let mut send = tx.send_all(&mut items);
    assert!(poll(&mut send).is_pending());
    drop(rx);
    assert_eq!(poll(&mut send), Poll::Ready(Err(())));
}

/// Rendezvous: nothing is parked; each item waits for a receiver.
#[test]
fn rendezvous_send_all_waits_for_receivers() {
    let (tx, rx) = channel::<u32>(0);
    let mut items = batch(0..2);
    let mut send = tx.send_all(&mut items);
    assert!(poll(&mut send).is_pending());
    assert_eq!(rx.chan.len(), 0);
    let mut recv = rx.recv();
    assert!(poll(&mut recv).is_pending()); // registers: the sender may go
    assert!(poll(&mut send).is_pending()); // hands over 0, waits for the next
    assert_eq!(poll(&mut recv), Poll::Ready(Some(0)));
    let mut recv = rx.recv();
    assert!(poll(&mut recv).is_pending());
    assert_eq!(poll(&mut send), Poll::Ready(Ok(())));
    assert_eq!(poll(&mut recv), Poll::Ready(Some(1)));
}

/// A waker that records whether it was woken.
struct Flag(std::sync::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn flag() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
    (Arc::clone(&flag), Waker::from(flag))
}

fn poll_with<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

/// The lost wake-up of the old rendezvous: a sender that found the hand-over
/// slot full waits; when a receiver takes the slot's item while other
/// receivers are already waiting, that sender must be woken (no receiver will
/// *start* waiting to wake it: they all already are).
#[test]
fn rendezvous_sender_is_woken_when_the_slot_empties_and_receivers_wait() {
    let (tx, rx) = channel::<u32>(0);
    let (rx2, rx3) = (rx.clone(), rx.clone());
    // Three receivers waiting, as idle stage workers are.
    let (mut r1, mut r2, mut r3) = (rx.recv(), rx2.recv(), rx3.recv());
    assert!(poll(&mut r1).is_pending());
    assert!(poll(&mut r2).is_pending());
    assert!(poll(&mut r3).is_pending());
    // The first send fills the slot for r1; the second finds it full and waits.
    assert_eq!(poll(&mut tx.send(1)), Poll::Ready(Ok(())));
    let (woken, waker) = flag();
    let mut second = tx.send(2);
    assert!(poll_with(&mut second, &waker).is_pending());
    // r1 takes its item: the slot is free and r2, r3 wait, so the sender must go.
    assert_eq!(poll(&mut r1), Poll::Ready(Some(1)));
    assert!(
        woken.0.load(std::sync::atomic::Ordering::SeqCst),
        "the blocked sender was not woken although receivers were waiting"
    );
    assert_eq!(poll_with(&mut second, &waker), Poll::Ready(Ok(())));
    // And the same for a batch sender (`send_all`) blocked on the slot.
    let (woken, waker) = flag();
    let mut items = batch(3..5);
    let mut send = tx.send_all(&mut items);
    assert!(poll_with(&mut send, &waker).is_pending());
    let got = match (poll(&mut r2), poll(&mut r3)) {
        (Poll::Ready(Some(n)), Poll::Pending) | (Poll::Pending, Poll::Ready(Some(n))) => n,
        other => panic!("one receiver gets item 2: {other:?}"),
    };
    assert_eq!(got, 2);
    assert!(
        woken.0.load(std::sync::atomic::Ordering::SeqCst),
        "the blocked batch sender was not woken although a receiver was waiting"
    );
}

/// Many senders and receivers on a multi-thread runtime, tiny capacities:
/// every item arrives exactly once and nobody hangs (a lost wake-up would
/// hang a receiver or a parked sender until the timeout).
#[test]
fn stress_no_item_or_wake_up_is_lost() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    for capacity in [0, 1, 2, 3, 8] {
        rt.block_on(async move {
            const SENDERS: u32 = 4;
            const PER_SENDER: u32 = 5_000;
            let (tx, rx) = channel::<u32>(capacity);
            let mut tasks = tokio::task::JoinSet::new();
            for s in 0..SENDERS {
                let tx = tx.clone();
                tasks.spawn(async move {
                    let mut n = s * PER_SENDER;
                    let end = n + PER_SENDER;
                    let mut out = VecDeque::new();
                    while n < end {
                        // Batches of 1..=7, with a single `send` now and then.
                        let len = (n % 7 + 1).min(end - n);
                        if len == 3 {
                            tx.send(n).await.map_err(|_| ()).unwrap();
                            n += 1;
                            continue;
                        }
                        out.extend(n..n + len);
                        n += len;
                        tx.send_all(&mut out).await.unwrap();
                    }
                    Vec::new()
                });
            }
            drop(tx);
            for r in 0..3 {
                let rx = rx.clone();
                tasks.spawn(async move {
                    let mut got = Vec::new();
                    let mut share = VecDeque::new();
                    loop {
                        if r == 0 {
                            match rx.try_recv_share(&mut share, 3, 4, 0) {
                                Ok(_) => got.extend(share.drain(..)),
                                Err(TryRecvError::Closed) => break,
                                Err(TryRecvError::Empty) => match rx.recv().await {
                                    Some(n) => got.push(n),
                                    None => break,
                                },
                            }
                        } else {
                            match rx.recv().await {
                                Some(n) => got.push(n),
                                None => break,
                            }
                        }
                    }
                    got
                });
            }
            drop(rx);
            let all = tokio::time::timeout(Duration::from_secs(60), async {
                let mut all = Vec::new();
                while let Some(got) = tasks.join_next().await {
                    all.extend(got.unwrap());
                }
                all
            });
            let mut all = all.await.expect("a lost wake-up hung the channel");
            all.sort_unstable();
            assert_eq!(
                all,
                (0..SENDERS * PER_SENDER).collect::<Vec<_>>(),
                "capacity {capacity}"
            );
        });
    }
}

/// The lost wake-up under load: `RECEIVERS` receivers each hold the item they
/// got until every one of them has one (a barrier), so the run only goes on if
/// a sender blocked on a full slot (or queue) is woken while the other
/// receivers are already waiting. With the old rendezvous this hung at once.
#[test]
fn stress_every_waiting_receiver_gets_an_item() {
    const RECEIVERS: usize = 4;
    const ROUNDS: u32 = 2_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    for capacity in [0, 1, 3] {
        rt.block_on(async move {
            let (tx, rx) = channel::<u32>(capacity);
            let barrier = Arc::new(tokio::sync::Barrier::new(RECEIVERS));
            let mut tasks = tokio::task::JoinSet::new();
            for s in 0..2u32 {
                let tx = tx.clone();
                tasks.spawn(async move {
                    // Alternate one-item sends and batches.
                    let mut out = VecDeque::new();
                    let mut n = s;
                    while n < ROUNDS * RECEIVERS as u32 {
                        if n % 3 == 0 {
                            tx.send(n).await.map_err(|_| ()).unwrap();
                        } else {
                            out.push_back(n);
                            tx.send_all(&mut out).await.unwrap();
                        }
                        n += 2;
                    }
                    0
                });
            }
            drop(tx);
            for _ in 0..RECEIVERS {
                let (rx, barrier) = (rx.clone(), Arc::clone(&barrier));
                tasks.spawn(async move {
                    let mut got = 0;
                    while rx.recv().await.is_some() {
                        got += 1;
                        barrier.wait().await;
                    }
                    got
                });
            }
            drop(rx);
            let total = tokio::time::timeout(Duration::from_secs(60), async {
                let mut total = 0;
                while let Some(got) = tasks.join_next().await {
                    total += got.unwrap();
                }
                total
            })
            .await
            .unwrap_or_else(|_| panic!("capacity {capacity}: a blocked sender was never woken"));
            assert_eq!(total, ROUNDS * RECEIVERS as u32);
        });
    }
}
