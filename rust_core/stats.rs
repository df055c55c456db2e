//! Rollups and the figures read from them: a latency sketch with bounded relative
//! error, time-accounting buckets (runs by status, downtime, excluded time, incidents)
//! that merge from minutes into hours and days, and the SLA/SLO arithmetic on top.
//!
//! Definitions (SPEC.md): uptime = (total − downtime) / total, where DOWN is downtime,
//! DEGRADED is not, and maintenance, PAUSED and UNKNOWN (no data) time is excluded from
//! the total. MTTR = downtime ÷ incidents, MTBF = up time ÷ incidents.

use crate::result::Status;

/// Relative accuracy of sketch quantiles.
pub const ALPHA: f64 = 0.01;
/// Values below this (ms) share one bucket and read back as 0.
const MIN_MS: f64 = 1e-3;

/// A DDSketch-style histogram over log-spaced buckets: any quantile it returns is
/// within `ALPHA` relative error of a true sample at that rank. Sparse and mergeable.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sketch {
    /// (bucket index, count), sorted by index.
    buckets: Vec<(i16, u32)>,
    zeros: u32,
    count: u64,
}

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// `ln(gamma())`, precomputed: it divides every sample's logarithm (the hot path).
const LN_GAMMA: f64 = 0.020_000_666_706_669_05;

fn index_of(ms: f64) -> i16 {
    (ms.ln() / LN_GAMMA).ceil() as i16
}

fn value_of(index: i16) -> f64 {
    let g = gamma();
    2.0 * g.powi(i32::from(index)) / (g + 1.0)
}

impl Sketch {
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn add(&mut self, ms: f64) {
        self.add_n(ms, 1);
    }

    fn add_n(&mut self, ms: f64, n: u32) {
        self.count += u64::from(n);
        // NaN and tiny values land in the zero bucket.
        if ms.is_nan() || ms < MIN_MS {
            self.zeros += n;
            return;
        }
        let index = index_of(ms);
        match self.buckets.binary_search_by_key(&index, |&(i, _)| i) {
            Ok(pos) => self.buckets[pos].1 += n,
            Err(pos) => self.buckets.insert(pos, (index, n)),
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        self.zeros += other.zeros;
        self.count += other.count;
        if self.buckets.is_empty() {
            self.buckets.clone_from(&other.buckets);
            return;
        }
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(ia, ca)), Some(&&(ib, cb))) => match ia.cmp(&ib) {
                    std::cmp::Ordering::Equal => {
                        merged.push((ia, ca + cb));
                        a.next();
                        b.next();
                    }
                    std::cmp::Ordering::Less => {
                        merged.push((ia, ca));
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        merged.push((ib, cb));
                        b.next();
                    }
                },
                (Some(&&x), None) => {
                    merged.push(x);
                    a.next();
                }
                (None, Some(&&x)) => {
                    merged.push(x);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.buckets = merged;
    }

    /// The value at quantile `q` (0..=1), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        // Rank of the sample, 0-based, as `ceil(q * n) - 1` (the nearest-rank rule).
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1) - 1;
        if rank < u64::from(self.zeros) {
            return Some(0.0);
        }
        let mut seen = u64::from(self.zeros);
        for &(index, count) in &self.buckets {
            seen += u64::from(count);
            if seen > rank {
                return Some(value_of(index));
            }
        }
        self.buckets.last().map(|&(i, _)| value_of(i))
    }

    /// Compact little-endian form for storage: zeros (u32), then (index i16, count u32)
    /// per bucket; the total is derived.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 6 * self.buckets.len());
        out.extend_from_slice(&self.zeros.to_le_bytes());
        for &(index, count) in &self.buckets {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        out
    }

    /// The inverse of `to_bytes`; `None` for bytes it did not write.
    pub fn from_bytes(bytes: &[u8]) -> Option<Sketch> {
        if bytes.len() < 4 || (bytes.len() - 4) % 6 != 0 {
            return None;
        }
        let zeros = u32::from_le_bytes(bytes[..4].try_into().ok()?);
        let mut buckets = Vec::with_capacity((bytes.len() - 4) / 6);
        let mut count = u64::from(zeros);
        for chunk in bytes[4..].chunks_exact(6) {
            let index = i16::from_le_bytes([chunk[0], chunk[1]]);
            let n = u32::from_le_bytes([chunk[2], chunk[3], chunk[4], chunk[5]]);
            if buckets.last().is_some_and(|&(last, _)| last >= index) {
                return None;
            }
            buckets.push((index, n));
            count += u64::from(n);
        }
        Some(Sketch {
            buckets,
            zeros,
            count,
        })
    }

    /// How many samples are at most `ms` (exact up to the bucket holding `ms`).
    pub fn count_at_most(&self, ms: f64) -> u64 {
        if ms < MIN_MS {
            return u64::from(self.zeros);
        }
        let limit = index_of(ms);
        u64::from(self.zeros)
            + self
                .buckets
                .iter()
                .take_while(|&&(i, _)| i <= limit)
                .map(|&(_, c)| u64::from(c))
                .sum::<u64>()
    }
}

/// Merges many sketches to read one quantile, through a dense array reused across
/// calls (no per-merge allocation): what a dashboard reading p99 over many buckets of
/// many checks needs.
#[derive(Default)]
pub struct QuantileReader {
    dense: Vec<u64>,
    offset: i32,
    zeros: u64,
    count: u64,
}

impl QuantileReader {
    /// The quantile `q` of all samples in `sketches`.
    pub fn quantile<'a, I: IntoIterator<Item = &'a Sketch>>(
        &mut self,
        sketches: I,
        q: f64,
    ) -> Option<f64> {
        self.dense.iter_mut().for_each(|c| *c = 0);
        self.zeros = 0;
        self.count = 0;
        for s in sketches {
            self.zeros += u64::from(s.zeros);
            self.count += s.count;
            for &(index, n) in &s.buckets {
                let i = i32::from(index);
                if self.dense.is_empty() {
                    self.offset = i;
                }
                if i < self.offset {
                    let grow = (self.offset - i) as usize;
                    self.dense.splice(0..0, std::iter::repeat_n(0, grow));
                    self.offset = i;
                }
                let at = (i - self.offset) as usize;
                if at >= self.dense.len() {
                    self.dense.resize(at + 1, 0);
                }
                self.dense[at] += u64::from(n);
            }
        }
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1) - 1;
        if rank < self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        for (at, &n) in self.dense.iter().enumerate() {
            seen += n;
            if seen > rank {
                return Some(value_of((self.offset + at as i32) as i16));
            }
        }
        None
    }
}

/// One rollup bucket of a check: a minute, an hour or a day.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bucket {
    pub start_ms: u64,
    pub span_ms: u64,
    pub runs_up: u32,
    pub runs_down: u32,
    pub runs_degraded: u32,
    /// Time the verdict was DOWN (outside maintenance).
    pub downtime_ms: u64,
    /// Time excluded from SLA totals: maintenance, PAUSED, UNKNOWN.
    pub excluded_ms: u64,
    /// Verdict changes into DOWN that began here (outside maintenance).
    pub incidents: u32,
    pub latency: Sketch,
}

impl Bucket {
    pub fn new(start_ms: u64, span_ms: u64) -> Self {
        Bucket {
            start_ms,
            span_ms,
            ..Bucket::default()
        }
    }

    /// Count a run; its latency enters the sketch only when it succeeded (UP or
    /// DEGRADED): a refused connection is fast, not a good response time.
    pub fn add_run(&mut self, status: Status, latency_ms: f64) {
        match status {
            Status::Up => self.runs_up += 1,
            Status::Down => {
                self.runs_down += 1;
                return;
            }
            Status::Degraded => self.runs_degraded += 1,
            _ => return,
        }
        self.latency.add(latency_ms);
    }

    /// Account `ms` of time spent in `status`.
    pub fn add_time(&mut self, status: Status, maintenance: bool, ms: u64) {
        if maintenance || matches!(status, Status::Paused | Status::Unknown) {
            self.excluded_ms += ms;
        } else if status == Status::Down {
            self.downtime_ms += ms;
        }
    }

    /// Fold `other` (a later or equal bucket) into this one, widening the span.
    pub fn merge(&mut self, other: &Bucket) {
        let end = (self.start_ms + self.span_ms).max(other.start_ms + other.span_ms);
        self.start_ms = self.start_ms.min(other.start_ms);
        self.span_ms = end - self.start_ms;
        self.runs_up += other.runs_up;
        self.runs_down += other.runs_down;
        self.runs_degraded += other.runs_degraded;
        self.downtime_ms += other.downtime_ms;
        self.excluded_ms += other.excluded_ms;
        self.incidents += other.incidents;
        self.latency.merge(&other.latency);
    }
}

/// Merge minute buckets into buckets of `span_ms` (an hour, a day), aligned to it.
pub fn roll_up(buckets: &[Bucket], span_ms: u64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for b in buckets {
        let start = b.start_ms - b.start_ms % span_ms;
        match out.last_mut() {
            Some(last) if last.start_ms == start => last.merge(b),
            _ => {
                let mut fresh = Bucket::new(start, span_ms);
                fresh.merge(b);
                fresh.start_ms = start;
                fresh.span_ms = span_ms;
                out.push(fresh);
            }
        }
    }
    out
}

/// Merge many checks' buckets into buckets of `span_ms`, per check: what the store
/// upserts into its hour and day tiers from a batch of minutes (plus the stored partial
/// buckets they extend). The output is sorted by check, then start.
pub fn roll_up_checks(mut buckets: Vec<(u64, Bucket)>, span_ms: u64) -> Vec<(u64, Bucket)> {
    buckets.sort_by_key(|(check, b)| (*check, b.start_ms));
    let mut out = Vec::new();
    for group in buckets.chunk_by(|a, b| a.0 == b.0) {
        let check = group[0].0;
        let own: Vec<Bucket> = group.iter().map(|(_, b)| b.clone()).collect();
        out.extend(roll_up(&own, span_ms).into_iter().map(|b| (check, b)));
    }
    out
}

/// Splits a check's verdict timeline into fixed-width buckets.
#[derive(Clone, Debug)]
pub struct Timeline {
    span_ms: u64,
    status: Status,
    maintenance: bool,
    since_ms: u64,
    open: Bucket,
    /// Whether the open bucket has been given any time or run (flush hands it out).
    open_used: bool,
}

impl Timeline {
    pub fn new(now_ms: u64, span_ms: u64, status: Status) -> Self {
        Timeline {
            span_ms,
            status,
            maintenance: false,
            since_ms: now_ms,
            open: Bucket::new(now_ms - now_ms % span_ms, span_ms),
            open_used: false,
        }
    }

    /// Account the time up to `now_ms`, closing the buckets it passes.
    pub fn advance(&mut self, now_ms: u64, closed: &mut Vec<Bucket>) {
        while self.since_ms < now_ms {
            let end = self.open.start_ms + self.span_ms;
            let until = now_ms.min(end);
            self.open
                .add_time(self.status, self.maintenance, until - self.since_ms);
            self.open_used = true;
            self.since_ms = until;
            if until == end {
                let next = Bucket::new(end, self.span_ms);
                closed.push(std::mem::replace(&mut self.open, next));
                self.open_used = false;
            }
        }
    }

    /// Account the time up to `now_ms` and hand out the open bucket as it stands (at
    /// shutdown, so a part-filled bucket is not lost with the process). Accounting goes
    /// on in a fresh bucket with the same start; the two merge into one when stored.
    pub fn flush(&mut self, now_ms: u64, closed: &mut Vec<Bucket>) {
        self.advance(now_ms, closed);
        if self.open_used {
            let fresh = Bucket::new(self.open.start_ms, self.span_ms);
            closed.push(std::mem::replace(&mut self.open, fresh));
            self.open_used = false;
        }
    }

    /// The verdict changed at `at_ms` (not before the last change).
    pub fn change(&mut self, at_ms: u64, status: Status, closed: &mut Vec<Bucket>) {
        self.advance(at_ms, closed);
        if status == Status::Down && self.status != Status::Down && !self.maintenance {
            self.open.incidents += 1;
            self.open_used = true;
        }
        self.status = status;
    }

    pub fn set_maintenance(&mut self, at_ms: u64, on: bool, closed: &mut Vec<Bucket>) {
        self.advance(at_ms, closed);
        self.maintenance = on;
    }

    pub fn add_run(&mut self, status: Status, latency_ms: f64) {
        self.open_used = true;
        self.open.add_run(status, latency_ms);
    }

    pub fn open(&self) -> &Bucket {
        &self.open
    }
}

/// Uptime % over a run of buckets from time accounting alone (no sketch work): what
/// long-window uptime queries need. `None` when the window has no counted time.
pub fn uptime<'a, I: IntoIterator<Item = &'a Bucket>>(buckets: I) -> Option<f64> {
    let (mut span, mut excluded, mut down) = (0u64, 0u64, 0u64);
    for b in buckets {
        span += b.span_ms;
        excluded += b.excluded_ms;
        down += b.downtime_ms;
    }
    let total = span.saturating_sub(excluded);
    (total > 0).then(|| total.saturating_sub(down) as f64 * 100.0 / total as f64)
}

/// Successful runs with a latency at most `ms` (a latency SLI's good events; the
/// sketch's bucket holding `ms` counts as within).
pub fn runs_within<'a, I: IntoIterator<Item = &'a Bucket>>(buckets: I, ms: f64) -> u64 {
    buckets
        .into_iter()
        .map(|b| b.latency.count_at_most(ms))
        .sum()
}

/// SLA figures over a run of buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub total_ms: u64,
    pub downtime_ms: u64,
    /// `None` when the window has no counted time.
    pub uptime_pct: Option<f64>,
    pub incidents: u32,
    pub mttr_ms: Option<f64>,
    pub mtbf_ms: Option<f64>,
    pub runs: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Apdex(T): satisfied (≤ T) plus half the tolerating (≤ 4T) over all runs;
    /// DOWN runs are frustrated. Percentiles are of successful runs.
    pub apdex: Option<f64>,
}

pub fn figures<'a, I: IntoIterator<Item = &'a Bucket>>(buckets: I, apdex_t_ms: f64) -> Figures {
    let mut all = Bucket::default();
    // Time is what the buckets cover, not the stretch from the first to the last: a gap
    // with no bucket (the server was stopped) is neither uptime nor downtime.
    let mut covered = 0u64;
    for b in buckets {
        covered += b.span_ms;
        all.merge(b);
    }
    let total = covered.saturating_sub(all.excluded_ms);
    let up = total.saturating_sub(all.downtime_ms);
    let runs = u64::from(all.runs_up) + u64::from(all.runs_down) + u64::from(all.runs_degraded);
    let per_incident = |ms: u64| (all.incidents > 0).then(|| ms as f64 / f64::from(all.incidents));
    let apdex = (runs > 0).then(|| {
        // The sketch holds successful runs only; DOWN runs are frustrated.
        let satisfied = all.latency.count_at_most(apdex_t_ms);
        let tolerating = all.latency.count_at_most(4.0 * apdex_t_ms) - satisfied;
        (satisfied as f64 + tolerating as f64 / 2.0) / runs as f64
    });
    Figures {
        total_ms: total,
        downtime_ms: all.downtime_ms,
        uptime_pct: (total > 0).then(|| up as f64 * 100.0 / total as f64),
        incidents: all.incidents,
        mttr_ms: per_incident(all.downtime_ms),
        mtbf_ms: per_incident(up),
        runs,
        p50_ms: all.latency.quantile(0.50),
        p95_ms: all.latency.quantile(0.95),
        p99_ms: all.latency.quantile(0.99),
        apdex,
    }
}

/// An SLO's state over its window.
#[derive(Clone, Debug, PartialEq)]
pub struct SloState {
    /// The SLI as a fraction (0..=1).
    pub sli: f64,
    /// Error budget left, as a fraction of the budget (negative when overspent).
    pub budget_remaining: f64,
    /// How fast the budget burns over the burn window (1.0 = exactly on budget).
    pub burn_rate: f64,
    pub budget_warning: bool,
    pub budget_exhausted: bool,
    pub burn_rate_alert: bool,
}

/// `target` is a fraction (0.999); `good`/`total` count the SLI over the SLO window and
/// over the (shorter) burn-rate window.
pub fn slo(
    target: f64,
    (good, total): (f64, f64),
    (burn_good, burn_total): (f64, f64),
    warn_remaining: f64,
    burn_threshold: f64,
) -> SloState {
    let budget = (1.0 - target).max(f64::EPSILON);
    let sli = if total > 0.0 { good / total } else { 1.0 };
    let burn_sli = if burn_total > 0.0 {
        burn_good / burn_total
    } else {
        1.0
    };
    let budget_remaining = 1.0 - (1.0 - sli) / budget;
    let burn_rate = (1.0 - burn_sli) / budget;
    SloState {
        sli,
        budget_remaining,
        burn_rate,
        budget_warning: budget_remaining <= warn_remaining,
        budget_exhausted: budget_remaining <= 0.0,
        burn_rate_alert: burn_rate >= burn_threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_precomputed_log_matches_alpha() {
        assert!((LN_GAMMA - gamma().ln()).abs() < 1e-15);
    }

    #[test]
    fn an_empty_sketch_has_no_quantiles() {
        let s = Sketch::default();
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.count_at_most(10.0), 0);
    }

    #[test]
    fn time_is_split_at_bucket_edges_and_incidents_counted_once() {
        let mut t = Timeline::new(30_000, 60_000, Status::Up);
        let mut closed = Vec::new();
        t.change(50_000, Status::Down, &mut closed);
        t.change(70_000, Status::Up, &mut closed);
        t.advance(120_000, &mut closed);
        assert_eq!(closed.len(), 2);
        assert_eq!(
            (
                closed[0].start_ms,
                closed[0].downtime_ms,
                closed[0].incidents
            ),
            (0, 10_000, 1)
        );
        // The first 30 s of the first minute were before the timeline began: excluded
        // from nothing, simply not counted as up or down.
        assert_eq!(
            (
                closed[1].start_ms,
                closed[1].downtime_ms,
                closed[1].incidents
            ),
            (60_000, 10_000, 0)
        );
        let f = figures(&closed, 100.0);
        assert_eq!(f.downtime_ms, 20_000);
        assert_eq!(f.incidents, 1);
    }

    #[test]
    fn a_flushed_bucket_and_the_rest_of_its_minute_add_up_to_the_whole() {
        let (mut flushed, mut whole) = (
            Timeline::new(5_000, 60_000, Status::Up),
            Timeline::new(5_000, 60_000, Status::Up),
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (t, c) in [(&mut flushed, &mut a), (&mut whole, &mut b)] {
            t.add_run(Status::Up, 12.0);
            t.change(20_000, Status::Down, c);
            t.add_run(Status::Down, 3.0);
        }
        flushed.flush(30_000, &mut a);
        assert_eq!(a.len(), 1, "the open bucket as it stands");
        assert_eq!(
            (a[0].start_ms, a[0].downtime_ms, a[0].incidents),
            (0, 10_000, 1)
        );
        flushed.flush(30_000, &mut a); // nothing new since: nothing more
        assert_eq!(a.len(), 1);
        for (t, c) in [(&mut flushed, &mut a), (&mut whole, &mut b)] {
            t.change(45_000, Status::Up, c);
            t.add_run(Status::Up, 7.0);
            t.advance(60_000, c);
        }
        // Stored, the pieces of one minute merge into what one bucket would have held.
        let merged = roll_up(&a, 60_000);
        assert_eq!(merged.len(), 1);
        let (m, w) = (&merged[0], &b[0]);
        assert_eq!(
            (
                m.start_ms,
                m.span_ms,
                m.runs_up,
                m.runs_down,
                m.downtime_ms,
                m.incidents
            ),
            (
                w.start_ms,
                w.span_ms,
                w.runs_up,
                w.runs_down,
                w.downtime_ms,
                w.incidents
            )
        );
        assert_eq!(m.latency.count, w.latency.count);
    }

    #[test]
    fn maintenance_and_paused_time_is_excluded() {
        let mut t = Timeline::new(0, 60_000, Status::Up);
        let mut closed = Vec::new();
        t.set_maintenance(10_000, true, &mut closed);
        t.change(20_000, Status::Down, &mut closed);
        t.set_maintenance(30_000, false, &mut closed);
        t.change(40_000, Status::Paused, &mut closed);
        t.advance(60_000, &mut closed);
        let b = &closed[0];
        assert_eq!(
            (b.downtime_ms, b.excluded_ms, b.incidents),
            (10_000, 40_000, 0)
        );
        let f = figures(&closed, 100.0);
        assert_eq!(f.total_ms, 20_000);
        assert!((f.uptime_pct.unwrap() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn apdex_and_slo_arithmetic() {
        let mut b = Bucket::new(0, 60_000);
        for ms in [10.0, 20.0, 30.0, 300.0] {
            b.add_run(Status::Up, ms);
        }
        b.add_run(Status::Down, 5.0);
        // T = 100: 3 satisfied, 1 tolerating (≤ 400), 1 frustrated (DOWN).
        assert!((figures([&b], 100.0).apdex.unwrap() - 0.7).abs() < 1e-9);
        let s = slo(0.99, (995.0, 1000.0), (90.0, 100.0), 0.25, 2.0);
        assert!((s.budget_remaining - 0.5).abs() < 1e-9);
        assert!((s.burn_rate - 10.0).abs() < 1e-9);
        assert!(!s.budget_warning && !s.budget_exhausted && s.burn_rate_alert);
        let s = slo(0.99, (980.0, 1000.0), (1.0, 1.0), 0.25, 2.0);
        assert!(s.budget_exhausted && s.budget_warning && !s.burn_rate_alert);
    }

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1) - 1;
        sorted[rank]
    }

    proptest! {
        #[test]
        fn sketch_quantiles_are_within_one_percent(
            values in prop::collection::vec(0.01f64..600_000.0, 1..500),
            q in 0.0f64..=1.0,
        ) {
            let mut s = Sketch::default();
            for &v in &values {
                s.add(v);
            }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let exact = exact_quantile(&sorted, q);
            let got = s.quantile(q).unwrap();
            prop_assert!((got - exact).abs() <= ALPHA * exact * (1.0 + 1e-9), "{got} vs {exact}");
        }

        #[test]
        fn the_quantile_reader_agrees_with_a_merged_sketch(
            parts in prop::collection::vec(prop::collection::vec(0.0f64..100_000.0, 0..50), 0..8),
            q in 0.0f64..=1.0,
        ) {
            let mut merged = Sketch::default();
            let sketches: Vec<Sketch> = parts.iter().map(|p| {
                let mut s = Sketch::default();
                for &v in p { s.add(v); }
                merged.merge(&s);
                s
            }).collect();
            let mut reader = QuantileReader::default();
            // Twice: the reader's buffer is reused between calls.
            for _ in 0..2 {
                prop_assert_eq!(reader.quantile(&sketches, q), merged.quantile(q));
            }
        }

        #[test]
        fn sketches_survive_their_byte_form(values in prop::collection::vec(0.0f64..1e6, 0..300)) {
            let mut s = Sketch::default();
            for &v in &values { s.add(v); }
            prop_assert_eq!(Sketch::from_bytes(&s.to_bytes()), Some(s));
        }

        #[test]
        fn merging_sketches_is_adding_the_samples(
            a in prop::collection::vec(0.0f64..10_000.0, 0..200),
            b in prop::collection::vec(0.0f64..10_000.0, 0..200),
        ) {
            let (mut sa, mut sb, mut all) = (Sketch::default(), Sketch::default(), Sketch::default());
            for &v in &a { sa.add(v); all.add(v); }
            for &v in &b { sb.add(v); all.add(v); }
            sa.merge(&sb);
            prop_assert_eq!(sa, all);
        }

        /// The reference: integrate the timeline directly, interval by interval.
        #[test]
        fn buckets_account_every_millisecond(
            start in 0u64..200_000,
            changes in prop::collection::vec((1u64..90_000, 0u8..6, any::<bool>()), 0..40),
            tail in 1u64..200_000,
        ) {
            let span = 60_000;
            let mut t = Timeline::new(start, span, Status::Up);
            let mut closed = Vec::new();
            let (mut now, mut status, mut maint) = (start, Status::Up, false);
            let (mut down, mut excluded, mut incidents) = (0u64, 0u64, 0u32);
            for (step, code, toggle) in changes {
                let next = now + step;
                if maint || matches!(status, Status::Paused | Status::Unknown) {
                    excluded += step;
                } else if status == Status::Down {
                    down += step;
                }
                now = next;
                if toggle {
                    maint = !maint;
                    t.set_maintenance(now, maint, &mut closed);
                }
                let new = Status::try_from(code).unwrap();
                if new == Status::Down && status != Status::Down && !maint {
                    incidents += 1;
                }
                status = new;
                t.change(now, new, &mut closed);
            }
            if maint || matches!(status, Status::Paused | Status::Unknown) {
                excluded += tail;
            } else if status == Status::Down {
                down += tail;
            }
            now += tail;
            t.advance(now, &mut closed);
            let mut all: Vec<Bucket> = closed.clone();
            all.push(t.open().clone());
            prop_assert!(all.windows(2).all(|w| w[0].start_ms + span == w[1].start_ms));
            prop_assert_eq!(all.iter().map(|b| b.downtime_ms).sum::<u64>(), down);
            prop_assert_eq!(all.iter().map(|b| b.excluded_ms).sum::<u64>(), excluded);
            prop_assert_eq!(all.iter().map(|b| b.incidents).sum::<u32>(), incidents);
            // Hours merged from minutes hold the same totals.
            let hours = roll_up(&all, 3_600_000);
            prop_assert_eq!(hours.iter().map(|b| b.downtime_ms).sum::<u64>(), down);
            prop_assert_eq!(hours.iter().map(|b| b.incidents).sum::<u32>(), incidents);
        }
    }

    #[test]
    fn rolling_up_many_checks_keeps_each_check_apart() {
        let mut a = Bucket::new(60_000, 60_000);
        a.runs_up = 2;
        let mut b = Bucket::new(120_000, 60_000);
        b.runs_down = 1;
        b.downtime_ms = 5;
        let mut c = Bucket::new(60_000, 60_000);
        c.runs_up = 7;
        let hours = roll_up_checks(vec![(2, b), (1, c), (2, a)], 3_600_000);
        assert_eq!(hours.len(), 2);
        assert_eq!((hours[0].0, hours[0].1.runs_up), (1, 7));
        let (check, h) = &hours[1];
        assert_eq!((*check, h.start_ms, h.span_ms), (2, 0, 3_600_000));
        assert_eq!((h.runs_up, h.runs_down, h.downtime_ms), (2, 1, 5));
    }

    #[test]
    fn a_gap_between_buckets_is_neither_uptime_nor_downtime() {
        let mut first = Bucket::new(0, 60_000);
        first.downtime_ms = 30_000;
        first.incidents = 1;
        let later = Bucket::new(3_600_000, 60_000);
        let f = figures([&first, &later], 100.0);
        assert_eq!((f.total_ms, f.downtime_ms), (120_000, 30_000));
        assert!((f.uptime_pct.unwrap() - 75.0).abs() < 1e-9);
        assert_eq!((f.mttr_ms, f.mtbf_ms), (Some(30_000.0), Some(90_000.0)));
    }
}
