//! The pool's queue: higher priority first, FIFO within a priority.
//!
//! # Implementation notes
//!
//! Most pools use one priority, so the pool's default priority has its own
//! `VecDeque` that is never freed (no allocation once warm); other priorities
//! live in a `BTreeMap` of deques, removed when they empty. Push and pop are
//! O(1) on the default lane and O(log p) for p distinct other priorities.

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

    /// Removes every job, highest priority first.
    pub(crate) fn take_all(&mut self) -> Vec<J> {
        let mut all = Vec::with_capacity(self.len);
        while let Some(job) = self.pop() {
            all.push(job);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Pops come out by descending priority, FIFO within a priority, and
        /// nothing is lost or duplicated.
        #[test]
        fn order_matches_a_stable_sort(
            default_priority in -2i32..3,
            ops in proptest::collection::vec(proptest::option::of(-2i32..3), 0..200),
        ) {
            let mut q = PriorityQueue::new(default_priority);
            let mut model: Vec<(i32, usize)> = Vec::new();
            for (seq, op) in ops.into_iter().enumerate() {
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
