//! Check scheduling on top of the timing wheel: stable phases, drift-free intervals,
//! pause/resume/remove, and catching up without bursts after a stall.

use rustc_hash::FxHashMap;

use crate::wheel::{TimerKey, TimerWheel};

pub const MIN_INTERVAL_MS: u64 = 1_000;
pub const MAX_INTERVAL_MS: u64 = 86_400_000;
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// How a due check is executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ProbeKind {
    /// Handed to the Python side as due work (probe plugins).
    Python = 0,
    /// Completed inside the core at dispatch with an UP result; exists so the scheduler
    /// and result path can be measured without any probe cost.
    Noop = 1,
    /// Native probes, run on the executor's tokio threads.
    Http = 2,
    Tcp = 3,
    Udp = 4,
    Dns = 5,
    Icmp = 6,
    Tls = 7,
    /// Passive: fed by pings, never probed; its deadlines live in the engine.
    Heartbeat = 8,
}

impl ProbeKind {
    pub fn is_native_probe(self) -> bool {
        !matches!(
            self,
            ProbeKind::Python | ProbeKind::Noop | ProbeKind::Heartbeat
        )
    }

    /// Whether the scheduler runs it every interval.
    pub fn is_periodic(self) -> bool {
        self != ProbeKind::Heartbeat
    }
}

impl TryFrom<u8> for ProbeKind {
    type Error = ScheduleError;
    fn try_from(v: u8) -> Result<Self, ScheduleError> {
        match v {
            0 => Ok(ProbeKind::Python),
            1 => Ok(ProbeKind::Noop),
            2 => Ok(ProbeKind::Http),
            3 => Ok(ProbeKind::Tcp),
            4 => Ok(ProbeKind::Udp),
            5 => Ok(ProbeKind::Dns),
            6 => Ok(ProbeKind::Icmp),
            7 => Ok(ProbeKind::Tls),
            8 => Ok(ProbeKind::Heartbeat),
            other => Err(ScheduleError::UnknownKind(other)),
        }
    }
}

/// What the scheduler needs to know about a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub id: u64,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub kind: ProbeKind,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    IntervalOutOfRange { id: u64, interval_ms: u64 },
    TimeoutOutOfRange { id: u64, timeout_ms: u64 },
    UnknownKind(u8),
}

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScheduleError::IntervalOutOfRange { id, interval_ms } => write!(
                f,
                "check {id}: interval {interval_ms} ms is outside {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS} ms"
            ),
            ScheduleError::TimeoutOutOfRange { id, timeout_ms } => write!(
                f,
                "check {id}: timeout {timeout_ms} ms is outside 1..={MAX_TIMEOUT_MS} ms"
            ),
            ScheduleError::UnknownKind(k) => write!(f, "unknown probe kind {k}"),
        }
    }
}

impl std::error::Error for ScheduleError {}

impl ScheduleError {
    /// What is wrong, without the check and the field (which callers carry apart).
    pub fn reason(&self) -> String {
        match self {
            ScheduleError::IntervalOutOfRange { interval_ms, .. } => {
                format!("{interval_ms} ms is outside {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS} ms")
            }
            ScheduleError::TimeoutOutOfRange { timeout_ms, .. } => {
                format!("{timeout_ms} ms is outside 1..={MAX_TIMEOUT_MS} ms")
            }
            ScheduleError::UnknownKind(k) => format!("unknown probe kind {k}"),
        }
    }
}

impl CheckSpec {
    pub fn validate(&self) -> Result<(), ScheduleError> {
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.interval_ms) {
            return Err(ScheduleError::IntervalOutOfRange {
                id: self.id,
                interval_ms: self.interval_ms,
            });
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(ScheduleError::TimeoutOutOfRange {
                id: self.id,
                timeout_ms: self.timeout_ms,
            });
        }
        Ok(())
    }
}

/// A run that has come due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    pub check_id: u64,
    pub due_ms: u64,
    pub timeout_ms: u64,
    pub kind: ProbeKind,
}

/// Offset of a check's runs inside its interval, from a multiplicative (Fibonacci) hash
/// of its id: stable across restarts, uniform for arbitrary ids, and for consecutive
/// ids a low-discrepancy sequence, so a fleet of same-interval checks is spread almost
/// perfectly evenly.
pub fn phase_ms(id: u64, interval_ms: u64) -> u64 {
    let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((u128::from(h) * u128::from(interval_ms)) >> 64) as u64
}

/// First time `>= now` that lies on the check's phase grid (`phase + k * interval`
/// from the Unix epoch).
pub fn next_on_grid(now_ms: u64, interval_ms: u64, phase: u64) -> u64 {
    let base = now_ms - now_ms % interval_ms + phase;
    if base < now_ms {
        base + interval_ms
    } else {
        base
    }
}

/// Next run of a check placed on its grid from `now_ms`.
fn first_due(spec: &CheckSpec, now_ms: u64) -> u64 {
    next_on_grid(
        now_ms,
        spec.interval_ms,
        phase_ms(spec.id, spec.interval_ms),
    )
}

struct Entry {
    spec: CheckSpec,
    key: Option<TimerKey>,
}

/// Counters a benchmark or `/metrics` can read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScheduleStats {
    pub dispatched: u64,
    /// Runs skipped because the scheduler fell more than an interval behind.
    pub skipped: u64,
}

pub struct Scheduler {
    wheel: TimerWheel<u64>,
    checks: FxHashMap<u64, Entry>,
    fired: Vec<(u64, u64)>,
    stats: ScheduleStats,
}

impl Scheduler {
    pub fn new(now_ms: u64) -> Self {
        Scheduler {
            wheel: TimerWheel::new(now_ms),
            checks: FxHashMap::default(),
            fired: Vec::new(),
            stats: ScheduleStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.checks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    pub fn stats(&self) -> ScheduleStats {
        self.stats
    }

    pub fn reserve(&mut self, additional: usize) {
        self.checks.reserve(additional);
        self.wheel.reserve(additional);
    }

    pub fn get(&self, id: u64) -> Option<CheckSpec> {
        self.checks.get(&id).map(|e| e.spec)
    }

    /// Next due time of a check, `None` when paused or unknown.
    pub fn next_due(&self, id: u64) -> Option<u64> {
        self.checks
            .get(&id)
            .and_then(|e| e.key)
            .and_then(|k| self.wheel.deadline(k))
    }

    /// Add a check or change one. An unchanged interval keeps the pending run; a new
    /// interval moves the check onto its new phase grid.
    pub fn upsert(&mut self, spec: CheckSpec, now_ms: u64) -> Result<(), ScheduleError> {
        spec.validate()?;
        let now_ms = now_ms.max(self.wheel.elapsed());
        if let Some(entry) = self.checks.get_mut(&spec.id) {
            let regrid = entry.spec.interval_ms != spec.interval_ms;
            entry.spec = spec;
            match (entry.key, spec.active && spec.kind.is_periodic()) {
                (Some(key), true) if regrid => {
                    let due = first_due(&spec, now_ms);
                    self.wheel.reschedule(key, due);
                }
                (Some(key), false) => {
                    self.wheel.cancel(key);
                    entry.key = None;
                }
                (None, true) => {
                    let due = first_due(&spec, now_ms);
                    entry.key = Some(self.wheel.insert(due, spec.id));
                }
                _ => {}
            }
        } else {
            let key = (spec.active && spec.kind.is_periodic()).then(|| {
                let due = first_due(&spec, now_ms);
                self.wheel.insert(due, spec.id)
            });
            self.checks.insert(spec.id, Entry { spec, key });
        }
        Ok(())
    }

    /// Forget a check; true if it was known.
    pub fn remove(&mut self, id: u64) -> bool {
        match self.checks.remove(&id) {
            Some(Entry { key: Some(key), .. }) => {
                self.wheel.cancel(key);
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Stop scheduling a check without forgetting it; true if it was known.
    pub fn pause(&mut self, id: u64) -> bool {
        let Some(entry) = self.checks.get_mut(&id) else {
            return false;
        };
        entry.spec.active = false;
        if let Some(key) = entry.key.take() {
            self.wheel.cancel(key);
        }
        true
    }

    /// Resume a paused check at its next point on the phase grid.
    pub fn resume(&mut self, id: u64, now_ms: u64) -> bool {
        let Some(mut spec) = self.get(id) else {
            return false;
        };
        spec.active = true;
        self.upsert(spec, now_ms).is_ok()
    }

    /// Earliest time at which `expire` may return work.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.wheel.next_expiration()
    }

    /// Collect every run due at or before `now_ms`, in due order, and schedule each
    /// check's next run at `due + interval` (so probe duration never causes drift). A
    /// check more than an interval behind skips to its next grid point instead of
    /// firing a burst.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<Due>) {
        self.fired.clear();
        self.wheel.advance(now_ms, &mut self.fired);
        for &(due_ms, id) in &self.fired {
            let Some(entry) = self.checks.get_mut(&id) else {
                continue;
            };
            let spec = entry.spec;
            let mut next = due_ms + spec.interval_ms;
            if next <= now_ms {
                let behind = (now_ms - next) / spec.interval_ms + 1;
                self.stats.skipped += behind;
                next += behind * spec.interval_ms;
            }
            entry.key = Some(self.wheel.insert(next, id));
            self.stats.dispatched += 1;
            out.push(Due {
                check_id: id,
                due_ms,
                timeout_ms: spec.timeout_ms,
                kind: spec.kind,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(id: u64, interval_ms: u64) -> CheckSpec {
        CheckSpec {
            id,
            interval_ms,
            timeout_ms: 1_000,
            kind: ProbeKind::Python,
            active: true,
        }
    }

    #[test]
    fn a_refusal_names_its_reason_apart_from_the_check() {
        let err = spec(1500, 10).validate().unwrap_err();
        assert_eq!(err.reason(), "10 ms is outside 1000..=86400000 ms");
        assert_eq!(
            err.to_string(),
            "check 1500: interval 10 ms is outside 1000..=86400000 ms"
        );
        let mut slow = spec(7, 1_000);
        slow.timeout_ms = 0;
        assert_eq!(
            slow.validate().unwrap_err().reason(),
            "0 ms is outside 1..=3600000 ms"
        );
    }

    #[test]
    fn same_interval_checks_are_spread_evenly_over_the_interval() {
        let interval = 60_000;
        let n = 100_000u64;
        let mut per_second = vec![0u32; 60];
        for id in 1..=n {
            per_second[(phase_ms(id, interval) / 1_000) as usize] += 1;
        }
        let mean = n as f64 / 60.0;
        let max = f64::from(*per_second.iter().max().unwrap());
        assert!(max <= mean * 1.01, "busiest second {max} vs mean {mean}");
    }

    #[test]
    fn phases_survive_a_restart() {
        let interval = 30_000;
        let mut a = Scheduler::new(1_000_000);
        let mut b = Scheduler::new(5_555_555);
        a.upsert(spec(42, interval), 1_000_000).unwrap();
        b.upsert(spec(42, interval), 5_555_555).unwrap();
        let (da, db) = (a.next_due(42).unwrap(), b.next_due(42).unwrap());
        assert_eq!(da % interval, db % interval);
        assert_eq!(da % interval, phase_ms(42, interval));
    }

    #[test]
    fn next_run_is_due_plus_interval_however_late_the_dispatch() {
        let mut s = Scheduler::new(0);
        s.upsert(spec(7, 10_000), 0).unwrap();
        let first = s.next_due(7).unwrap();
        let mut out = Vec::new();
        // Dispatch 900 ms late: the next run still lands on the grid.
        s.expire(first + 900, &mut out);
        assert_eq!(out[0].due_ms, first);
        assert_eq!(s.next_due(7), Some(first + 10_000));
    }

    #[test]
    fn a_stalled_scheduler_skips_missed_runs_instead_of_bursting() {
        let mut s = Scheduler::new(0);
        s.upsert(spec(7, 1_000), 0).unwrap();
        let first = s.next_due(7).unwrap();
        let mut out = Vec::new();
        s.expire(first + 5_500, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(s.stats().skipped, 5);
        assert_eq!(s.next_due(7), Some(first + 6_000));
    }

    #[test]
    fn pause_resume_remove_and_interval_change() {
        let mut s = Scheduler::new(0);
        s.upsert(spec(1, 5_000), 0).unwrap();
        assert!(s.pause(1));
        assert_eq!(s.next_due(1), None);
        let mut out = Vec::new();
        s.expire(100_000, &mut out);
        assert!(out.is_empty());
        assert!(s.resume(1, 100_000));
        let due = s.next_due(1).unwrap();
        assert!(due >= 100_000 && due % 5_000 == phase_ms(1, 5_000));
        s.upsert(spec(1, 7_000), 100_000).unwrap();
        assert_eq!(s.next_due(1).unwrap() % 7_000, phase_ms(1, 7_000));
        assert!(s.remove(1));
        assert!(!s.remove(1));
        s.expire(10_000_000, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn intervals_outside_one_second_to_one_day_are_refused() {
        let mut s = Scheduler::new(0);
        assert!(s.upsert(spec(1, 999), 0).is_err());
        assert!(s.upsert(spec(1, 86_400_001), 0).is_err());
        assert!(s.is_empty());
    }

    proptest! {
        /// Simulated time: every check fires exactly once per grid point, never early,
        /// on its own phase, whatever the step pattern of the clock.
        #[test]
        fn every_grid_point_fires_exactly_once(
            ids in prop::collection::hash_set(0u64..1_000_000, 1..40),
            interval_s in 1u64..120,
            steps in prop::collection::vec(1u64..=1_000, 1..200),
        ) {
            let interval = interval_s * 1_000;
            let start = 1_700_000_000_000u64;
            let mut s = Scheduler::new(start);
            for &id in &ids {
                s.upsert(spec(id, interval), start).unwrap();
            }
            let mut now = start;
            let mut out = Vec::new();
            for step in steps {
                now += step;
                s.expire(now, &mut out);
            }
            prop_assert!(out.windows(2).all(|w| w[0].due_ms <= w[1].due_ms));
            for &id in &ids {
                let dues: Vec<u64> = out.iter().filter(|d| d.check_id == id).map(|d| d.due_ms).collect();
                let phase = phase_ms(id, interval);
                let expected: Vec<u64> = (0..1_000_000u64)
                    .map(|k| next_on_grid(start, interval, phase) + k * interval)
                    .take_while(|&t| t <= now)
                    .collect();
                prop_assert_eq!(dues, expected);
            }
        }
    }
}
