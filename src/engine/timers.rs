//! Deadlines of one worker, ordered, so the poll timeout is the earliest.

use std::collections::BTreeSet;
use std::time::Instant;

/// Deadlines keyed by the owner's slab key. Each owner has at most one and
/// remembers it, so moving it costs one removal and one insertion.
#[derive(Debug, Default)]
pub struct Timers {
    set: BTreeSet<(Instant, usize)>,
}

impl Timers {
    /// Moves `key`'s deadline from `*current` to `next`.
    pub fn reschedule(&mut self, key: usize, current: &mut Option<Instant>, next: Option<Instant>) {
        if *current == next {
            return;
        }
        if let Some(old) = current.take() {
            self.set.remove(&(old, key));
        }
        if let Some(at) = next {
            self.set.insert((at, key));
        }
        *current = next;
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _)| at)
    }

    /// Removes and returns up to `max` keys whose deadline is at or before `now`.
    pub fn expired(&mut self, now: Instant, max: usize, out: &mut Vec<usize>) {
        while out.len() < max {
            match self.set.first() {
                Some(&(at, key)) if at <= now => {
                    self.set.remove(&(at, key));
                    out.push(key);
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_bounded() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let (mut a, mut b, mut c) = (None, None, None);
        timers.reschedule(1, &mut a, Some(t0 + Duration::from_secs(3)));
        timers.reschedule(2, &mut b, Some(t0 + Duration::from_secs(1)));
        timers.reschedule(3, &mut c, Some(t0 + Duration::from_secs(2)));
        timers.reschedule(1, &mut a, Some(t0));
        assert_eq!(timers.next_deadline(), Some(t0));
        let mut out = Vec::new();
        timers.expired(t0 + Duration::from_secs(5), 2, &mut out);
        assert_eq!(out, vec![1, 2]);
        out.clear();
        timers.expired(t0 + Duration::from_secs(5), 10, &mut out);
        assert_eq!(out, vec![3]);
        assert_eq!(timers.next_deadline(), None);
    }
}
