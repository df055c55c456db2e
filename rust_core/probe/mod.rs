//! Native probes: what a check of each built-in type does, as plain async Rust on tokio.
//! Every probe returns the same `Outcome`; the executor adds timing and ids.

pub mod config;
pub mod dns;
pub mod http;
pub mod icmp;
pub mod net;
pub mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::result::Status;
pub use crate::result::Timings;
pub use config::{ConfigError, ProbeSpec};

/// Stable, machine-readable error kinds. The strings cross into Python and the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    DnsError,
    ConnectRefused,
    ConnectTimeout,
    ConnectError,
    TlsError,
    CertExpired,
    CertHostname,
    CertExpiring,
    HttpStatus,
    ContentMismatch,
    TooManyRedirects,
    SlowResponse,
    Timeout,
    ProtocolError,
    PacketLoss,
    PermissionDenied,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::DnsError => "dns_error",
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ConnectError => "connect_error",
            ErrorKind::TlsError => "tls_error",
            ErrorKind::CertExpired => "cert_expired",
            ErrorKind::CertHostname => "cert_hostname",
            ErrorKind::CertExpiring => "cert_expiring",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::ContentMismatch => "content_mismatch",
            ErrorKind::TooManyRedirects => "too_many_redirects",
            ErrorKind::SlowResponse => "slow_response",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ProtocolError => "protocol_error",
            ErrorKind::PacketLoss => "packet_loss",
            ErrorKind::PermissionDenied => "permission_denied",
        }
    }
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub error: Option<(ErrorKind, String)>,
    pub status_code: u16,
    pub timings: Timings,
    pub details: Map<String, Value>,
    /// The latency to report when it is not the probe's wall time (ICMP: mean RTT).
    pub latency_us: Option<u64>,
}

impl Outcome {
    pub fn up() -> Self {
        Outcome {
            status: Status::Up,
            error: None,
            status_code: 0,
            timings: Timings::default(),
            details: Map::new(),
            latency_us: None,
        }
    }

    pub fn down(kind: ErrorKind, message: impl Into<String>) -> Self {
        Outcome {
            status: Status::Down,
            error: Some((kind, message.into())),
            ..Outcome::up()
        }
    }

    pub fn degraded(kind: ErrorKind, message: impl Into<String>) -> Self {
        Outcome {
            status: Status::Degraded,
            error: Some((kind, message.into())),
            ..Outcome::up()
        }
    }

    #[must_use]
    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    #[must_use]
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Shared, read-only state every probe may use.
pub struct ProbeContext {
    pub tls: tls::TlsConfigs,
}

impl ProbeContext {
    /// `extra_ca_pem`: certificates trusted in addition to the system store (a private
    /// CA), PEM-encoded.
    pub fn new(extra_ca_pem: Option<&str>) -> Result<Arc<Self>, ConfigError> {
        Ok(Arc::new(ProbeContext {
            tls: tls::TlsConfigs::new(extra_ca_pem)?,
        }))
    }
}

pub(crate) fn elapsed_us(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// Grace past the deadline for the backstop below: every phase of a probe is bounded by
/// the deadline itself and classifies its own expiry; the backstop only catches a phase
/// that forgot to.
const BACKSTOP_GRACE: Duration = Duration::from_millis(50);

/// Run one probe, bounded by `timeout` whatever the probe does.
pub async fn run(spec: &ProbeSpec, ctx: &ProbeContext, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let work = async {
        match spec {
            ProbeSpec::Http(s) => http::probe(s, ctx, deadline).await,
            ProbeSpec::Tcp(s) => net::tcp_probe(s, deadline).await,
            ProbeSpec::Udp(s) => net::udp_probe(s, deadline).await,
            ProbeSpec::Dns(s) => dns::probe(s, deadline).await,
            ProbeSpec::Icmp(s) => icmp::probe(s, deadline).await,
            ProbeSpec::Tls(s) => tls::probe(s, ctx, deadline).await,
        }
    };
    match tokio::time::timeout(timeout + BACKSTOP_GRACE, work).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::down(
            ErrorKind::Timeout,
            format!("no complete answer within {} ms", timeout.as_millis()),
        ),
    }
}

/// Time left until `deadline`, for bounding one phase of a probe.
pub(crate) fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
