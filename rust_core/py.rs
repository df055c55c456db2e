//! The only file that knows `PyO3`: converts between Python values and the plain-Rust
//! core and delegates. Every call takes and returns whole batches; long work runs with
//! the GIL released.

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::engine::{Engine, EngineError, OneOff};
use crate::executor::ExecutorConfig;
use crate::result::{ProbeResult, SourceId, Status, Timings};
use crate::schedule::{self, CheckSpec, ProbeKind, ScheduleError};
use crate::stats::{self, Bucket, Sketch};

create_exception!(
    _core,
    InvalidCheckError,
    PyValueError,
    "A check the engine cannot accept: schedule limits, an unknown kind, or a probe \
     setting (then `field` names it)."
);

impl From<ScheduleError> for PyErr {
    fn from(err: ScheduleError) -> PyErr {
        InvalidCheckError::new_err(err.to_string())
    }
}

/// `InvalidCheckError` with `check_id` and `field` attributes (`field` is the API field
/// at fault, or None when it is the schedule).
fn engine_error(py: Python<'_>, err: &EngineError) -> PyErr {
    let (check_id, field) = match &err {
        EngineError::Config { check_id, error } => (Some(*check_id), Some(error.field.clone())),
        EngineError::Schedule(ScheduleError::IntervalOutOfRange { id, .. }) => {
            (Some(*id), Some("interval".to_owned()))
        }
        EngineError::Schedule(ScheduleError::TimeoutOutOfRange { id, .. }) => {
            (Some(*id), Some("timeout".to_owned()))
        }
        EngineError::Schedule(ScheduleError::UnknownKind(_)) => (None, Some("type".to_owned())),
        EngineError::Startup(e) => return PyOSError::new_err(e.clone()),
    };
    // The reason alone, without the check and field the other attributes carry.
    let reason = match &err {
        EngineError::Config { error, .. } => error.message.clone(),
        EngineError::Schedule(e) => e.reason(),
        other @ EngineError::Startup(_) => other.to_string(),
    };
    let exc = InvalidCheckError::new_err(err.to_string());
    let value = exc.value(py);
    if value.setattr("check_id", check_id).is_err()
        || value.setattr("field", field).is_err()
        || value.setattr("reason", reason).is_err()
    {
        return InvalidCheckError::new_err(err.to_string());
    }
    exc
}

/// `(id, interval_ms, timeout_ms, kind, active, config_json)` into the engine's spec.
fn check_specs(specs: Vec<SpecTuple>) -> PyResult<Vec<(CheckSpec, String)>> {
    specs
        .into_iter()
        .map(|(id, interval_ms, timeout_ms, k, active, config)| {
            Ok((
                CheckSpec {
                    id,
                    interval_ms,
                    timeout_ms,
                    kind: kind(k)?,
                    active,
                },
                config.unwrap_or_default(),
            ))
        })
        .collect()
}

/// `(id, interval_ms, timeout_ms, kind, active, config_json)`
type SpecTuple = (u64, u64, u64, u8, bool, Option<String>);
/// `(dns_us, connect_us, tls_us, first_byte_us)`
type TimingsTuple = (Option<u64>, Option<u64>, Option<u64>, Option<u64>);
/// `(check_id, due_ms, started_us, latency_us, status, error_kind, message, status_code,
///   run_id, timings, details_json, source)`
type ResultTuple = (
    u64,
    u64,
    u64,
    u64,
    u8,
    Option<String>,
    Option<String>,
    u16,
    u64,
    TimingsTuple,
    Option<String>,
    SourceId,
);
/// `(run_id, check_id, kind, config_json, timeout_ms, record)`
type OneOffTuple = (u64, u64, u8, String, u64, bool);
/// `(check_id, due_ms, dispatched_us, timeout_ms)`
type WorkTuple = (u64, u64, u64, u64);
/// `(key, due_ms, fired_us)`
type FiredTuple = (u64, u64, u64);
/// What `drain` returns: `(work, results, transitions, rollups, timers)`.
type DrainTuple = (
    Vec<WorkTuple>,
    Vec<ResultTuple>,
    Vec<TransitionTuple>,
    Vec<RollupTuple>,
    Vec<FiredTuple>,
);
/// `(check_id, start_ms, span_ms, runs_up, runs_down, runs_degraded, downtime_ms,
///   excluded_ms, incidents, sketch_bytes)`
type RollupTuple = (u64, u64, u64, u32, u32, u32, u64, u64, u32, Vec<u8>);

fn rollup_tuple((check_id, b): (u64, Bucket)) -> RollupTuple {
    (
        check_id,
        b.start_ms,
        b.span_ms,
        b.runs_up,
        b.runs_down,
        b.runs_degraded,
        b.downtime_ms,
        b.excluded_ms,
        b.incidents,
        b.latency.to_bytes(),
    )
}

fn bucket_from(t: RollupTuple) -> PyResult<Bucket> {
    let (
        _,
        start_ms,
        span_ms,
        runs_up,
        runs_down,
        runs_degraded,
        downtime_ms,
        excluded_ms,
        incidents,
        sketch,
    ) = t;
    Ok(Bucket {
        start_ms,
        span_ms,
        runs_up,
        runs_down,
        runs_degraded,
        downtime_ms,
        excluded_ms,
        incidents,
        latency: Sketch::from_bytes(&sketch)
            .ok_or_else(|| PyValueError::new_err("not a tocsin latency sketch"))?,
    })
}

/// `(check_id, previous, current, at_us, reason, [(source, status)], in_maintenance)`
type TransitionTuple = (u64, u8, u8, u64, Option<String>, Vec<(SourceId, u8)>, bool);

fn status(v: u8) -> PyResult<Status> {
    Status::try_from(v).map_err(|v| InvalidCheckError::new_err(format!("unknown status {v}")))
}

fn kind(v: u8) -> PyResult<ProbeKind> {
    Ok(ProbeKind::try_from(v)?)
}

fn result_tuple(r: ProbeResult) -> ResultTuple {
    let t = r.timings;
    (
        r.check_id,
        r.due_ms,
        r.started_us,
        r.latency_us,
        r.status as u8,
        r.error_kind,
        r.message,
        r.status_code,
        r.run_id,
        (t.dns_us, t.connect_us, t.tls_us, t.first_byte_us),
        r.details,
        r.source,
    )
}

fn result_from(t: ResultTuple) -> PyResult<ProbeResult> {
    let (
        check_id,
        due_ms,
        started_us,
        latency_us,
        s,
        error_kind,
        message,
        status_code,
        run_id,
        timings,
        details,
        source,
    ) = t;
    let (dns_us, connect_us, tls_us, first_byte_us) = timings;
    Ok(ProbeResult {
        check_id,
        source,
        due_ms,
        started_us,
        latency_us,
        status: status(s)?,
        error_kind,
        message,
        status_code,
        run_id,
        timings: Timings {
            dns_us,
            connect_us,
            tls_us,
            first_byte_us,
        },
        details,
    })
}

/// The native engine: owns the clock thread, the probe runtime, the schedule and the
/// result outbox.
#[pyclass(module = "tocsin._core", name = "Core", frozen)]
struct PyCore {
    engine: Engine,
}

// PyO3 extracts Python lists into owned vectors.
#[allow(clippy::needless_pass_by_value)]
#[pymethods]
impl PyCore {
    /// Start the clock thread and the probe runtime. `threads` 0 means one per core.
    #[new]
    #[pyo3(signature = (threads=0, max_in_flight=10_000, max_per_host=1_000, extra_ca_pem=None, rollup_span_ms=60_000))]
    fn new(
        py: Python<'_>,
        threads: usize,
        max_in_flight: usize,
        max_per_host: usize,
        extra_ca_pem: Option<String>,
        rollup_span_ms: u64,
    ) -> PyResult<Self> {
        let config = ExecutorConfig {
            threads,
            max_in_flight,
            max_per_host,
            extra_ca_pem,
        };
        match py.detach(|| Engine::start(&config, rollup_span_ms)) {
            Ok(engine) => Ok(PyCore { engine }),
            Err(EngineError::Startup(e)) => Err(PyOSError::new_err(e)),
            Err(e) => Err(PyValueError::new_err(e.to_string())),
        }
    }

    /// Add or change checks: a list of
    /// `(id, interval_ms, timeout_ms, kind, active, config_json)`.
    /// All or nothing: raises `InvalidCheckError` and changes nothing if any is invalid.
    fn upsert(&self, py: Python<'_>, specs: Vec<SpecTuple>) -> PyResult<()> {
        let specs = check_specs(specs)?;
        py.detach(|| {
            let borrowed: Vec<(CheckSpec, &str)> =
                specs.iter().map(|(s, c)| (*s, c.as_str())).collect();
            self.engine.upsert(&borrowed)
        })
        .map_err(|e| engine_error(py, &e))
    }

    /// Raise `InvalidCheckError` where `upsert` would, without changing anything.
    #[staticmethod]
    fn validate(py: Python<'_>, specs: Vec<SpecTuple>) -> PyResult<()> {
        let specs = check_specs(specs)?;
        let borrowed: Vec<(CheckSpec, &str)> =
            specs.iter().map(|(s, c)| (*s, c.as_str())).collect();
        Engine::validate(&borrowed).map_err(|e| engine_error(py, &e))
    }

    /// Run native probes now: a list of
    /// `(run_id, check_id, kind, config_json, timeout_ms, record)`. Results come back
    /// through `drain` carrying their `run_id`.
    fn run_once(&self, py: Python<'_>, runs: Vec<OneOffTuple>) -> PyResult<()> {
        let runs = runs
            .into_iter()
            .map(|(run_id, check_id, k, config, timeout_ms, record)| {
                Ok(OneOff {
                    run_id,
                    check_id,
                    kind: kind(k)?,
                    config,
                    timeout_ms,
                    record,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        py.detach(|| self.engine.run_once(runs))
            .map_err(|e| engine_error(py, &e))
    }

    /// Remove checks; returns how many were known.
    fn remove(&self, py: Python<'_>, ids: Vec<u64>) -> usize {
        py.detach(|| self.engine.remove(&ids))
    }

    fn pause(&self, py: Python<'_>, ids: Vec<u64>) -> usize {
        py.detach(|| self.engine.pause(&ids))
    }

    fn resume(&self, py: Python<'_>, ids: Vec<u64>) -> usize {
        py.detach(|| self.engine.resume(&ids))
    }

    /// Restore statuses after a restart: a list of `(id, status)`.
    fn seed(&self, py: Python<'_>, statuses: Vec<(u64, u8)>) -> PyResult<()> {
        let statuses = statuses
            .into_iter()
            .map(|(id, s)| Ok((id, status(s)?)))
            .collect::<PyResult<Vec<_>>>()?;
        py.detach(|| self.engine.seed(&statuses));
        Ok(())
    }

    /// Hand in results of Python probes (tuples shaped as `drain` returns them).
    fn report(&self, py: Python<'_>, results: Vec<ResultTuple>) -> PyResult<()> {
        let results = results
            .into_iter()
            .map(result_from)
            .collect::<PyResult<Vec<_>>>()?;
        py.detach(|| self.engine.report(results));
        Ok(())
    }

    /// Everything waiting since the last call:
    /// `(work, results, transitions, rollups, timers)`.
    fn drain(&self, py: Python<'_>) -> DrainTuple {
        let outbox = py.detach(|| self.engine.drain());
        let work = outbox
            .work
            .into_iter()
            .map(|w| (w.check_id, w.due_ms, w.dispatched_us, w.timeout_ms))
            .collect();
        let results = outbox.results.into_iter().map(result_tuple).collect();
        let transitions = outbox
            .transitions
            .into_iter()
            .map(|t| {
                let sources = t.sources.iter().map(|&(id, s)| (id, s as u8)).collect();
                (
                    t.check_id,
                    t.previous as u8,
                    t.current as u8,
                    t.at_us,
                    t.reason,
                    sources,
                    t.in_maintenance,
                )
            })
            .collect();
        let rollups = outbox.rollups.into_iter().map(rollup_tuple).collect();
        let timers = outbox
            .timers
            .into_iter()
            .map(|t| (t.key, t.due_ms, t.fired_us))
            .collect();
        (work, results, transitions, rollups, timers)
    }

    /// Readable whenever `drain` has something; for `loop.add_reader`.
    fn wakeup_fd(&self) -> i32 {
        self.engine.wakeup_fd()
    }

    /// The core's clock, in µs since the Unix epoch.
    fn now_us(&self) -> u64 {
        self.engine.now_us()
    }

    /// Next due time of a check in ms since the epoch; `None` when paused or unknown.
    fn next_due(&self, py: Python<'_>, id: u64) -> Option<u64> {
        py.detach(|| self.engine.next_due(id))
    }

    /// Current status of a check as its numeric code.
    fn status(&self, py: Python<'_>, id: u64) -> u8 {
        py.detach(|| self.engine.status(id)) as u8
    }

    /// `(checks, dispatched, skipped)`.
    fn stats(&self, py: Python<'_>) -> (usize, u64, u64) {
        let s = py.detach(|| self.engine.stats());
        (s.checks, s.schedule.dispatched, s.schedule.skipped)
    }

    /// A heartbeat check's next ping is due at `due_ms`: LATE from then, DOWN after
    /// `grace_ms` more, unless `expect` is called again first (a ping came).
    fn expect(&self, py: Python<'_>, check_id: u64, due_ms: u64, grace_ms: u64) {
        py.detach(|| self.engine.expect(check_id, due_ms, grace_ms));
    }

    /// When a heartbeat check's next ping is due (ms since the epoch), if expected.
    fn heartbeat_due(&self, py: Python<'_>, check_id: u64) -> Option<u64> {
        py.detach(|| self.engine.heartbeat_due(check_id))
    }

    /// Arm generic timers: a list of `(key, due_ms)`; re-arming a key replaces its
    /// timer, a past due time fires at once. Fired timers come back through `drain`.
    fn arm_timers(&self, py: Python<'_>, items: Vec<(u64, u64)>) {
        py.detach(|| self.engine.arm_timers(&items));
    }

    /// Cancel generic timers by key; returns how many were pending.
    fn cancel_timers(&self, py: Python<'_>, keys: Vec<u64>) -> usize {
        py.detach(|| self.engine.cancel_timers(&keys))
    }

    /// Generic timers pending.
    fn timer_count(&self, py: Python<'_>) -> usize {
        py.detach(|| self.engine.timer_count())
    }

    /// Flag checks as inside (or outside) a maintenance window.
    fn set_maintenance(&self, py: Python<'_>, ids: Vec<u64>, on: bool) {
        py.detach(|| self.engine.set_maintenance(&ids, on));
    }

    /// Mark a source stale in every check (UNKNOWN until it reports again).
    fn expire_source(&self, py: Python<'_>, source: SourceId) {
        py.detach(|| self.engine.expire_source(source));
    }

    /// `[(source, status)]` of a check, stale sources as UNKNOWN.
    fn sources(&self, py: Python<'_>, id: u64) -> Vec<(SourceId, u8)> {
        py.detach(|| self.engine.sources(id))
            .into_iter()
            .map(|(s, st)| (s, st as u8))
            .collect()
    }

    /// Hand out every check's open rollup bucket as it stands (before `close`); the
    /// next `drain` returns them.
    fn flush_rollups(&self, py: Python<'_>) {
        py.detach(|| self.engine.flush_rollups());
    }

    /// Stop the clock thread. The object is unusable for scheduling afterwards.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.engine.close());
    }
}

/// SLA figures over rollup buckets (tuples as `drain` returns them): a dict with
/// `total_ms`, `downtime_ms`, `uptime_pct`, `incidents`, `mttr_ms`, `mtbf_ms`, `runs`,
/// `p50_ms`, `p95_ms`, `p99_ms`, `apdex`, and `runs_within_threshold` (successful runs
/// at most `latency_threshold_ms`, when given: a latency SLI's good events).
#[pyfunction]
#[pyo3(signature = (buckets, apdex_t_ms, latency_threshold_ms=None))]
fn figures(
    py: Python<'_>,
    buckets: Vec<RollupTuple>,
    apdex_t_ms: f64,
    latency_threshold_ms: Option<f64>,
) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    let buckets = buckets
        .into_iter()
        .map(bucket_from)
        .collect::<PyResult<Vec<_>>>()?;
    let (f, within) = py.detach(|| {
        let within = latency_threshold_ms.map(|ms| stats::runs_within(&buckets, ms));
        (stats::figures(&buckets, apdex_t_ms), within)
    });
    let d = pyo3::types::PyDict::new(py);
    d.set_item("runs_within_threshold", within)?;
    d.set_item("total_ms", f.total_ms)?;
    d.set_item("downtime_ms", f.downtime_ms)?;
    d.set_item("uptime_pct", f.uptime_pct)?;
    d.set_item("incidents", f.incidents)?;
    d.set_item("mttr_ms", f.mttr_ms)?;
    d.set_item("mtbf_ms", f.mtbf_ms)?;
    d.set_item("runs", f.runs)?;
    d.set_item("p50_ms", f.p50_ms)?;
    d.set_item("p95_ms", f.p95_ms)?;
    d.set_item("p99_ms", f.p99_ms)?;
    d.set_item("apdex", f.apdex)?;
    Ok(d)
}

/// Merge buckets (of any checks, in any order) into buckets of `span_ms` per check.
#[pyfunction]
fn roll_up(py: Python<'_>, buckets: Vec<RollupTuple>, span_ms: u64) -> PyResult<Vec<RollupTuple>> {
    if span_ms == 0 {
        return Err(PyValueError::new_err("span_ms must be positive"));
    }
    let buckets = buckets
        .into_iter()
        .map(|t| Ok((t.0, bucket_from(t)?)))
        .collect::<PyResult<Vec<_>>>()?;
    let merged = py.detach(|| stats::roll_up_checks(buckets, span_ms));
    Ok(merged.into_iter().map(rollup_tuple).collect())
}

/// An SLO's state: `(sli, budget_remaining, burn_rate, budget_warning,
/// budget_exhausted, burn_rate_alert)` for a `target` fraction, (good, total) over the
/// window and over the burn-rate window.
#[pyfunction]
fn slo(
    target: f64,
    window: (f64, f64),
    burn_window: (f64, f64),
    warn_remaining: f64,
    burn_threshold: f64,
) -> PyResult<(f64, f64, f64, bool, bool, bool)> {
    if !(0.0..1.0).contains(&target) {
        return Err(PyValueError::new_err("target must be a fraction in [0, 1)"));
    }
    let s = stats::slo(target, window, burn_window, warn_remaining, burn_threshold);
    Ok((
        s.sli,
        s.budget_remaining,
        s.burn_rate,
        s.budget_warning,
        s.budget_exhausted,
        s.burn_rate_alert,
    ))
}

/// Offset in ms of a check's runs inside its interval (stable across restarts).
#[pyfunction]
fn phase_ms(id: u64, interval_ms: u64) -> PyResult<u64> {
    if interval_ms == 0 {
        return Err(InvalidCheckError::new_err("interval_ms must be positive"));
    }
    Ok(schedule::phase_ms(id, interval_ms))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCore>()?;
    m.add_function(wrap_pyfunction!(phase_ms, m)?)?;
    m.add_function(wrap_pyfunction!(figures, m)?)?;
    m.add_function(wrap_pyfunction!(slo, m)?)?;
    m.add_function(wrap_pyfunction!(roll_up, m)?)?;
    m.add("InvalidCheckError", m.py().get_type::<InvalidCheckError>())?;
    m.add("MIN_INTERVAL_MS", schedule::MIN_INTERVAL_MS)?;
    m.add("MAX_INTERVAL_MS", schedule::MAX_INTERVAL_MS)?;
    m.add("MAX_TIMEOUT_MS", schedule::MAX_TIMEOUT_MS)?;
    Ok(())
}
