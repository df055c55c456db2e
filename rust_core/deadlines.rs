//! Heartbeat deadlines, the verdicts' clock for checks that are pinged rather than
//! probed: a check expected by `due_ms` turns LATE at that time and DOWN once `grace_ms`
//! more have passed without a ping. The deadlines live on a timing wheel of their own;
//! each lapse becomes a synthetic result from the central source that the engine folds
//! like any other.

use rustc_hash::FxHashMap;

use crate::result::{ProbeResult, Status};
use crate::wheel::{TimerKey, TimerWheel};

/// Where a heartbeat check stands between pings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before its due time.
    Waiting,
    /// Past due, within the grace period.
    Late,
}

#[derive(Clone, Copy, Debug)]
struct Heartbeat {
    due_ms: u64,
    grace_ms: u64,
    phase: Phase,
    key: TimerKey,
}

/// A deadline that passed without a ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lapse {
    pub check_id: u64,
    /// The deadline that passed (ms since the epoch).
    pub at_ms: u64,
    /// LATE at the due time, DOWN at the end of the grace period.
    pub status: Status,
}

impl Lapse {
    /// The synthetic result that reports this lapse.
    pub fn result(&self) -> ProbeResult {
        let (kind, message) = if self.status == Status::Late {
            ("late", "no ping since it was due")
        } else {
            ("missed", "no ping within the grace period")
        };
        ProbeResult {
            due_ms: self.at_ms,
            started_us: self.at_ms * 1_000,
            status: self.status,
            error_kind: Some(kind.to_owned()),
            message: Some(message.to_owned()),
            ..ProbeResult::new(self.check_id)
        }
    }
}

/// The expected pings of every heartbeat check.
pub struct Deadlines {
    wheel: TimerWheel<u64>,
    heartbeats: FxHashMap<u64, Heartbeat>,
}

impl Deadlines {
    pub fn new(now_ms: u64) -> Self {
        Deadlines {
            wheel: TimerWheel::new(now_ms),
            heartbeats: FxHashMap::default(),
        }
    }

    /// The check's next ping is due at `due_ms`: LATE from then, DOWN after `grace_ms`
    /// more. Replaces whatever was expected before (a ping came).
    pub fn expect(&mut self, check_id: u64, due_ms: u64, grace_ms: u64) {
        self.forget(check_id);
        let key = self.wheel.insert(due_ms, check_id);
        self.heartbeats.insert(
            check_id,
            Heartbeat {
                due_ms,
                grace_ms,
                phase: Phase::Waiting,
                key,
            },
        );
    }

    /// Stop expecting the check (it was removed).
    pub fn forget(&mut self, check_id: u64) {
        if let Some(hb) = self.heartbeats.remove(&check_id) {
            self.wheel.cancel(hb.key);
        }
    }

    /// When the check's next ping is due, while one is expected (also when LATE).
    pub fn due(&self, check_id: u64) -> Option<u64> {
        self.heartbeats.get(&check_id).map(|hb| hb.due_ms)
    }

    /// Checks with a ping expected.
    pub fn len(&self) -> usize {
        self.heartbeats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heartbeats.is_empty()
    }

    /// When `advance` has something to do next, if ever.
    pub fn next_expiration(&self) -> Option<u64> {
        self.wheel.next_expiration()
    }

    /// Append the lapses up to `now_ms` in deadline order. A check that turns LATE here
    /// waits for the end of its grace period, reported by a later call even when that
    /// has passed already; a check that turns DOWN is no longer expected.
    pub fn advance(&mut self, now_ms: u64, out: &mut Vec<Lapse>) {
        let mut fired = Vec::new();
        self.wheel.advance(now_ms, &mut fired);
        for (at_ms, check_id) in fired {
            let Some(hb) = self.heartbeats.get_mut(&check_id) else {
                continue;
            };
            let status = if hb.phase == Phase::Waiting {
                hb.phase = Phase::Late;
                hb.key = self.wheel.insert(hb.due_ms + hb.grace_ms, check_id);
                Status::Late
            } else {
                self.heartbeats.remove(&check_id);
                Status::Down
            };
            out.push(Lapse {
                check_id,
                at_ms,
                status,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const START: u64 = 1_700_000_000_000;

    fn advance(d: &mut Deadlines, now_ms: u64) -> Vec<Lapse> {
        let mut out = Vec::new();
        d.advance(now_ms, &mut out);
        out
    }

    fn lapse(check_id: u64, at_ms: u64, status: Status) -> Lapse {
        Lapse {
            check_id,
            at_ms,
            status,
        }
    }

    #[test]
    fn late_at_the_due_time_and_down_after_the_grace() {
        let mut d = Deadlines::new(START);
        d.expect(1, START + 100, 50);
        assert_eq!(d.next_expiration().map(|t| t <= START + 100), Some(true));
        assert!(advance(&mut d, START + 99).is_empty(), "never late early");
        assert_eq!(
            advance(&mut d, START + 100),
            vec![lapse(1, START + 100, Status::Late)]
        );
        assert_eq!(d.due(1), Some(START + 100), "still expected while late");
        assert!(advance(&mut d, START + 149).is_empty());
        assert_eq!(
            advance(&mut d, START + 150),
            vec![lapse(1, START + 150, Status::Down)]
        );
        assert_eq!(d.due(1), None);
        assert!(d.is_empty());
        assert_eq!(d.next_expiration(), None);
        assert!(advance(&mut d, START + 1_000_000).is_empty(), "DOWN once");
    }

    #[test]
    fn a_ping_before_the_due_time_moves_the_deadline() {
        let mut d = Deadlines::new(START);
        d.expect(1, START + 100, 50);
        d.expect(1, START + 500, 50);
        assert_eq!(d.len(), 1);
        assert!(advance(&mut d, START + 499).is_empty());
        assert_eq!(
            advance(&mut d, START + 500),
            vec![lapse(1, START + 500, Status::Late)]
        );
    }

    #[test]
    fn a_ping_while_late_cancels_the_down() {
        let mut d = Deadlines::new(START);
        d.expect(1, START + 100, 50);
        advance(&mut d, START + 120);
        d.expect(1, START + 1_000, 50);
        assert!(advance(&mut d, START + 999).is_empty());
        assert_eq!(d.due(1), Some(START + 1_000));
    }

    #[test]
    fn a_forgotten_check_never_lapses() {
        let mut d = Deadlines::new(START);
        d.expect(1, START + 100, 50);
        d.expect(2, START + 100, 50);
        d.forget(1);
        d.forget(3);
        assert_eq!(
            advance(&mut d, START + 200),
            vec![lapse(2, START + 100, Status::Late)]
        );
        assert_eq!(
            advance(&mut d, START + 200),
            vec![lapse(2, START + 150, Status::Down)]
        );
        assert_eq!(d.due(1), None);
    }

    #[test]
    fn a_jump_past_both_deadlines_reports_late_then_down_on_the_next_call() {
        let mut d = Deadlines::new(START);
        d.expect(7, START + 10, 0);
        assert_eq!(
            advance(&mut d, START + 5_000),
            vec![lapse(7, START + 10, Status::Late)]
        );
        assert!(d.next_expiration().is_some_and(|t| t <= START + 5_000));
        assert_eq!(
            advance(&mut d, START + 5_000),
            vec![lapse(7, START + 10, Status::Down)]
        );
    }

    #[test]
    fn lapses_read_as_synthetic_central_results() {
        let late = lapse(3, START, Status::Late).result();
        assert_eq!((late.check_id, late.due_ms), (3, START));
        assert_eq!(late.started_us, START * 1_000);
        assert_eq!(late.status, Status::Late);
        assert_eq!(late.error_kind.as_deref(), Some("late"));
        assert_eq!(late.message.as_deref(), Some("no ping since it was due"));
        assert_eq!((late.run_id, late.source), (0, crate::result::CENTRAL));
        let down = lapse(3, START + 9, Status::Down).result();
        assert_eq!(down.status, Status::Down);
        assert_eq!(down.error_kind.as_deref(), Some("missed"));
        assert_eq!(
            down.message.as_deref(),
            Some("no ping within the grace period")
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A ping: the check (of 8) is next due `delay` from now (or before, when
        /// `past`), with `grace` more before it is DOWN.
        Expect {
            id: u64,
            delay: u64,
            past: bool,
            grace: u64,
        },
        Forget(u64),
        Advance(u64),
    }

    fn span() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => 0u64..70,
            2 => 0u64..5_000,
            1 => 0u64..400_000,
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..8, span(), any::<bool>(), span())
                .prop_map(|(id, delay, past, grace)| Op::Expect { id, delay, past, grace }),
            1 => (0u64..8).prop_map(Op::Forget),
            3 => span().prop_map(Op::Advance),
        ]
    }

    /// The reference: every expected check with its due time, grace and whether it is
    /// late, scanned in full on each advance.
    #[derive(Default)]
    struct Reference {
        expected: BTreeMap<u64, (u64, u64, bool)>,
    }

    impl Reference {
        fn advance(&mut self, now: u64) -> Vec<Lapse> {
            let mut out = Vec::new();
            self.expected.retain(|&id, (due, grace, late)| {
                let deadline = if *late { *due + *grace } else { *due };
                if deadline > now {
                    return true;
                }
                let status = if *late { Status::Down } else { Status::Late };
                out.push(lapse(id, deadline, status));
                *late = true;
                status == Status::Late
            });
            out
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the pings, removals and clock steps, the wheel-backed deadlines
        /// report exactly the lapses of a full scan: none early, none twice, in order.
        #[test]
        fn behaves_like_a_full_scan(
            start in 0u64..(1 << 45),
            ops in prop::collection::vec(op(), 1..300),
        ) {
            let mut deadlines = Deadlines::new(start);
            let mut reference = Reference::default();
            let mut now = start;
            let mut out = Vec::new();
            for op in ops {
                match op {
                    Op::Expect { id, delay, past, grace } => {
                        let due = if past { now.saturating_sub(delay) } else { now + delay };
                        deadlines.expect(id, due, grace);
                        reference.expected.insert(id, (due, grace, false));
                    }
                    Op::Forget(id) => {
                        deadlines.forget(id);
                        reference.expected.remove(&id);
                    }
                    Op::Advance(step) => {
                        now += step;
                        out.clear();
                        deadlines.advance(now, &mut out);
                        prop_assert!(out.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
                        prop_assert!(out.iter().all(|l| l.at_ms <= now));
                        let mut got = out.clone();
                        got.sort_unstable_by_key(|l| (l.check_id, l.at_ms));
                        let want = reference.advance(now);
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(deadlines.len(), reference.expected.len());
                for id in 0..8 {
                    let want = reference.expected.get(&id).map(|&(due, _, _)| due);
                    prop_assert_eq!(deadlines.due(id), want);
                }
                if let Some(at) = deadlines.next_expiration() {
                    let earliest = reference
                        .expected
                        .values()
                        .map(|&(due, grace, late)| if late { due + grace } else { due })
                        .min();
                    prop_assert!(earliest.is_some_and(|e| at <= e.max(now)));
                }
            }
        }
    }
}
