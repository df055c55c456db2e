//! Verdicts: per-source state machines folded into one status per check.
//!
//! Each (check, source) pair turns its stream of results into a source status: DOWN
//! only after `alert_after_failures` consecutive failures (or N failures among the last
//! M runs in window mode), UP again after a success, DEGRADED when the probe says so.
//! A source silent for `stale_after` intervals is stale (UNKNOWN) and left out. The
//! check's verdict comes from the fresh sources: a critical source DOWN makes it DOWN at
//! once; all DOWN is DOWN; some DOWN or any DEGRADED is DEGRADED; all UP is UP; none
//! fresh is UNKNOWN; an inactive check is PAUSED. Every change of verdict is a
//! transition carrying the per-source statuses.

use rustc_hash::FxHashMap;

pub use crate::result::{ProbeResult, SourceId, Status, Transition, CENTRAL};

/// When a source's failures make it DOWN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureRule {
    /// DOWN after this many consecutive failures (at least 1).
    Consecutive(u16),
    /// DOWN when at least `failures` of the last `runs` (at most 64) failed.
    Window { failures: u16, runs: u16 },
}

impl FailureRule {
    pub fn validate(self) -> Result<Self, String> {
        match self {
            FailureRule::Consecutive(0) => Err("alert_after_failures must be at least 1".into()),
            FailureRule::Window { failures, runs }
                if failures == 0 || runs == 0 || runs > 64 || failures > runs =>
            {
                Err("the failure window needs 1 <= failures <= runs <= 64".into())
            }
            rule => Ok(rule),
        }
    }
}

/// How a check's results become its verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub interval_ms: u64,
    pub rule: FailureRule,
    /// Sources whose failure makes the check DOWN at once.
    pub critical: Vec<SourceId>,
    /// A source silent for this many intervals is stale; 0: never (heartbeats).
    pub stale_after: u32,
    /// Probed elsewhere (agents, geo locations): the core keeps the verdict but never
    /// runs the probe itself.
    pub remote: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            interval_ms: 60_000,
            rule: FailureRule::Consecutive(1),
            critical: Vec::new(),
            stale_after: 3,
            remote: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SourceState {
    id: SourceId,
    status: Status,
    consecutive: u16,
    /// Last runs, newest in bit 0; a set bit is a failure.
    history: u64,
    runs: u8,
    last_us: u64,
    stale: bool,
}

impl SourceState {
    fn new(id: SourceId) -> Self {
        SourceState {
            id,
            status: Status::Unknown,
            consecutive: 0,
            history: 0,
            runs: 0,
            last_us: 0,
            stale: false,
        }
    }

    fn fold(&mut self, status: Status, rule: FailureRule, at_us: u64) {
        self.last_us = self.last_us.max(at_us);
        self.stale = false;
        let failed = status == Status::Down;
        self.history = (self.history << 1) | u64::from(failed);
        self.runs = self.runs.saturating_add(1).min(64);
        if !failed {
            self.consecutive = 0;
            // Probes report UP/DOWN/DEGRADED, heartbeat deadlines LATE; UNKNOWN and
            // PAUSED are never results and keep the state.
            if matches!(status, Status::Up | Status::Degraded | Status::Late) {
                self.status = status;
            }
            return;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let down = match rule {
            FailureRule::Consecutive(n) => self.consecutive >= n,
            FailureRule::Window { failures, runs } => {
                let mask = if runs >= 64 {
                    u64::MAX
                } else {
                    (1u64 << runs) - 1
                };
                (self.history & mask).count_ones() >= u32::from(failures)
            }
        };
        if down {
            self.status = Status::Down;
        }
    }

    /// Status as the verdict sees it: stale sources are UNKNOWN.
    fn effective(&self) -> Status {
        if self.stale {
            Status::Unknown
        } else {
            self.status
        }
    }
}

/// The verdict rule, on (status, critical) of the fresh sources.
pub fn verdict<I: IntoIterator<Item = (Status, bool)>>(sources: I) -> Status {
    let (mut fresh, mut down, mut degraded, mut late, mut critical_down) =
        (0usize, 0usize, 0usize, 0usize, false);
    for (status, critical) in sources {
        match status {
            Status::Unknown | Status::Paused => continue,
            Status::Down => {
                down += 1;
                critical_down |= critical;
            }
            Status::Degraded => degraded += 1,
            Status::Late => late += 1,
            Status::Up => {}
        }
        fresh += 1;
    }
    if fresh == 0 {
        Status::Unknown
    } else if critical_down || down == fresh {
        Status::Down
    } else if late == fresh {
        Status::Late
    } else if down > 0 || degraded > 0 || late > 0 {
        Status::Degraded
    } else {
        Status::Up
    }
}

#[derive(Clone, Debug)]
struct CheckState {
    policy: Policy,
    active: bool,
    maintenance: bool,
    verdict: Status,
    sources: Vec<SourceState>,
    /// When the verdict last changed: transitions never go back in time, even when
    /// sources report out of order (agents' batches arrive in any order).
    changed_us: u64,
}

impl CheckState {
    fn compute(&self) -> Status {
        if !self.active {
            return Status::Paused;
        }
        if self.sources.is_empty() {
            // Nothing reported since (re)start: keep a seeded verdict rather than
            // inventing a change; a resumed check with no data is UNKNOWN.
            return match self.verdict {
                Status::Paused => Status::Unknown,
                seeded => seeded,
            };
        }
        verdict(
            self.sources
                .iter()
                .map(|s| (s.effective(), self.policy.critical.contains(&s.id))),
        )
    }

    fn source_statuses(&self) -> Vec<(SourceId, Status)> {
        self.sources.iter().map(|s| (s.id, s.effective())).collect()
    }
}

/// Every check's sources and verdict.
#[derive(Default)]
pub struct Verdicts {
    // PERF: check ids are not attacker-chosen keys; Fx hashing is several times
    // cheaper than SipHash on the per-result path.
    checks: FxHashMap<u64, CheckState>,
}

impl Verdicts {
    fn entry(&mut self, check_id: u64) -> &mut CheckState {
        self.checks.entry(check_id).or_insert_with(|| CheckState {
            policy: Policy::default(),
            active: true,
            maintenance: false,
            verdict: Status::Unknown,
            sources: Vec::new(),
            changed_us: 0,
        })
    }

    /// Current verdict of a check (UNKNOWN when never seen).
    pub fn status(&self, check_id: u64) -> Status {
        self.checks
            .get(&check_id)
            .map_or(Status::Unknown, |c| c.verdict)
    }

    /// Per-source statuses of a check (stale sources as UNKNOWN).
    pub fn sources(&self, check_id: u64) -> Vec<(SourceId, Status)> {
        self.checks
            .get(&check_id)
            .map(CheckState::source_statuses)
            .unwrap_or_default()
    }

    /// Set a check's policy; the verdict is recomputed (a transition if it changed,
    /// e.g. when a source becomes critical).
    pub fn configure(&mut self, check_id: u64, policy: Policy, at_us: u64) -> Option<Transition> {
        let state = self.entry(check_id);
        state.policy = policy;
        Self::settle(check_id, state, at_us, "policy changed")
    }

    /// Restore a check's verdict after a restart, without a transition.
    pub fn seed(&mut self, check_id: u64, status: Status) {
        self.entry(check_id).verdict = status;
    }

    pub fn forget(&mut self, check_id: u64) {
        self.checks.remove(&check_id);
    }

    /// Pause (PAUSED) or resume a check.
    pub fn set_active(&mut self, check_id: u64, active: bool, at_us: u64) -> Option<Transition> {
        let state = self.entry(check_id);
        state.active = active;
        Self::settle(
            check_id,
            state,
            at_us,
            if active { "resumed" } else { "paused" },
        )
    }

    /// Enter or leave a maintenance window: verdicts go on, transitions are flagged.
    pub fn set_maintenance(&mut self, check_id: u64, on: bool) {
        self.entry(check_id).maintenance = on;
    }

    pub fn in_maintenance(&self, check_id: u64) -> bool {
        self.checks.get(&check_id).is_some_and(|c| c.maintenance)
    }

    /// Fold one result in; a transition when the verdict changed.
    pub fn fold(&mut self, result: &ProbeResult) -> Option<Transition> {
        let state = self.entry(result.check_id);
        let rule = state.policy.rule;
        let at_us = result.started_us + result.latency_us;
        let index = if let Some(i) = state.sources.iter().position(|s| s.id == result.source) {
            i
        } else {
            state.sources.push(SourceState::new(result.source));
            state.sources.len() - 1
        };
        let source = &mut state.sources[index];
        source.fold(result.status, rule, at_us);
        let reason = result
            .error_kind
            .as_deref()
            .or(result.message.as_deref())
            .unwrap_or("recovered");
        Self::settle(result.check_id, state, at_us, reason)
    }

    /// Mark one source stale in every check at once (an agent known to be gone), until
    /// it reports again; transitions for the checks whose verdict changed.
    pub fn expire_source(&mut self, source: SourceId, now_us: u64, out: &mut Vec<Transition>) {
        for (&check_id, state) in &mut self.checks {
            let mut changed = false;
            for s in &mut state.sources {
                if s.id == source && !s.stale {
                    s.stale = true;
                    changed = true;
                }
            }
            if changed {
                out.extend(Self::settle(check_id, state, now_us, "source gone"));
            }
        }
    }

    /// Mark sources silent for `stale_after` intervals as stale; transitions for the
    /// checks whose verdict changed.
    pub fn expire_stale(&mut self, now_us: u64, out: &mut Vec<Transition>) {
        for (&check_id, state) in &mut self.checks {
            if state.policy.stale_after == 0 {
                continue;
            }
            let limit = state.policy.interval_ms * 1_000 * u64::from(state.policy.stale_after);
            let mut changed = false;
            for source in &mut state.sources {
                if !source.stale && source.last_us + limit < now_us {
                    source.stale = true;
                    changed = true;
                }
            }
            if changed {
                out.extend(Self::settle(check_id, state, now_us, "source stale"));
            }
        }
    }

    fn settle(
        check_id: u64,
        state: &mut CheckState,
        at_us: u64,
        reason: &str,
    ) -> Option<Transition> {
        let current = state.compute();
        if current == state.verdict {
            return None;
        }
        let previous = std::mem::replace(&mut state.verdict, current);
        let at_us = at_us.max(state.changed_us);
        state.changed_us = at_us;
        Some(Transition {
            check_id,
            previous,
            current,
            at_us,
            reason: Some(reason.to_owned()),
            sources: state.source_statuses(),
            in_maintenance: state.maintenance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn result(check_id: u64, source: SourceId, status: Status, at_us: u64) -> ProbeResult {
        ProbeResult {
            source,
            started_us: at_us,
            status,
            error_kind: (status == Status::Down).then(|| "timeout".to_owned()),
            ..ProbeResult::new(check_id)
        }
    }

    #[test]
    fn only_changes_are_transitions() {
        let mut v = Verdicts::default();
        let t = v.fold(&result(1, CENTRAL, Status::Up, 1)).unwrap();
        assert_eq!((t.previous, t.current), (Status::Unknown, Status::Up));
        assert!(v.fold(&result(1, CENTRAL, Status::Up, 2)).is_none());
        let t = v.fold(&result(1, CENTRAL, Status::Down, 3)).unwrap();
        assert_eq!(t.reason.as_deref(), Some("timeout"));
        assert_eq!(t.sources, vec![(CENTRAL, Status::Down)]);
        assert_eq!(v.status(1), Status::Down);
        assert_eq!(v.status(2), Status::Unknown);
    }

    #[test]
    fn down_only_after_the_threshold_and_up_after_one_success() {
        let mut v = Verdicts::default();
        let policy = Policy {
            rule: FailureRule::Consecutive(3),
            ..Policy::default()
        };
        v.configure(1, policy, 0);
        v.fold(&result(1, CENTRAL, Status::Up, 1));
        assert!(v.fold(&result(1, CENTRAL, Status::Down, 2)).is_none());
        assert!(v.fold(&result(1, CENTRAL, Status::Down, 3)).is_none());
        let t = v.fold(&result(1, CENTRAL, Status::Down, 4)).unwrap();
        assert_eq!(t.current, Status::Down);
        let t = v.fold(&result(1, CENTRAL, Status::Up, 5)).unwrap();
        assert_eq!(t.current, Status::Up);
    }

    #[test]
    fn window_mode_counts_failures_among_the_last_runs() {
        let mut v = Verdicts::default();
        let policy = Policy {
            rule: FailureRule::Window {
                failures: 2,
                runs: 4,
            },
            ..Policy::default()
        };
        v.configure(1, policy, 0);
        let seq = [
            Status::Down,
            Status::Up,
            Status::Up,
            Status::Up,
            Status::Down,
        ];
        for (i, s) in seq.iter().enumerate() {
            v.fold(&result(1, CENTRAL, *s, i as u64));
        }
        // The first failure fell out of the window of 4: one failure, not DOWN.
        assert_eq!(v.status(1), Status::Up);
        v.fold(&result(1, CENTRAL, Status::Down, 10));
        assert_eq!(v.status(1), Status::Down);
    }

    #[test]
    fn a_critical_source_sets_down_at_once_and_others_degrade() {
        let mut v = Verdicts::default();
        let policy = Policy {
            critical: vec![7],
            ..Policy::default()
        };
        v.configure(1, policy, 0);
        for source in [CENTRAL, 5, 7] {
            v.fold(&result(1, source, Status::Up, 1));
        }
        assert_eq!(v.status(1), Status::Up);
        let t = v.fold(&result(1, 5, Status::Down, 2)).unwrap();
        assert_eq!(t.current, Status::Degraded);
        let t = v.fold(&result(1, 7, Status::Down, 3)).unwrap();
        assert_eq!(t.current, Status::Down);
        assert_eq!(
            t.sources,
            vec![(CENTRAL, Status::Up), (5, Status::Down), (7, Status::Down)]
        );
    }

    #[test]
    fn transitions_never_go_back_in_time_when_sources_report_out_of_order() {
        let mut v = Verdicts::default();
        let first = v.fold(&result(1, 4, Status::Up, 2_000)).unwrap();
        // Another source's older result arrives later and changes the verdict.
        let second = v.fold(&result(1, 5, Status::Down, 1_000)).unwrap();
        assert_eq!(second.current, Status::Degraded);
        assert_eq!((first.at_us, second.at_us), (2_000, 2_000));
    }

    #[test]
    fn an_expired_source_is_unknown_until_it_reports_again() {
        let mut v = Verdicts::default();
        v.fold(&result(1, 4, Status::Up, 1));
        v.fold(&result(1, 5, Status::Down, 1));
        v.fold(&result(2, 5, Status::Down, 1));
        assert_eq!(v.status(1), Status::Degraded);
        let mut out = Vec::new();
        v.expire_source(5, 2, &mut out);
        assert_eq!(v.status(1), Status::Up);
        assert_eq!(v.status(2), Status::Unknown);
        assert_eq!(v.sources(1), vec![(4, Status::Up), (5, Status::Unknown)]);
        assert_eq!(out.len(), 2);
        v.fold(&result(2, 5, Status::Up, 3));
        assert_eq!(v.status(2), Status::Up);
    }

    #[test]
    fn silent_sources_go_stale_and_leave_the_verdict() {
        let mut v = Verdicts::default();
        let policy = Policy {
            interval_ms: 1_000,
            ..Policy::default()
        };
        v.configure(1, policy, 0);
        v.fold(&result(1, CENTRAL, Status::Up, 1_000_000));
        v.fold(&result(1, 9, Status::Down, 1_000_000));
        assert_eq!(v.status(1), Status::Degraded);
        // Central keeps reporting; source 9 falls silent for more than 3 intervals.
        v.fold(&result(1, CENTRAL, Status::Up, 4_500_000));
        let mut out = Vec::new();
        v.expire_stale(4_500_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].current, Status::Up);
        assert_eq!(
            v.sources(1),
            vec![(CENTRAL, Status::Up), (9, Status::Unknown)]
        );
        v.expire_stale(100_000_000, &mut out);
        assert_eq!(v.status(1), Status::Unknown);
    }

    #[test]
    fn paused_checks_and_maintenance_flags() {
        let mut v = Verdicts::default();
        v.fold(&result(1, CENTRAL, Status::Up, 1));
        let t = v.set_active(1, false, 2).unwrap();
        assert_eq!(t.current, Status::Paused);
        assert!(v.fold(&result(1, CENTRAL, Status::Down, 3)).is_none());
        v.set_maintenance(1, true);
        let t = v.set_active(1, true, 4).unwrap();
        assert_eq!(t.current, Status::Down);
        assert!(t.in_maintenance);
    }

    #[test]
    fn a_seeded_verdict_survives_configuration_until_data_arrives() {
        let mut v = Verdicts::default();
        v.seed(1, Status::Down);
        assert!(v.configure(1, Policy::default(), 0).is_none());
        assert!(v.set_active(1, true, 0).is_none());
        assert!(v.fold(&result(1, CENTRAL, Status::Down, 1)).is_none());
        assert_eq!(
            v.fold(&result(1, CENTRAL, Status::Up, 2)).unwrap().previous,
            Status::Down
        );
    }

    #[test]
    fn the_verdict_rule() {
        use Status::{Degraded, Down, Unknown, Up};
        assert_eq!(verdict([]), Unknown);
        assert_eq!(verdict([(Unknown, true)]), Unknown);
        assert_eq!(verdict([(Up, false), (Up, true)]), Up);
        assert_eq!(verdict([(Up, false), (Down, false)]), Degraded);
        assert_eq!(verdict([(Up, false), (Degraded, false)]), Degraded);
        assert_eq!(verdict([(Down, false), (Down, false)]), Down);
        assert_eq!(verdict([(Up, false), (Down, true)]), Down);
        assert_eq!(verdict([(Down, false), (Unknown, false)]), Down);
    }

    /// The reference: replay every source's whole history from scratch.
    fn reference(
        history: &[(SourceId, Status)],
        rule: FailureRule,
        critical: &[SourceId],
    ) -> Status {
        let mut ids: Vec<SourceId> = history.iter().map(|&(s, _)| s).collect();
        ids.sort_unstable();
        ids.dedup();
        let statuses = ids.iter().map(|&id| {
            let runs: Vec<Status> = history.iter().filter(|h| h.0 == id).map(|h| h.1).collect();
            let mut status = Status::Unknown;
            for (i, &s) in runs.iter().enumerate() {
                if s != Status::Down {
                    status = s;
                    continue;
                }
                let down = match rule {
                    FailureRule::Consecutive(n) => {
                        runs[..=i]
                            .iter()
                            .rev()
                            .take_while(|&&r| r == Status::Down)
                            .count()
                            >= usize::from(n)
                    }
                    FailureRule::Window { failures, runs: m } => {
                        let from = (i + 1).saturating_sub(usize::from(m));
                        runs[from..=i]
                            .iter()
                            .filter(|&&r| r == Status::Down)
                            .count()
                            >= usize::from(failures)
                    }
                };
                if down {
                    status = Status::Down;
                }
            }
            (status, critical.contains(&id))
        });
        verdict(statuses.collect::<Vec<_>>())
    }

    fn rule() -> impl Strategy<Value = FailureRule> {
        prop_oneof![
            (1u16..5).prop_map(FailureRule::Consecutive),
            (1u16..6, 0u16..6).prop_map(|(f, extra)| FailureRule::Window {
                failures: f,
                runs: f + extra
            }),
        ]
    }

    fn status() -> impl Strategy<Value = Status> {
        prop_oneof![
            4 => Just(Status::Up),
            4 => Just(Status::Down),
            1 => Just(Status::Degraded),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_replaying_reference(
            rule in rule(),
            critical in prop::collection::vec(0u32..4, 0..2),
            stream in prop::collection::vec((0u32..4, status()), 1..120),
        ) {
            let mut v = Verdicts::default();
            v.configure(1, Policy { rule, critical: critical.clone(), ..Policy::default() }, 0);
            let mut seen = Vec::new();
            let mut last = Status::Unknown;
            for (i, &(source, s)) in stream.iter().enumerate() {
                seen.push((source, s));
                if let Some(t) = v.fold(&result(1, source, s, i as u64)) {
                    prop_assert_eq!(t.previous, last);
                    prop_assert_ne!(t.previous, t.current);
                    last = t.current;
                }
                prop_assert_eq!(v.status(1), reference(&seen, rule, &critical));
                prop_assert_eq!(v.status(1), last);
            }
        }
    }
}
