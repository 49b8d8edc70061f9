//! Property test over random pipeline shapes: 1..4 stages, concurrency 1..4, buffers 0..3,
//! ordered or not, random failure points. Every item passes every stage exactly once, or the
//! run ends with the first error and at most `items` results.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use workcrew::pipeline::Pipeline;

#[derive(Clone, Debug)]
struct Shape {
    items: u32,
    source_buffer: usize,
    /// (concurrency, buffer, delay in µs per item) per stage.
    stages: Vec<(usize, usize, u64)>,
    ordered: bool,
    /// (stage, item) that fails.
    failure: Option<(usize, u32)>,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        0u32..40,
        0usize..4,
        prop::collection::vec((1usize..5, 0usize..4, 0u64..3), 1..5),
        any::<bool>(),
        prop::option::of((0usize..4, 0u32..40)),
    )
        .prop_map(|(items, source_buffer, stages, ordered, failure)| Shape {
            items,
            source_buffer,
            failure: failure.map(|(s, i)| (s % stages.len(), i)),
            stages,
            ordered,
        })
}

/// (stage name, item index) of the error a run ended with.
type ErrorAt = Option<(Option<String>, Option<u64>)>;

/// Runs `shape` on a fresh paused-clock runtime; returns per-(stage, item) call counts,
/// the outputs and the error.
fn run(shape: &Shape) -> (Vec<Vec<u32>>, Vec<u32>, ErrorAt) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let calls: Vec<Arc<Vec<AtomicU32>>> = shape
        .stages
        .iter()
        .map(|_| Arc::new((0..shape.items).map(|_| AtomicU32::new(0)).collect()))
        .collect();
    let (outputs, error) = rt.block_on(async {
        let mut p = Pipeline::<u32, String>::from_iter(0..shape.items);
        // Each stage's input is the output buffer of the one before (the source's for the first).
        let mut input = shape.source_buffer;
        for (s, &(concurrency, buffer, delay)) in shape.stages.iter().enumerate() {
            let calls = Arc::clone(&calls[s]);
            let failure = shape.failure;
            p = p
                .stage(format!("s{s}"), concurrency, move |n: u32| {
                    calls[n as usize].fetch_add(1, Ordering::SeqCst);
                    async move {
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_micros(delay * u64::from(n % 3 + 1)))
                                .await;
                        }
                        if failure == Some((s, n)) {
                            Err(format!("fail s{s} {n}"))
                        } else {
                            Ok(n)
                        }
                    }
                })
                .input_capacity(input);
            input = buffer;
        }
        p = p.output_capacity(input);
        if shape.ordered {
            p = p.ordered();
        }
        let mut stream = p.run().unwrap();
        let mut outputs = Vec::new();
        let mut error = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(n) => outputs.push(n),
                Err(e) => {
                    assert!(error.is_none(), "only one error is delivered");
                    error = Some((e.stage().map(str::to_owned), e.index()));
                }
            }
        }
        stream.shutdown().await;
        (outputs, error)
    });
    let calls = calls
        .iter()
        .map(|c| c.iter().map(|n| n.load(Ordering::SeqCst)).collect())
        .collect();
    (calls, outputs, error)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_item_passes_every_stage_once_or_the_first_error_ends_the_run(shape in shape()) {
        let (calls, outputs, error) = run(&shape);
        let fails = shape.failure.filter(|&(_, i)| i < shape.items);
        prop_assert!(outputs.len() <= shape.items as usize);
        // No stage ever sees an item twice.
        for stage in &calls {
            prop_assert!(stage.iter().all(|&c| c <= 1), "{:?}", calls);
        }
        match fails {
            None => {
                prop_assert!(error.is_none(), "{:?}", error);
                for stage in &calls {
                    prop_assert!(stage.iter().all(|&c| c == 1), "{:?}", calls);
                }
                let mut sorted = outputs.clone();
                sorted.sort_unstable();
                prop_assert_eq!(&sorted, &(0..shape.items).collect::<Vec<_>>());
                if shape.ordered {
                    prop_assert_eq!(&outputs, &sorted);
                }
            }
            Some((stage, item)) => {
                let expected = (Some(format!("s{stage}")), Some(u64::from(item)));
                prop_assert_eq!(error, Some(expected));
                // The failed item never came out, and outputs are distinct items.
                prop_assert!(!outputs.contains(&item));
                let mut sorted = outputs.clone();
                sorted.sort_unstable();
                sorted.dedup();
                prop_assert_eq!(sorted.len(), outputs.len());
                if shape.ordered {
                    // Ordered: a prefix of the input, all before the failed item.
                    prop_assert_eq!(&outputs, &(0..outputs.len() as u32).collect::<Vec<_>>());
                }
            }
        }
    }
}
