//! Routing strategies: which worker with room gets a call.
//!
//! Every strategy sees only workers that serve the function, are not
//! retiring, and have room (in flight below their limit). In-flight counts
//! are raised at routing time, under the pool lock, so a burst spreads.

/// How a call picks among the workers that have room for it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Routing {
    /// The worker with the fewest calls in flight; ties go to the earliest
    /// started. The default.
    #[default]
    FewestInFlight,
    /// The first worker (in start order) with fewer than `full` calls in
    /// flight; past that, the one with the fewest. Keeps work on few
    /// workers, so the others go idle and can be reaped.
    Fill {
        /// Calls that count as full.
        full: usize,
    },
    /// Each call to the next worker in turn, skipping those without room.
    RoundRobin,
    /// A worker picked at random.
    Random,
    /// Two workers picked at random; the one with fewer calls in flight.
    PowerOfTwoChoices,
}

/// Per-pool routing state: the round-robin cursor and a small random generator.
#[derive(Debug)]
pub(crate) struct Router {
    strategy: Routing,
    cursor: usize,
    rng: u64,
}

impl Router {
    pub(crate) fn new(strategy: Routing) -> Self {
        Router {
            strategy,
            cursor: 0,
            rng: seed(),
        }
    }

    /// The index (below `len`) of the worker that gets the call, if any has
    /// room. `load(i)` is worker `i`'s calls in flight, or `None` if it
    /// cannot take the call (does not serve it, is retiring, or is full).
    pub(crate) fn pick(
        &mut self,
        len: usize,
        load: impl Fn(usize) -> Option<usize>,
    ) -> Option<usize> {
        if len == 0 {
            return None;
        }
        match self.strategy {
            Routing::FewestInFlight => fewest(len, &load),
            Routing::Fill { full } => (0..len)
                .find(|&i| load(i).is_some_and(|l| l < full))
                .or_else(|| fewest(len, &load)),
            Routing::RoundRobin => {
                let found = (0..len)
                    .map(|k| (self.cursor + k) % len)
                    .find(|&i| load(i).is_some())?;
                self.cursor = found + 1;
                Some(found)
            }
            Routing::Random => self.random(len, &load),
            Routing::PowerOfTwoChoices => {
                let a = self.random(len, &load)?;
                let mut b = self.random(len, &load)?;
                if b == a {
                    // Two different workers when there are two.
                    b = (1..len)
                        .map(|k| (a + k) % len)
                        .find(|&i| load(i).is_some())
                        .unwrap_or(a);
                }
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }

    /// A uniformly random worker that can take the call: a few random draws,
    /// then the next one with room after a random start.
    fn random(&mut self, len: usize, load: &impl Fn(usize) -> Option<usize>) -> Option<usize> {
        for _ in 0..4 {
            let i = self.below(len);
            if load(i).is_some() {
                return Some(i);
            }
        }
        let start = self.below(len);
        (0..len)
            .map(|k| (start + k) % len)
            .find(|&i| load(i).is_some())
    }

    /// A random number in `0..n` (xorshift; routing needs spread, not secrecy).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n.max(1) as u64) as usize
    }
}

fn fewest(len: usize, load: &impl Fn(usize) -> Option<usize>) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for i in 0..len {
        if let Some(l) = load(i) {
            if best.is_none_or(|(_, b)| l < b) {
                best = Some((i, l));
            }
        }
    }
    best.map(|(i, _)| i)
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    struct W(usize, bool);

    fn pick(r: &mut Router, ws: &[W]) -> Option<usize> {
        r.pick(ws.len(), |i| ws[i].1.then_some(ws[i].0))
    }

    /// Routes `calls` calls over `workers` slots of `room` each, counting
    /// each routed call as in flight; returns the per-worker counts.
    fn burst(strategy: Routing, workers: usize, room: usize, calls: usize) -> Vec<usize> {
        let mut r = Router::new(strategy);
        let mut loads = vec![0usize; workers];
        for _ in 0..calls {
            let ws: Vec<W> = loads.iter().map(|&l| W(l, l < room)).collect();
            if let Some(i) = pick(&mut r, &ws) {
                loads[i] += 1;
            }
        }
        loads
    }

    #[test]
    fn fewest_in_flight_spreads_a_burst_evenly() {
        assert_eq!(burst(Routing::FewestInFlight, 4, 100, 10), vec![3, 3, 2, 2]);
    }

    #[test]
    fn fill_fills_from_the_first_worker() {
        assert_eq!(burst(Routing::Fill { full: 3 }, 3, 10, 7), vec![3, 3, 1]);
        // Everyone full: fewest in flight, never above the room.
        assert_eq!(burst(Routing::Fill { full: 1 }, 2, 2, 5), vec![2, 2]);
    }

    #[test]
    fn round_robin_is_even_and_skips_full_workers() {
        assert_eq!(burst(Routing::RoundRobin, 3, 100, 9), vec![3, 3, 3]);
        assert_eq!(burst(Routing::RoundRobin, 3, 2, 9), vec![2, 2, 2]);
        let mut r = Router::new(Routing::RoundRobin);
        let ws = [W(0, true), W(0, false), W(0, true)];
        let picks: Vec<_> = (0..4).map(|_| pick(&mut r, &ws).unwrap()).collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
    }

    #[test]
    fn random_and_two_choices_use_every_worker_and_respect_room() {
        for s in [Routing::Random, Routing::PowerOfTwoChoices] {
            let loads = burst(s, 4, 1000, 4000);
            assert!(loads.iter().all(|&l| l > 500), "{s:?}: {loads:?}");
            assert_eq!(burst(s, 3, 2, 10), vec![2, 2, 2], "{s:?}");
        }
        // Two choices keeps loads close (a random pick alone drifts apart).
        for _ in 0..20 {
            let p2c = burst(Routing::PowerOfTwoChoices, 4, 1000, 400);
            let spread = p2c.iter().max().unwrap() - p2c.iter().min().unwrap();
            assert!(spread <= 8, "{p2c:?}");
        }
    }

    #[test]
    fn nobody_eligible_means_none() {
        for s in [
            Routing::FewestInFlight,
            Routing::Fill { full: 2 },
            Routing::RoundRobin,
            Routing::Random,
            Routing::PowerOfTwoChoices,
        ] {
            let mut r = Router::new(s);
            assert_eq!(pick(&mut r, &[W(1, false), W(0, false)]), None);
            assert_eq!(pick(&mut r, &[]), None);
        }
    }
}
