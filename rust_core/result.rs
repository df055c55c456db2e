//! The result record every probe produces, native or Python, and status changes.

/// Where a result was observed from. Python maps names (`central`, `agent:5`,
/// `geo:EU-PL`) to these small ids; `CENTRAL` is this process.
pub type SourceId = u32;
pub const CENTRAL: SourceId = 0;

/// Status of a result or a check. The numeric values cross the Python boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    Unknown = 0,
    Up = 1,
    Down = 2,
    Degraded = 3,
    Late = 4,
    Paused = 5,
}

impl TryFrom<u8> for Status {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(Status::Unknown),
            1 => Ok(Status::Up),
            2 => Ok(Status::Down),
            3 => Ok(Status::Degraded),
            4 => Ok(Status::Late),
            5 => Ok(Status::Paused),
            other => Err(other),
        }
    }
}

/// One probe run, whatever executed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub check_id: u64,
    pub source: SourceId,
    /// When the run was due on the schedule (ms since the Unix epoch); 0 for runs
    /// outside the schedule (run-now).
    pub due_ms: u64,
    /// When the run actually started (µs since the Unix epoch).
    pub started_us: u64,
    pub latency_us: u64,
    pub status: Status,
    /// Stable machine-readable error kind (`timeout`, `connect_refused`, …).
    pub error_kind: Option<String>,
    pub message: Option<String>,
    /// HTTP status code, 0 when not applicable.
    pub status_code: u16,
    /// Non-zero for one-off runs (run-now), which Python matches to their caller.
    pub run_id: u64,
    pub timings: Timings,
    /// Type-specific details as a JSON object (address, answers, certificate expiry…).
    pub details: Option<String>,
}

impl ProbeResult {
    /// An empty UNKNOWN result for `check_id`, for filling in with struct update syntax.
    pub fn new(check_id: u64) -> Self {
        ProbeResult {
            check_id,
            source: CENTRAL,
            due_ms: 0,
            started_us: 0,
            latency_us: 0,
            status: Status::Unknown,
            error_kind: None,
            message: None,
            status_code: 0,
            run_id: 0,
            timings: Timings::default(),
            details: None,
        }
    }
}

/// Time spent in each phase of a probe, where the phase applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    pub dns_us: Option<u64>,
    pub connect_us: Option<u64>,
    pub tls_us: Option<u64>,
    pub first_byte_us: Option<u64>,
}

/// A change of a check's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub check_id: u64,
    pub previous: Status,
    pub current: Status,
    pub at_us: u64,
    pub reason: Option<String>,
    /// Every source's status at that moment (stale ones as UNKNOWN).
    pub sources: Vec<(SourceId, Status)>,
    /// Happened inside a maintenance window: recorded, not alertable.
    pub in_maintenance: bool,
}
