//! The only file that knows `PyO3`: converts between Python values and the plain-Rust
//! core and delegates. Every call takes and returns whole batches; long work runs with
//! the GIL released.

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::aggregate::{ProbeResult, Status};
use crate::engine::Engine;
use crate::schedule::{self, CheckSpec, ProbeKind, ScheduleError};

create_exception!(
    _core,
    InvalidCheckError,
    PyValueError,
    "A check spec the scheduler cannot accept (interval, timeout or kind out of range)."
);

impl From<ScheduleError> for PyErr {
    fn from(err: ScheduleError) -> PyErr {
        InvalidCheckError::new_err(err.to_string())
    }
}

/// `(id, interval_ms, timeout_ms, kind, active)`
type SpecTuple = (u64, u64, u64, u8, bool);
/// `(check_id, due_ms, started_us, latency_us, status, error_kind, message, status_code)`
type ResultTuple = (u64, u64, u64, u64, u8, Option<String>, Option<String>, u16);
/// `(check_id, due_ms, dispatched_us, timeout_ms)`
type WorkTuple = (u64, u64, u64, u64);
/// `(check_id, previous, current, at_us, reason)`
type TransitionTuple = (u64, u8, u8, u64, Option<String>);

fn status(v: u8) -> PyResult<Status> {
    Status::try_from(v).map_err(|v| InvalidCheckError::new_err(format!("unknown status {v}")))
}

fn spec_from(t: SpecTuple) -> PyResult<CheckSpec> {
    let (id, interval_ms, timeout_ms, kind, active) = t;
    Ok(CheckSpec {
        id,
        interval_ms,
        timeout_ms,
        kind: ProbeKind::try_from(kind)?,
        active,
    })
}

fn result_tuple(r: ProbeResult) -> ResultTuple {
    (
        r.check_id,
        r.due_ms,
        r.started_us,
        r.latency_us,
        r.status as u8,
        r.error_kind,
        r.message,
        r.status_code,
    )
}

/// The native engine: owns the clock thread, the schedule and the result outbox.
#[pyclass(module = "tocsin._core", name = "Core", frozen)]
struct PyCore {
    engine: Engine,
}

// PyO3 extracts Python lists into owned vectors.
#[allow(clippy::needless_pass_by_value)]
#[pymethods]
impl PyCore {
    #[new]
    fn new() -> PyResult<Self> {
        let engine = Engine::start().map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(PyCore { engine })
    }

    /// Add or change checks: a list of `(id, interval_ms, timeout_ms, kind, active)`.
    /// All or nothing: raises `InvalidCheckError` and changes nothing if any is invalid.
    fn upsert(&self, py: Python<'_>, specs: Vec<SpecTuple>) -> PyResult<()> {
        let specs = specs
            .into_iter()
            .map(spec_from)
            .collect::<PyResult<Vec<_>>>()?;
        py.detach(|| self.engine.upsert(&specs))?;
        Ok(())
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

    /// Hand in results of Python probes (tuples as returned by `drain`).
    fn report(&self, py: Python<'_>, results: Vec<ResultTuple>) -> PyResult<()> {
        let results = results
            .into_iter()
            .map(
                |(
                    check_id,
                    due_ms,
                    started_us,
                    latency_us,
                    s,
                    error_kind,
                    message,
                    status_code,
                )| {
                    Ok(ProbeResult {
                        check_id,
                        due_ms,
                        started_us,
                        latency_us,
                        status: status(s)?,
                        error_kind,
                        message,
                        status_code,
                    })
                },
            )
            .collect::<PyResult<Vec<_>>>()?;
        py.detach(|| self.engine.report(results));
        Ok(())
    }

    /// Everything waiting since the last call: `(work, results, transitions)`.
    fn drain(&self, py: Python<'_>) -> (Vec<WorkTuple>, Vec<ResultTuple>, Vec<TransitionTuple>) {
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
                (
                    t.check_id,
                    t.previous as u8,
                    t.current as u8,
                    t.at_us,
                    t.reason,
                )
            })
            .collect();
        (work, results, transitions)
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

    /// Stop the clock thread. The object is unusable for scheduling afterwards.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.engine.close());
    }
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
    m.add("InvalidCheckError", m.py().get_type::<InvalidCheckError>())?;
    m.add("MIN_INTERVAL_MS", schedule::MIN_INTERVAL_MS)?;
    m.add("MAX_INTERVAL_MS", schedule::MAX_INTERVAL_MS)?;
    m.add("MAX_TIMEOUT_MS", schedule::MAX_TIMEOUT_MS)?;
    Ok(())
}
