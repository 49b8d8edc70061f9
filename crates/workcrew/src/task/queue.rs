//! The pool's queue: higher priority first, FIFO within a priority.
//!
//! # Implementation notes
//!
//! Most pools use one priority, so the pool's default priority has its own
//! `VecDeque` that is never freed (no allocation once warm); other priorities
//! live in a `BTreeMap` of deques, removed when they empty. Push and pop are
//! O(1) on the default lane and O(log p) for p distinct other priorities.
//!
//! A queued task that is cancelled (its token fired, its handle aborted it) is
//! taken out of the middle of its lane by [`remove`](PriorityQueue::remove),
//! which searches the lane from both ends at once: the oldest and the newest
//! tasks, which is what cancellations mostly hit, are found in a few steps; one
//! in the middle costs a scan of half the lane. Cancellation is rare, so the
//! lanes stay plain `VecDeque`s rather than an indexed structure that every
//! push and pop would pay for.

use std::collections::{BTreeMap, VecDeque};

pub(crate) struct PriorityQueue<J> {
    default_priority: i32,
    default_lane: VecDeque<J>,
    other_lanes: BTreeMap<i32, VecDeque<J>>,
    len: usize,
}

impl<J> PriorityQueue<J> {
    pub(crate) fn new(default_priority: i32) -> Self {
        PriorityQueue {
            default_priority,
            default_lane: VecDeque::new(),
            other_lanes: BTreeMap::new(),
            len: 0,
        }
    }

    pub(crate) fn default_priority(&self) -> i32 {
        self.default_priority
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, priority: i32, job: J) {
        if priority == self.default_priority {
            self.default_lane.push_back(job);
        } else {
            self.other_lanes.entry(priority).or_default().push_back(job);
        }
        self.len += 1;
    }

    pub(crate) fn default_lane_is_empty(&self) -> bool {
        self.default_lane.is_empty()
    }

    /// Appends `jobs` (all of the default priority, in order) to the default
    /// lane, leaving `jobs` empty. O(1) when the lane is empty: the buffers are
    /// swapped, so the caller gets the lane's warm buffer back for reuse.
    pub(crate) fn absorb_default(&mut self, jobs: &mut VecDeque<J>) {
        self.len += jobs.len();
        if self.default_lane.is_empty() {
            std::mem::swap(&mut self.default_lane, jobs);
        } else {
            self.default_lane.append(jobs);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<J> {
        let take_other = match self.other_lanes.last_key_value() {
            Some((&p, _)) => self.default_lane.is_empty() || p > self.default_priority,
            None => false,
        };
        let job = if take_other {
            let mut lane = self.other_lanes.last_entry()?;
            let job = lane.get_mut().pop_front();
            if lane.get().is_empty() {
                lane.remove();
            }
            job
        } else {
            self.default_lane.pop_front()
        };
        if job.is_some() {
            self.len -= 1;
        }
        job
    }

    /// Removes the first job found for which `is_it` is true, looking in the
    /// lane of `priority`, or in every lane (the default one first) if `None`.
    pub(crate) fn remove(
        &mut self,
        priority: Option<i32>,
        mut is_it: impl FnMut(&J) -> bool,
    ) -> Option<J> {
        let job = match priority {
            Some(p) if p != self.default_priority => {
                let lane = self.other_lanes.get_mut(&p)?;
                let job = take_from(lane, &mut is_it);
                if lane.is_empty() {
                    self.other_lanes.remove(&p);
                }
                job
            }
            Some(_) => take_from(&mut self.default_lane, &mut is_it),
            None => take_from(&mut self.default_lane, &mut is_it).or_else(|| {
                let (&p, job) = self
                    .other_lanes
                    .iter_mut()
                    .find_map(|(p, lane)| Some((p, take_from(lane, &mut is_it)?)))?;
                if self.other_lanes[&p].is_empty() {
                    self.other_lanes.remove(&p);
                }
                Some(job)
            }),
        };
        if job.is_some() {
            self.len -= 1;
        }
        job
    }

    /// Removes every job, highest priority first.
    pub(crate) fn take_all(&mut self) -> Vec<J> {
        let mut all = Vec::with_capacity(self.len);
        while let Some(job) = self.pop() {
            all.push(job);
        }
        all
    }
}

/// Takes the first job of `lane` for which `is_it` is true, looking from both
/// ends at once.
fn take_from<J>(lane: &mut VecDeque<J>, is_it: &mut impl FnMut(&J) -> bool) -> Option<J> {
    let n = lane.len();
    let at = (0..n.div_ceil(2)).find_map(|k| {
        let back = n - 1 - k;
        if is_it(&lane[k]) {
            Some(k)
        } else if is_it(&lane[back]) {
            Some(back)
        } else {
            None
        }
    })?;
    lane.remove(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Pops come out by descending priority, FIFO within a priority, and
        /// nothing is lost or duplicated, also when jobs are removed from the
        /// middle.
        #[test]
        fn order_matches_a_stable_sort(
            default_priority in -2i32..3,
            ops in proptest::collection::vec(proptest::option::of(-2i32..3), 0..200),
            removals in proptest::collection::vec((0usize..200, 0usize..200, any::<bool>()), 0..60),
        ) {
            let mut q = PriorityQueue::new(default_priority);
            let mut model: Vec<(i32, usize)> = Vec::new();
            for (seq, op) in ops.into_iter().enumerate() {
                // Now and then, remove a job by its sequence number (present or not),
                // with or without naming its lane.
                for &(_, target, name_lane) in removals.iter().filter(|r| r.0 == seq) {
                    let target = target % (seq + 1);
                    let in_model = model.iter().position(|j| j.1 == target);
                    let lane = if name_lane {
                        Some(in_model.map_or(default_priority, |i| model[i].0))
                    } else {
                        None
                    };
                    let removed = q.remove(lane, |j: &(i32, usize)| j.1 == target);
                    prop_assert_eq!(removed, in_model.map(|i| model.remove(i)));
                    prop_assert_eq!(q.len(), model.len());
                }
                match op {
                    Some(p) => {
                        q.push(p, (p, seq));
                        model.push((p, seq));
                    }
                    None => {
                        // Highest priority, then earliest.
                        let best = model
                            .iter()
                            .enumerate()
                            .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
                            .map(|(i, _)| i);
                        let expected = best.map(|i| model.remove(i));
                        prop_assert_eq!(q.pop(), expected);
                    }
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
