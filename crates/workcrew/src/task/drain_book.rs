//! Who is waiting in `drain()`/`close()`, and what each of them gets.
//!
//! # Implementation notes
//!
//! Waiters register against the current sequence number `seq`. When the pool
//! reaches a moment a waiter must hear about (idle, a stall), the outcome is
//! *published* once, as `seq + 1`, with a count of the waiters registered for
//! it; each takes a clone and the last one frees it. So any number of
//! concurrent drainers all resolve, and all with the same report — even if the
//! pool goes busy and idle again before some of them are polled.
//!
//! A waiter that goes away (its future dropped, or superseded in hand-off mode)
//! unregisters; if it was the last taker of a report nobody read, the report is
//! handed back so its failures reach the next drain instead of vanishing.

use std::collections::VecDeque;

use super::error::DrainError;
use super::report::DrainReport;

pub(crate) type DrainOutcome = Result<DrainReport, DrainError>;

struct Published {
    seq: u64,
    outcome: DrainOutcome,
    remaining: usize,
    taken: bool,
}

#[derive(Default)]
pub(crate) struct DrainBook {
    seq: u64,
    waiting: usize,
    published: VecDeque<Published>,
    /// Bumped by each new waiter in hand-off mode; older waiters compare.
    handoff_gen: u64,
}

/// A waiter's registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    seq: u64,
    handoff_gen: u64,
}

impl Ticket {
    #[cfg(test)]
    pub(crate) fn key(self) -> u64 {
        self.seq
    }
}

impl DrainBook {
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting > 0
    }

    pub(crate) fn register(&mut self, handoff: bool) -> Ticket {
        self.waiting += 1;
        if handoff {
            self.handoff_gen += 1;
        }
        Ticket {
            seq: self.seq,
            handoff_gen: self.handoff_gen,
        }
    }

    /// Publishes `outcome` to every registered waiter; false if there were none
    /// (the caller keeps the outcome).
    pub(crate) fn publish(&mut self, outcome: DrainOutcome) -> Result<(), DrainOutcome> {
        if self.waiting == 0 {
            return Err(outcome);
        }
        self.seq += 1;
        self.published.push_back(Published {
            seq: self.seq,
            outcome,
            remaining: self.waiting,
            taken: false,
        });
        self.waiting = 0;
        Ok(())
    }

    /// The outcome published for `ticket`, once it exists.
    pub(crate) fn take(&mut self, ticket: Ticket) -> Option<DrainOutcome> {
        if self.seq <= ticket.seq {
            return None;
        }
        let idx = self
            .published
            .iter()
            .position(|p| p.seq == ticket.seq + 1)?;
        let entry = &mut self.published[idx];
        entry.remaining -= 1;
        entry.taken = true;
        if entry.remaining == 0 {
            self.published.remove(idx).map(|p| p.outcome)
        } else {
            Some(entry.outcome.clone())
        }
    }

    /// Whether a newer waiter took over `ticket` in hand-off mode.
    pub(crate) fn superseded(&self, ticket: Ticket) -> bool {
        self.seq <= ticket.seq && self.handoff_gen != ticket.handoff_gen
    }

    /// Withdraws a waiter that will not take its outcome. Returns the report of
    /// an outcome that nobody took, so it can be handed back.
    pub(crate) fn unregister(&mut self, ticket: Ticket) -> Option<DrainOutcome> {
        if self.seq <= ticket.seq {
            self.waiting -= 1;
            return None;
        }
        let idx = self
            .published
            .iter()
            .position(|p| p.seq == ticket.seq + 1)?;
        let entry = &mut self.published[idx];
        entry.remaining -= 1;
        if entry.remaining > 0 {
            return None;
        }
        let entry = self.published.remove(idx)?;
        (!entry.taken).then_some(entry.outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(completed: u64) -> DrainOutcome {
        Ok(DrainReport {
            completed,
            ..DrainReport::default()
        })
    }

    #[test]
    fn all_waiters_get_the_same_outcome_and_it_is_freed() {
        let mut book = DrainBook::default();
        let a = book.register(false);
        let b = book.register(false);
        assert!(book.take(a).is_none());
        book.publish(report(3)).unwrap();
        let c = book.register(false); // waits for the next one
        assert_eq!(book.take(a).unwrap().unwrap().completed, 3);
        assert!(book.take(c).is_none());
        book.publish(report(5)).unwrap();
        assert_eq!(book.take(c).unwrap().unwrap().completed, 5);
        assert_eq!(book.take(b).unwrap().unwrap().completed, 3);
        assert!(book.published.is_empty());
    }

    #[test]
    fn an_untaken_report_is_handed_back() {
        let mut book = DrainBook::default();
        let a = book.register(false);
        book.publish(report(2)).unwrap();
        assert_eq!(book.unregister(a).unwrap().unwrap().completed, 2);
        assert!(book.publish(report(1)).is_err(), "nobody waits any more");
    }

    #[test]
    fn handoff_supersedes_older_waiters() {
        let mut book = DrainBook::default();
        let a = book.register(true);
        assert!(!book.superseded(a));
        let b = book.register(true);
        assert!(book.superseded(a));
        assert!(!book.superseded(b));
        assert!(book.unregister(a).is_none());
        book.publish(report(1)).unwrap();
        assert_eq!(book.take(b).unwrap().unwrap().completed, 1);
        assert!(book.published.is_empty());
    }
}
