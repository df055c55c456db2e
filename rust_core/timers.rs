//! Generic keyed timers: any number of caller-chosen `u64` keys, each with one due time
//! (ms since the epoch), on a timing wheel of their own. The engine fires them from its
//! clock thread and hands them to Python in batches; what a key means is the caller's
//! business (escalation steps, say).
//!
//! Arm, re-arm and cancel are O(1) (a hash map from key to the wheel's handle, and the
//! wheel's lazy cancel and reschedule); one `advance` per wake-up fires everything due.

use rustc_hash::FxHashMap;

use crate::wheel::{TimerKey, TimerWheel};

/// A timer that came due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fired {
    pub key: u64,
    /// The time it was armed for (ms since the epoch).
    pub due_ms: u64,
}

/// The pending timers, one per key.
pub struct Timers {
    wheel: TimerWheel<u64>,
    keys: FxHashMap<u64, TimerKey>,
    /// Reused by `advance` so a wake-up allocates nothing.
    scratch: Vec<(u64, u64)>,
}

impl Timers {
    pub fn new(now_ms: u64) -> Self {
        Timers {
            wheel: TimerWheel::new(now_ms),
            keys: FxHashMap::default(),
            scratch: Vec::new(),
        }
    }

    /// Pre-allocate room for `additional` more timers.
    pub fn reserve(&mut self, additional: usize) {
        self.wheel.reserve(additional);
        self.keys.reserve(additional);
    }

    /// Fire `key` at `due_ms`, replacing the timer it had. A due time at or before the
    /// wheel's clock fires on the next `advance`.
    pub fn arm(&mut self, key: u64, due_ms: u64) {
        if let Some(&handle) = self.keys.get(&key) {
            // A key in the map is always pending: fired timers leave it in `advance`.
            let moved = self.wheel.reschedule(handle, due_ms);
            debug_assert!(moved, "timer {key} in the map but not pending");
            return;
        }
        let handle = self.wheel.insert(due_ms, key);
        self.keys.insert(key, handle);
    }

    /// Drop the key's timer; false if it had none (never armed, fired or cancelled).
    pub fn cancel(&mut self, key: u64) -> bool {
        match self.keys.remove(&key) {
            Some(handle) => self.wheel.cancel(handle).is_some(),
            None => false,
        }
    }

    /// When the key's timer is due, if it has one.
    pub fn due(&self, key: u64) -> Option<u64> {
        self.keys.get(&key).and_then(|&h| self.wheel.deadline(h))
    }

    /// Pending timers.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// When `advance` has something to do next, if ever (never later than the earliest
    /// due time).
    pub fn next_expiration(&self) -> Option<u64> {
        self.wheel.next_expiration()
    }

    /// Append every timer due at or before `now_ms` to `out` in due order; each fires
    /// once and its key is free to be armed again.
    pub fn advance(&mut self, now_ms: u64, out: &mut Vec<Fired>) {
        let mut fired = std::mem::take(&mut self.scratch);
        self.wheel.advance(now_ms, &mut fired);
        out.reserve(fired.len());
        for (due_ms, key) in fired.drain(..) {
            self.keys.remove(&key);
            out.push(Fired { key, due_ms });
        }
        self.scratch = fired;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const START: u64 = 1_700_000_000_000;

    fn advance(t: &mut Timers, now_ms: u64) -> Vec<Fired> {
        let mut out = Vec::new();
        t.advance(now_ms, &mut out);
        out
    }

    fn fired(key: u64, due_ms: u64) -> Fired {
        Fired { key, due_ms }
    }

    #[test]
    fn fires_once_at_its_due_time_and_not_before() {
        let mut t = Timers::new(START);
        t.arm(1, START + 100);
        t.arm(2, START + 50);
        assert_eq!(t.len(), 2);
        assert!(t.next_expiration().is_some_and(|at| at <= START + 50));
        assert!(advance(&mut t, START + 49).is_empty());
        assert_eq!(
            advance(&mut t, START + 100),
            [fired(2, START + 50), fired(1, START + 100)]
        );
        assert!(t.is_empty());
        assert_eq!(t.next_expiration(), None);
        assert!(advance(&mut t, START + 10_000).is_empty(), "once");
    }

    #[test]
    fn re_arming_moves_the_timer_either_way() {
        let mut t = Timers::new(START);
        t.arm(1, START + 100);
        t.arm(1, START + 500);
        t.arm(2, START + 500);
        t.arm(2, START + 20);
        assert_eq!(t.len(), 2);
        assert_eq!((t.due(1), t.due(2)), (Some(START + 500), Some(START + 20)));
        assert_eq!(advance(&mut t, START + 499), [fired(2, START + 20)]);
        assert_eq!(advance(&mut t, START + 500), [fired(1, START + 500)]);
    }

    #[test]
    fn a_cancelled_timer_never_fires() {
        let mut t = Timers::new(START);
        t.arm(1, START + 100);
        t.arm(2, START + 100);
        assert!(t.cancel(1));
        assert!(!t.cancel(1), "already cancelled");
        assert!(!t.cancel(3), "never armed");
        assert_eq!(t.due(1), None);
        assert_eq!(advance(&mut t, START + 1_000), [fired(2, START + 100)]);
        assert!(!t.cancel(2), "already fired");
    }

    #[test]
    fn a_key_fires_again_when_armed_after_firing() {
        let mut t = Timers::new(START);
        t.arm(7, START + 10);
        assert_eq!(advance(&mut t, START + 10), [fired(7, START + 10)]);
        t.arm(7, START + 30);
        assert_eq!(advance(&mut t, START + 30), [fired(7, START + 30)]);
    }

    #[test]
    fn a_past_due_time_fires_on_the_next_advance() {
        let mut t = Timers::new(START);
        advance(&mut t, START + 1_000);
        t.arm(1, START + 900);
        t.arm(2, 0);
        assert_eq!(
            advance(&mut t, START + 1_000),
            [fired(2, 0), fired(1, START + 900)]
        );
    }

    #[test]
    fn a_hundred_thousand_timers_fire_once_each() {
        let mut t = Timers::new(START);
        t.reserve(100_000);
        for key in 0..100_000u64 {
            t.arm(key, START + key % 60_000);
        }
        // Cancel every tenth, move every seventh a minute later.
        for key in (0..100_000u64).step_by(10) {
            assert!(t.cancel(key));
        }
        for key in (0..100_000u64).step_by(7) {
            if key % 10 != 0 {
                t.arm(key, START + 60_000 + key % 1_000);
            }
        }
        let mut out = Vec::new();
        let mut now = START;
        while now <= START + 61_000 {
            t.advance(now, &mut out);
            now += 250;
        }
        assert!(t.is_empty());
        assert_eq!(out.len(), 90_000);
        assert!(out.windows(2).all(|w| w[0].due_ms <= w[1].due_ms));
        let mut keys: Vec<u64> = out.iter().map(|f| f.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 90_000, "each once");
        assert!(out.iter().all(|f| f.key % 10 != 0));
        assert!(out
            .iter()
            .filter(|f| f.key % 7 == 0)
            .all(|f| f.due_ms >= START + 60_000));
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Arm key (of 16) `delay` from now, or before now when `past`.
        Arm {
            key: u64,
            delay: u64,
            past: bool,
        },
        Cancel(u64),
        Advance(u64),
    }

    fn span() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => 0u64..70,
            3 => 0u64..5_000,
            2 => 0u64..400_000,
            1 => 0u64..(3 * crate::wheel::MAX_SPAN_MS),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..16, span(), prop::bool::weighted(0.15))
                .prop_map(|(key, delay, past)| Op::Arm { key, delay, past }),
            1 => (0u64..16).prop_map(Op::Cancel),
            3 => span().prop_map(Op::Advance),
        ]
    }

    /// The reference: every pending key with its due time, scanned in full.
    #[derive(Default)]
    struct Reference {
        pending: BTreeMap<u64, u64>,
    }

    impl Reference {
        fn advance(&mut self, now: u64) -> Vec<Fired> {
            let mut out = Vec::new();
            self.pending.retain(|&key, &mut due_ms| {
                if due_ms > now {
                    return true;
                }
                out.push(Fired { key, due_ms });
                false
            });
            out
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the arms, re-arms, cancels and clock steps, the wheel fires exactly
        /// the timers a full scan fires: each once, at its latest due time, never early,
        /// in due order; a cancelled or re-armed timer never fires at its old time.
        #[test]
        fn behaves_like_a_full_scan(
            start in 0u64..(1 << 45),
            ops in prop::collection::vec(op(), 1..300),
        ) {
            let mut timers = Timers::new(start);
            let mut reference = Reference::default();
            let mut now = start;
            let mut out = Vec::new();
            for op in ops {
                match op {
                    Op::Arm { key, delay, past } => {
                        let due = if past { now.saturating_sub(delay) } else { now + delay };
                        timers.arm(key, due);
                        reference.pending.insert(key, due);
                    }
                    Op::Cancel(key) => {
                        let expected = reference.pending.remove(&key).is_some();
                        prop_assert_eq!(timers.cancel(key), expected);
                    }
                    Op::Advance(step) => {
                        now += step;
                        out.clear();
                        timers.advance(now, &mut out);
                        prop_assert!(out.windows(2).all(|w| w[0].due_ms <= w[1].due_ms));
                        prop_assert!(out.iter().all(|f| f.due_ms <= now));
                        let mut got = out.clone();
                        got.sort_unstable();
                        let want = reference.advance(now);
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(timers.len(), reference.pending.len());
                for key in 0..16 {
                    prop_assert_eq!(timers.due(key), reference.pending.get(&key).copied());
                }
                if let Some(at) = timers.next_expiration() {
                    let earliest = reference.pending.values().min();
                    prop_assert!(earliest.is_some_and(|&e| at <= e.max(now)));
                } else {
                    prop_assert!(reference.pending.is_empty());
                }
            }
        }
    }
}
