//! The native engine: a clock thread that owns the schedule and dispatches due runs
//! (native probes to the executor, the rest to Python), and an outbox that Python drains
//! in batches when the wake-up descriptor fires.
//!
//! Python never calls in per probe and the clock thread never calls into Python: both
//! sides meet only at the mutex-guarded state, in batches.

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::aggregate::{Policy, Verdicts};
use crate::clock::Clock;
use crate::deadlines::Deadlines;
use crate::executor::{Executor, ExecutorConfig, Finished};
use crate::probe::{config, ConfigError, ProbeSpec};
use crate::result::{ProbeResult, Status, Transition};
use crate::schedule::{CheckSpec, Due, ProbeKind, ScheduleError, ScheduleStats, Scheduler};
use crate::stats::{Bucket, Timeline};
use crate::timers::Timers;
use crate::wakeup::Wakeup;

/// Why a batch of checks was refused (nothing in it was applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    Schedule(ScheduleError),
    Config { check_id: u64, error: ConfigError },
    Startup(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Schedule(e) => e.fmt(f),
            EngineError::Config { check_id, error } => write!(f, "check {check_id}: {error}"),
            EngineError::Startup(e) => write!(f, "cannot start the engine: {e}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<ScheduleError> for EngineError {
    fn from(e: ScheduleError) -> Self {
        EngineError::Schedule(e)
    }
}

/// A probe to run once, outside the schedule.
#[derive(Clone, Debug)]
pub struct OneOff {
    pub run_id: u64,
    pub check_id: u64,
    pub kind: ProbeKind,
    pub config: String,
    pub timeout_ms: u64,
    /// Fold the result into the check's status like a scheduled run.
    pub record: bool,
}

/// A due run handed to Python (a probe plugin must execute it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    pub check_id: u64,
    pub due_ms: u64,
    pub dispatched_us: u64,
    pub timeout_ms: u64,
}

/// A generic timer that came due (`Engine::arm_timers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FiredTimer {
    pub key: u64,
    /// The time it was armed for (ms since the epoch).
    pub due_ms: u64,
    /// When the clock thread fired it (µs since the epoch).
    pub fired_us: u64,
}

/// Everything waiting for Python since the last drain.
#[derive(Default, Debug)]
pub struct Outbox {
    pub work: Vec<Work>,
    pub results: Vec<ProbeResult>,
    pub transitions: Vec<Transition>,
    /// Closed rollup buckets: (check id, bucket).
    pub rollups: Vec<(u64, Bucket)>,
    pub timers: Vec<FiredTimer>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.work.is_empty()
            && self.results.is_empty()
            && self.transitions.is_empty()
            && self.rollups.is_empty()
            && self.timers.is_empty()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub checks: usize,
    pub schedule: ScheduleStats,
}

struct State {
    scheduler: Scheduler,
    // PERF: Fx maps on the dispatch and result paths, like the scheduler and verdicts.
    probes: FxHashMap<u64, Arc<ProbeSpec>>,
    /// Heartbeat deadlines (LATE at due, DOWN at due + grace).
    deadlines: Deadlines,
    /// Generic keyed timers armed from Python (escalation delays and the like).
    timers: Timers,
    /// Each check's verdict over time, cut into rollup buckets.
    timelines: FxHashMap<u64, Timeline>,
    rollup_span_ms: u64,
    /// The next bucket edge, when every timeline is advanced and closed buckets go out.
    next_edge_ms: u64,
    verdicts: Verdicts,
    /// Checks probed elsewhere (agents, geo): scheduled for their verdict only.
    remote: FxHashSet<u64>,
    outbox: Outbox,
    /// The wake-up descriptor has been signalled and not drained since.
    signalled: bool,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    tick: Condvar,
    wakeup: Wakeup,
    clock: Clock,
    executor: Executor,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the scheduler down with it; the state is kept
        // consistent by every critical section.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn signal_if_needed(&self, state: &mut State) {
        if !state.signalled && !state.outbox.is_empty() {
            state.signalled = true;
            self.wakeup.signal();
        }
    }
}

pub struct Engine {
    shared: Arc<Shared>,
    clock_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Start the clock thread and the probe runtime; rollup buckets span
    /// `rollup_span_ms` (a minute in production).
    pub fn start(config: &ExecutorConfig, rollup_span_ms: u64) -> Result<Self, EngineError> {
        if rollup_span_ms == 0 {
            return Err(EngineError::Startup("rollup span must be positive".into()));
        }
        let clock = Clock::new();
        let now_ms = clock.now_us() / 1_000;
        let executor = Executor::new(config).map_err(|e| EngineError::Startup(e.to_string()))?;
        let wakeup = Wakeup::new().map_err(|e| EngineError::Startup(e.to_string()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                scheduler: Scheduler::new(clock.now_us() / 1_000),
                probes: FxHashMap::default(),
                deadlines: Deadlines::new(clock.now_us() / 1_000),
                timers: Timers::new(now_ms),
                timelines: FxHashMap::default(),
                rollup_span_ms,
                next_edge_ms: now_ms - now_ms % rollup_span_ms + rollup_span_ms,
                verdicts: Verdicts::default(),
                remote: FxHashSet::default(),
                outbox: Outbox::default(),
                signalled: false,
                stopping: false,
            }),
            tick: Condvar::new(),
            wakeup,
            clock,
            executor,
        });
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("tocsin-clock".into())
            .spawn(move || clock_loop(&thread_shared))
            .map_err(|e| EngineError::Startup(e.to_string()))?;
        Ok(Engine {
            shared,
            clock_thread: Mutex::new(Some(handle)),
        })
    }

    pub fn now_us(&self) -> u64 {
        self.shared.clock.now_us()
    }

    pub fn wakeup_fd(&self) -> i32 {
        self.shared.wakeup.fd()
    }

    /// Whether `upsert` would accept these checks, without changing anything: the
    /// same validation, so a caller can refuse a check before it stores it.
    pub fn validate(checks: &[(CheckSpec, &str)]) -> Result<(), EngineError> {
        for &(spec, settings) in checks {
            parse_check(spec, settings)?;
        }
        Ok(())
    }

    /// Add or change many checks at once, each with its probe settings (JSON, empty
    /// for kinds that take none). All are validated and parsed first: on error nothing
    /// changes.
    pub fn upsert(&self, checks: &[(CheckSpec, &str)]) -> Result<(), EngineError> {
        let mut parsed = Vec::with_capacity(checks.len());
        for &(spec, settings) in checks {
            let (probe, policy) = parse_check(spec, settings)?;
            parsed.push((spec, probe.map(Arc::new), policy));
        }
        let mut state = self.shared.lock();
        let now_us = self.shared.clock.now_us();
        state.scheduler.reserve(parsed.len());
        for (spec, probe, policy) in parsed {
            state.scheduler.upsert(spec, now_us / 1_000)?;
            match probe {
                Some(p) => state.probes.insert(spec.id, p),
                None => state.probes.remove(&spec.id),
            };
            if policy.remote {
                state.remote.insert(spec.id);
            } else {
                state.remote.remove(&spec.id);
            }
            let changes = [
                state.verdicts.configure(spec.id, policy, now_us),
                state.verdicts.set_active(spec.id, spec.active, now_us),
            ];
            for change in changes.into_iter().flatten() {
                record(&mut state, change);
            }
            let span = state.rollup_span_ms;
            let status = state.verdicts.status(spec.id);
            let since_ms = now_us / 1_000;
            state
                .timelines
                .entry(spec.id)
                .or_insert_with(|| Timeline::new(since_ms, span, status));
        }
        self.shared.signal_if_needed(&mut state);
        drop(state);
        self.shared.tick.notify_one();
        Ok(())
    }

    /// Run probes now, outside the schedule; each result comes back through `drain`
    /// with its `run_id`. All are parsed first: on error none runs.
    pub fn run_once(&self, runs: Vec<OneOff>) -> Result<(), EngineError> {
        let mut parsed = Vec::with_capacity(runs.len());
        for run in runs {
            if matches!(run.kind, ProbeKind::Python | ProbeKind::Heartbeat) {
                return Err(EngineError::Config {
                    check_id: run.check_id,
                    error: ConfigError::new(
                        "type",
                        "Python probes run on the Python side; heartbeats are not probed",
                    ),
                });
            }
            let probe =
                ProbeSpec::parse(run.kind, &run.config).map_err(|error| EngineError::Config {
                    check_id: run.check_id,
                    error,
                })?;
            parsed.push((run, probe));
        }
        for (run, probe) in parsed {
            let due = Due {
                check_id: run.check_id,
                due_ms: 0,
                timeout_ms: run.timeout_ms.max(1),
                kind: run.kind,
            };
            if let Some(probe) = probe {
                dispatch(&self.shared, due, Arc::new(probe), run.run_id, run.record);
            } else {
                let mut state = self.shared.lock();
                let result = noop_result(&due, self.shared.clock.now_us(), run.run_id);
                deliver(&mut state, result, run.record);
                self.shared.signal_if_needed(&mut state);
            }
        }
        Ok(())
    }

    /// Remove checks; returns how many were known.
    pub fn remove(&self, ids: &[u64]) -> usize {
        let mut state = self.shared.lock();
        let mut n = 0;
        for &id in ids {
            if state.scheduler.remove(id) {
                n += 1;
            }
            state.probes.remove(&id);
            state.deadlines.forget(id);
            state.timelines.remove(&id);
            state.remote.remove(&id);
            state.verdicts.forget(id);
        }
        n
    }

    pub fn pause(&self, ids: &[u64]) -> usize {
        self.set_active(ids, false)
    }

    pub fn resume(&self, ids: &[u64]) -> usize {
        self.set_active(ids, true)
    }

    fn set_active(&self, ids: &[u64], active: bool) -> usize {
        let mut state = self.shared.lock();
        let now_us = self.shared.clock.now_us();
        let mut n = 0;
        for &id in ids {
            let known = if active {
                state.scheduler.resume(id, now_us / 1_000)
            } else {
                state.scheduler.pause(id)
            };
            if known {
                n += 1;
                let change = state.verdicts.set_active(id, active, now_us);
                if let Some(change) = change {
                    record(&mut state, change);
                }
            }
        }
        self.shared.signal_if_needed(&mut state);
        drop(state);
        self.shared.tick.notify_one();
        n
    }

    /// A heartbeat check's next ping is due at `due_ms`: LATE from then, DOWN after
    /// `grace_ms` more, unless a ping comes first (then this is called again).
    pub fn expect(&self, check_id: u64, due_ms: u64, grace_ms: u64) {
        self.shared
            .lock()
            .deadlines
            .expect(check_id, due_ms, grace_ms);
        self.shared.tick.notify_one();
    }

    /// Arm generic timers: `(key, due_ms)` each, re-arming a key replaces its timer; a
    /// due time in the past fires on the next tick. Fired timers come back through
    /// `drain`.
    pub fn arm_timers(&self, items: &[(u64, u64)]) {
        if items.is_empty() {
            return;
        }
        let mut state = self.shared.lock();
        state.timers.reserve(items.len());
        for &(key, due_ms) in items {
            state.timers.arm(key, due_ms);
        }
        drop(state);
        // The clock thread recomputes its wake-up time; a spurious wake costs one pass.
        self.shared.tick.notify_one();
    }

    /// Cancel generic timers; returns how many were pending.
    pub fn cancel_timers(&self, keys: &[u64]) -> usize {
        let mut state = self.shared.lock();
        keys.iter().filter(|&&key| state.timers.cancel(key)).count()
    }

    /// Generic timers pending.
    pub fn timer_count(&self) -> usize {
        self.shared.lock().timers.len()
    }

    /// When a heartbeat check's next ping is due (ms), if one is expected.
    pub fn heartbeat_due(&self, check_id: u64) -> Option<u64> {
        self.shared.lock().deadlines.due(check_id)
    }

    /// Enter or leave maintenance: verdicts go on, their transitions are flagged.
    pub fn set_maintenance(&self, ids: &[u64], on: bool) {
        let mut state = self.shared.lock();
        let now_ms = self.shared.clock.now_us() / 1_000;
        let mut closed = Vec::new();
        for &id in ids {
            state.verdicts.set_maintenance(id, on);
            if let Some(timeline) = state.timelines.get_mut(&id) {
                timeline.set_maintenance(now_ms, on, &mut closed);
                state
                    .outbox
                    .rollups
                    .extend(closed.drain(..).map(|b| (id, b)));
            }
        }
        self.shared.signal_if_needed(&mut state);
    }

    /// Hand out every check's open rollup bucket as it stands, accounted up to now (at
    /// shutdown: a part-filled minute is not lost with the process).
    pub fn flush_rollups(&self) {
        let mut guard = self.shared.lock();
        let now_ms = self.shared.clock.now_us() / 1_000;
        let state = &mut *guard;
        let mut closed = Vec::new();
        for (&id, timeline) in &mut state.timelines {
            timeline.flush(now_ms, &mut closed);
            state
                .outbox
                .rollups
                .extend(closed.drain(..).map(|b| (id, b)));
        }
        self.shared.signal_if_needed(state);
    }

    /// Mark a source stale in every check at once (an agent gone offline or revoked):
    /// UNKNOWN, left out of the verdicts until it reports again.
    pub fn expire_source(&self, source: crate::result::SourceId) {
        let mut state = self.shared.lock();
        let now_us = self.shared.clock.now_us();
        let mut changes = Vec::new();
        state.verdicts.expire_source(source, now_us, &mut changes);
        for change in changes {
            record(&mut state, change);
        }
        self.shared.signal_if_needed(&mut state);
    }

    /// Per-source statuses of a check.
    pub fn sources(&self, id: u64) -> Vec<(crate::result::SourceId, Status)> {
        self.shared.lock().verdicts.sources(id)
    }

    /// Restore known statuses after a restart so the first result does not look like a
    /// change.
    pub fn seed(&self, statuses: &[(u64, Status)]) {
        let mut state = self.shared.lock();
        for &(id, status) in statuses {
            state.verdicts.seed(id, status);
        }
    }

    pub fn status(&self, id: u64) -> Status {
        self.shared.lock().verdicts.status(id)
    }

    pub fn next_due(&self, id: u64) -> Option<u64> {
        self.shared.lock().scheduler.next_due(id)
    }

    pub fn spec(&self, id: u64) -> Option<CheckSpec> {
        self.shared.lock().scheduler.get(id)
    }

    /// Take results produced outside the core (Python probes) and fold them into
    /// statuses; they come back through `drain` with any transitions.
    pub fn report(&self, results: Vec<ProbeResult>) {
        let mut state = self.shared.lock();
        for result in results {
            deliver(&mut state, result, true);
        }
        self.shared.signal_if_needed(&mut state);
    }

    /// Everything waiting since the last drain.
    pub fn drain(&self) -> Outbox {
        // Clear before taking the lock: a signal raised after this point is for items
        // we may not take now, and must stay readable.
        self.shared.wakeup.clear();
        let mut state = self.shared.lock();
        state.signalled = false;
        std::mem::take(&mut state.outbox)
    }

    pub fn stats(&self) -> EngineStats {
        let state = self.shared.lock();
        EngineStats {
            checks: state.scheduler.len(),
            schedule: state.scheduler.stats(),
        }
    }

    /// Stop the clock thread; idempotent.
    pub fn close(&self) {
        self.shared.lock().stopping = true;
        self.shared.tick.notify_one();
        let handle = self
            .clock_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

/// The run id of results reported only for their verdict (already stored by the
/// caller, e.g. agents' batches): folded, never queued back to Python.
pub const STORED_RUN: u64 = (1 << 63) - 1;

/// Queue a result for Python; fold it into the check's status when it is a scheduled
/// run (or a one-off asked to be recorded) of a check that still exists.
fn deliver(state: &mut State, result: ProbeResult, recorded: bool) {
    let fold = (result.run_id == 0 || recorded) && state.scheduler.get(result.check_id).is_some();
    if fold {
        if let Some(transition) = state.verdicts.fold(&result) {
            record(state, transition);
        }
        if let Some(timeline) = state.timelines.get_mut(&result.check_id) {
            timeline.add_run(result.status, result.latency_us as f64 / 1_000.0);
        }
    }
    if result.run_id != STORED_RUN {
        state.outbox.results.push(result);
    }
}

/// Every verdict change goes out to Python and into the check's timeline.
fn record(state: &mut State, transition: Transition) {
    if let Some(timeline) = state.timelines.get_mut(&transition.check_id) {
        let mut closed = Vec::new();
        timeline.change(transition.at_us / 1_000, transition.current, &mut closed);
        let id = transition.check_id;
        state
            .outbox
            .rollups
            .extend(closed.into_iter().map(|b| (id, b)));
    }
    state.outbox.transitions.push(transition);
}

/// At each bucket edge, close every timeline's bucket.
fn close_buckets(state: &mut State, now_ms: u64) {
    if now_ms < state.next_edge_ms {
        return;
    }
    let mut closed = Vec::new();
    for (&id, timeline) in &mut state.timelines {
        timeline.advance(now_ms, &mut closed);
        state
            .outbox
            .rollups
            .extend(closed.drain(..).map(|b| (id, b)));
    }
    state.next_edge_ms = now_ms - now_ms % state.rollup_span_ms + state.rollup_span_ms;
}

fn noop_result(due: &Due, now_us: u64, run_id: u64) -> ProbeResult {
    ProbeResult {
        due_ms: due.due_ms,
        started_us: now_us,
        status: Status::Up,
        run_id,
        ..ProbeResult::new(due.check_id)
    }
}

fn finished(due: &Due, run_id: u64, (outcome, started_us, took_us): Finished) -> ProbeResult {
    let (error_kind, message) = match outcome.error {
        Some((kind, message)) => (Some(kind.as_str().to_owned()), Some(message)),
        None => (None, None),
    };
    ProbeResult {
        due_ms: due.due_ms,
        started_us,
        latency_us: outcome.latency_us.unwrap_or(took_us),
        status: outcome.status,
        error_kind,
        message,
        status_code: outcome.status_code,
        run_id,
        timings: outcome.timings,
        details: (!outcome.details.is_empty())
            .then(|| serde_json::Value::Object(outcome.details).to_string()),
        ..ProbeResult::new(due.check_id)
    }
}

/// A check's schedule limits, probe settings and verdict policy, parsed.
fn parse_check(
    spec: CheckSpec,
    settings: &str,
) -> Result<(Option<ProbeSpec>, Policy), EngineError> {
    spec.validate()?;
    let config_error = |error| EngineError::Config {
        check_id: spec.id,
        error,
    };
    let probe = ProbeSpec::parse(spec.kind, settings).map_err(config_error)?;
    let policy = config::policy(spec.kind, spec.interval_ms, settings).map_err(config_error)?;
    Ok((probe, policy))
}

/// Hand a native probe to the executor; its result is delivered from a probe thread.
fn dispatch(shared: &Arc<Shared>, due: Due, probe: Arc<ProbeSpec>, run_id: u64, record: bool) {
    let sink = Arc::clone(shared);
    shared.executor.spawn(
        probe,
        Duration::from_millis(due.timeout_ms),
        shared.clock,
        move |done| {
            let result = finished(&due, run_id, done);
            let mut state = sink.lock();
            deliver(&mut state, result, record);
            sink.signal_if_needed(&mut state);
        },
    );
}

/// Heartbeat checks past their due time turn LATE, and DOWN once the grace runs out;
/// each lapse is a synthetic result from the central source, folded like any other.
fn expire_deadlines(state: &mut State, now_us: u64) {
    let mut lapses = Vec::new();
    state.deadlines.advance(now_us / 1_000, &mut lapses);
    for lapse in lapses {
        deliver(state, lapse.result(), false);
    }
}

/// Generic timers due by now go out to Python, stamped with the time they fired.
fn expire_timers(state: &mut State, fired: &mut Vec<crate::timers::Fired>, now_us: u64) {
    fired.clear();
    state.timers.advance(now_us / 1_000, fired);
    state.outbox.timers.extend(fired.iter().map(|f| FiredTimer {
        key: f.key,
        due_ms: f.due_ms,
        fired_us: now_us,
    }));
}

/// How often sources are checked for staleness.
const STALE_SWEEP_US: u64 = 1_000_000;

fn clock_loop(shared: &Arc<Shared>) {
    let mut due: Vec<Due> = Vec::new();
    let mut fired = Vec::new();
    let mut state = shared.lock();
    let mut next_sweep_us = shared.clock.now_us() + STALE_SWEEP_US;
    loop {
        if state.stopping {
            return;
        }
        let now_us = shared.clock.now_us();
        if now_us >= next_sweep_us {
            let mut went_stale = Vec::new();
            state.verdicts.expire_stale(now_us, &mut went_stale);
            for change in went_stale {
                record(&mut state, change);
            }
            next_sweep_us = now_us + STALE_SWEEP_US;
        }
        due.clear();
        state.scheduler.expire(now_us / 1_000, &mut due);
        for run in &due {
            if state.remote.contains(&run.check_id) {
                // Its results come from agents (`report`); the slot only keeps the check
                // known to the verdicts.
                continue;
            }
            let dispatched_us = shared.clock.now_us();
            match run.kind {
                ProbeKind::Python => state.outbox.work.push(Work {
                    check_id: run.check_id,
                    due_ms: run.due_ms,
                    dispatched_us,
                    timeout_ms: run.timeout_ms,
                }),
                ProbeKind::Noop => deliver(&mut state, noop_result(run, dispatched_us, 0), false),
                _ => {
                    if let Some(probe) = state.probes.get(&run.check_id) {
                        dispatch(shared, *run, Arc::clone(probe), 0, false);
                    }
                }
            }
        }
        expire_deadlines(&mut state, now_us);
        expire_timers(&mut state, &mut fired, now_us);
        close_buckets(&mut state, now_us / 1_000);
        shared.signal_if_needed(&mut state);
        let wake_ms = [
            state.scheduler.next_wakeup(),
            state.deadlines.next_expiration(),
            state.timers.next_expiration(),
            Some(next_sweep_us / 1_000),
            Some(state.next_edge_ms),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(next_sweep_us / 1_000);
        let wait = shared
            .clock
            .instant_at_ms(wake_ms)
            .saturating_duration_since(Instant::now());
        if wait.is_zero() {
            continue;
        }
        state = shared
            .tick
            .wait_timeout(state, wait)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(id: u64) -> CheckSpec {
        CheckSpec {
            id,
            interval_ms: 1_000,
            timeout_ms: 500,
            kind: ProbeKind::Noop,
            active: true,
        }
    }

    fn upsert(engine: &Engine, specs: &[CheckSpec]) -> Result<(), EngineError> {
        let with_config: Vec<(CheckSpec, &str)> = specs.iter().map(|s| (*s, "")).collect();
        engine.upsert(&with_config)
    }

    fn start() -> Engine {
        Engine::start(
            &ExecutorConfig {
                threads: 1,
                ..ExecutorConfig::default()
            },
            1_000,
        )
        .unwrap()
    }

    fn drain_until(engine: &Engine, mut done: impl FnMut(&Outbox) -> bool) -> Outbox {
        let mut all = Outbox::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let mut batch = engine.drain();
            all.work.append(&mut batch.work);
            all.results.append(&mut batch.results);
            all.transitions.append(&mut batch.transitions);
            all.rollups.append(&mut batch.rollups);
            all.timers.append(&mut batch.timers);
            if done(&all) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        all
    }

    #[test]
    fn noop_checks_run_on_their_grid_and_transition_once() {
        let engine = start();
        upsert(&engine, &[noop(1), noop(2)]).unwrap();
        let out = drain_until(&engine, |o| o.results.len() >= 4);
        assert!(out.results.len() >= 4);
        for r in &out.results {
            assert!(r.started_us >= r.due_ms * 1_000, "fired early");
            assert_eq!(
                r.due_ms % 1_000,
                crate::schedule::phase_ms(r.check_id, 1_000)
            );
        }
        assert_eq!(out.transitions.len(), 2);
        engine.close();
    }

    #[test]
    fn python_work_is_handed_out_and_reported_results_fold_into_status() {
        let engine = start();
        let mut spec = noop(9);
        spec.kind = ProbeKind::Python;
        upsert(&engine, &[spec]).unwrap();
        let out = drain_until(&engine, |o| !o.work.is_empty());
        let work = out.work[0];
        assert_eq!(work.check_id, 9);
        engine.report(vec![ProbeResult {
            due_ms: work.due_ms,
            started_us: work.dispatched_us,
            latency_us: 10,
            status: Status::Down,
            error_kind: Some("connect_refused".into()),
            ..ProbeResult::new(9)
        }]);
        let out = engine.drain();
        assert_eq!(out.results.len(), 1);
        assert_eq!(out.transitions[0].current, Status::Down);
        assert_eq!(engine.status(9), Status::Down);
    }

    #[test]
    fn remote_checks_are_never_probed_here_but_fold_reported_results() {
        let engine = start();
        let mut spec = noop(11);
        spec.kind = ProbeKind::Python;
        engine
            .upsert(&[
                (spec, r#"{"remote": true, "critical_sources": [5]}"#),
                (noop(12), ""),
            ])
            .unwrap();
        // The local noop check runs at least twice meanwhile; the remote one never.
        let out = drain_until(&engine, |o| {
            o.results.iter().filter(|r| r.check_id == 12).count() >= 2
        });
        assert!(out.work.iter().all(|w| w.check_id != 11));
        assert!(out.results.iter().all(|r| r.check_id != 11));
        for (source, status) in [(4, Status::Up), (5, Status::Down)] {
            engine.report(vec![ProbeResult {
                started_us: engine.now_us(),
                status,
                source,
                run_id: STORED_RUN,
                ..ProbeResult::new(11)
            }]);
        }
        assert_eq!(engine.status(11), Status::Down);
        // Stored elsewhere: only the transition comes back.
        let out = engine.drain();
        assert!(out.results.iter().all(|r| r.check_id != 11));
        assert!(out.transitions.iter().any(|t| t.check_id == 11));
        assert_eq!(engine.sources(11), vec![(4, Status::Up), (5, Status::Down)]);
        // Back to local probing: it is dispatched again.
        engine.upsert(&[(spec, "")]).unwrap();
        let out = drain_until(&engine, |o| o.work.iter().any(|w| w.check_id == 11));
        assert!(out.work.iter().any(|w| w.check_id == 11));
    }

    #[test]
    fn a_bad_spec_in_a_batch_changes_nothing() {
        let engine = start();
        let mut bad = noop(2);
        bad.interval_ms = 10;
        assert!(upsert(&engine, &[noop(1), bad]).is_err());
        let mut tcp = noop(3);
        tcp.kind = ProbeKind::Tcp;
        let err = engine
            .upsert(&[(noop(1), ""), (tcp, r#"{"host": "x"}"#)])
            .unwrap_err();
        assert!(
            matches!(err, EngineError::Config { check_id: 3, ref error } if error.field == "port")
        );
        assert_eq!(engine.stats().checks, 0);
    }

    #[test]
    fn validate_refuses_what_upsert_refuses_and_changes_nothing() {
        let engine = start();
        let mut bad = noop(2);
        bad.interval_ms = 10;
        let mut tcp = noop(3);
        tcp.kind = ProbeKind::Tcp;
        let cases: [&[(CheckSpec, &str)]; 3] = [
            &[(noop(1), ""), (bad, "")],
            &[(tcp, r#"{"host": "x"}"#)],
            &[(noop(1), ""), (tcp, r#"{"host": "x", "port": 80}"#)],
        ];
        for batch in cases {
            let validated = Engine::validate(batch);
            assert_eq!(engine.stats().checks, 0, "validate changed nothing");
            assert_eq!(validated, engine.upsert(batch));
        }
        assert_eq!(engine.stats().checks, 2);
    }

    #[test]
    fn a_heartbeat_goes_late_at_its_due_time_and_down_after_the_grace() {
        let engine = start();
        let mut hb = noop(4);
        hb.kind = ProbeKind::Heartbeat;
        upsert(&engine, &[hb]).unwrap();
        assert_eq!(engine.next_due(4), None, "heartbeats are never probed");
        let now_ms = engine.now_us() / 1_000;
        engine.report(vec![ProbeResult {
            started_us: now_ms * 1_000,
            status: Status::Up,
            ..ProbeResult::new(4)
        }]);
        engine.expect(4, now_ms + 100, 200);
        assert_eq!(engine.heartbeat_due(4), Some(now_ms + 100));
        let out = drain_until(&engine, |o| o.transitions.len() >= 3);
        let path: Vec<Status> = out.transitions.iter().map(|t| t.current).collect();
        assert_eq!(path, vec![Status::Up, Status::Late, Status::Down]);
        let late = out
            .results
            .iter()
            .find(|r| r.status == Status::Late)
            .unwrap();
        assert!(
            late.started_us >= (now_ms + 100) * 1_000,
            "never late before it is due"
        );
        assert_eq!(engine.heartbeat_due(4), None);
    }

    #[test]
    fn armed_timers_fire_once_and_cancelled_ones_never() {
        let engine = start();
        let now_ms = engine.now_us() / 1_000;
        engine.arm_timers(&[
            (1, now_ms + 50),
            (2, now_ms + 60),
            (3, now_ms.saturating_sub(5_000)),
        ]);
        engine.arm_timers(&[(4, now_ms + 10), (4, now_ms + 80)]);
        assert_eq!(engine.cancel_timers(&[2, 99]), 1);
        assert_eq!(engine.timer_count(), 3);
        let out = drain_until(&engine, |o| o.timers.len() >= 3);
        let mut keys: Vec<u64> = out.timers.iter().map(|t| t.key).collect();
        keys.sort_unstable();
        assert_eq!(keys, [1, 3, 4]);
        for t in &out.timers {
            assert!(t.fired_us >= t.due_ms * 1_000, "fired early");
        }
        let re_armed = out.timers.iter().find(|t| t.key == 4).unwrap();
        assert_eq!(
            re_armed.due_ms,
            now_ms + 80,
            "the re-armed time, not the first"
        );
        assert_eq!(engine.timer_count(), 0);
        assert_eq!(engine.cancel_timers(&[1]), 0, "fired already");
        // Nothing fires twice, and the cancelled one never comes (it was due long ago).
        std::thread::sleep(Duration::from_millis(100));
        assert!(engine.drain().timers.is_empty());
        engine.close();
    }

    #[test]
    fn closed_rollup_buckets_account_the_verdicts_time() {
        let engine = start();
        let mut check = noop(6);
        check.interval_ms = 86_400_000; // its own run never comes during the test
        upsert(&engine, &[check]).unwrap();
        let now_ms = engine.now_us() / 1_000;
        engine.report(vec![ProbeResult {
            started_us: now_ms * 1_000,
            latency_us: 2_000,
            status: Status::Down,
            ..ProbeResult::new(6)
        }]);
        let out = drain_until(&engine, |o| o.rollups.len() >= 2);
        let buckets: Vec<&Bucket> = out.rollups.iter().map(|(_, b)| b).collect();
        assert!(buckets.iter().all(|b| b.span_ms == 1_000));
        assert_eq!(buckets.iter().map(|b| b.runs_down).sum::<u32>(), 1);
        assert_eq!(buckets.iter().map(|b| b.incidents).sum::<u32>(), 1);
        // Whole buckets after the failure are all downtime.
        assert_eq!(buckets.last().unwrap().downtime_ms, 1_000);
    }

    #[test]
    fn a_native_tcp_probe_reports_a_refused_port_with_its_kind() {
        let engine = start();
        // Bind then drop a listener: the port is (almost certainly) closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(r#"{{"host": "127.0.0.1", "port": {port}}}"#);
        engine
            .run_once(vec![OneOff {
                run_id: 7,
                check_id: 1,
                kind: ProbeKind::Tcp,
                config,
                timeout_ms: 2_000,
                record: false,
            }])
            .unwrap();
        let out = drain_until(&engine, |o| !o.results.is_empty());
        let r = &out.results[0];
        assert_eq!((r.run_id, r.status), (7, Status::Down));
        assert_eq!(r.error_kind.as_deref(), Some("connect_refused"));
        assert!(
            out.transitions.is_empty(),
            "one-off runs do not change statuses"
        );
    }
}
