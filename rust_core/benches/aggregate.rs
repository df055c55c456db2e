//! Aggregation throughput: results folded into per-source verdicts and minute rollups
//! per second on one core, and the time to read 24 h / 7 d / 30 d / 90 d uptime and the
//! 24 h p99 latency of 10,000 checks from tiered rollups (hours for 24 h, days for 7 d,
//! 30 d and 90 d). A program, not a test: a table, or one JSON object last with
//! `--json`. Run through `bench/aggregate.py` or `cargo bench --bench aggregate`.

mod support;

use std::hint::black_box;
use std::time::Instant;

use _core::aggregate::{Policy, Verdicts};
use _core::result::{ProbeResult, Status};
use _core::stats::{roll_up, uptime, Bucket, QuantileReader, Sketch, Timeline};
use support::Rng;

const CHECKS: u64 = 10_000;
const SOURCES: u32 = 3;
const RESULTS: u64 = 10_000_000;
const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 86_400_000;

/// Fold `RESULTS` results (10k checks × 3 sources, ~2 % failures) into verdicts and
/// each check's minute timeline, as the core does per result.
fn fold_rate() -> (f64, usize) {
    let mut rng = Rng(7);
    let start_ms = 1_700_000_000_000u64;
    let mut verdicts = Verdicts::default();
    let mut timelines: Vec<Timeline> = (0..CHECKS)
        .map(|id| {
            verdicts.configure(id, Policy::default(), start_ms * 1_000);
            Timeline::new(start_ms, MINUTE, Status::Unknown)
        })
        .collect();
    let results: Vec<ProbeResult> = (0..RESULTS)
        .map(|i| {
            let status = if rng.next() % 50 == 0 {
                Status::Down
            } else {
                Status::Up
            };
            ProbeResult {
                source: (rng.next() % u64::from(SOURCES)) as u32,
                started_us: (start_ms + i / 200) * 1_000,
                latency_us: 1_000 + rng.next() % 200_000,
                status,
                ..ProbeResult::new(rng.next() % CHECKS)
            }
        })
        .collect();
    let mut closed = Vec::new();
    let mut transitions = 0usize;
    let t = Instant::now();
    for r in &results {
        let timeline = &mut timelines[r.check_id as usize];
        if let Some(change) = verdicts.fold(r) {
            timeline.change(change.at_us / 1_000, change.current, &mut closed);
            transitions += 1;
        }
        timeline.add_run(r.status, r.latency_us as f64 / 1_000.0);
        if closed.len() >= 65_536 {
            // Closed buckets are handed to the store in batches, as the engine does.
            black_box(&closed);
            closed.clear();
        }
    }
    let per_s = RESULTS as f64 / t.elapsed().as_secs_f64();
    black_box(&closed);
    (per_s, transitions)
}

fn bucket(rng: &mut Rng, start_ms: u64, span_ms: u64) -> Bucket {
    let mut b = Bucket::new(start_ms, span_ms);
    b.runs_up = (span_ms / MINUTE) as u32;
    b.downtime_ms = if rng.next() % 100 == 0 { 30_000 } else { 0 };
    let mut sketch = Sketch::default();
    for _ in 0..20 {
        sketch.add(1.0 + (rng.next() % 300_000) as f64 / 1_000.0);
    }
    b.latency = sketch;
    b
}

/// Tiered rollups of one check: the last 24 hours and 7 days of hour buckets, 90 days
/// of day buckets (merged from the hours as the store would).
struct Tiers {
    hours: Vec<Bucket>,
    days: Vec<Bucket>,
}

fn query_time() -> (f64, f64) {
    let mut rng = Rng(11);
    let now = 1_700_000_000_000u64 - 1_700_000_000_000 % DAY;
    let tiers: Vec<Tiers> = (0..CHECKS)
        .map(|_| {
            let hours: Vec<Bucket> = (0..24 * 7)
                .map(|h| bucket(&mut rng, now - (24 * 7 - h) * HOUR, HOUR))
                .collect();
            let mut days = roll_up(&hours, DAY);
            while days.len() < 90 {
                let first = days.first().map_or(now, |d| d.start_ms);
                days.insert(0, bucket(&mut rng, first - DAY, DAY));
            }
            Tiers { hours, days }
        })
        .collect();
    let t = Instant::now();
    let mut checksum = 0.0;
    let mut reader = QuantileReader::default();
    for tier in &tiers {
        let day = &tier.hours[tier.hours.len() - 24..];
        let u24 = uptime(day).unwrap_or(100.0);
        let u7 = uptime(&tier.days[tier.days.len() - 7..]).unwrap_or(100.0);
        let u30 = uptime(&tier.days[tier.days.len() - 30..]).unwrap_or(100.0);
        let u90 = uptime(&tier.days).unwrap_or(100.0);
        let p99 = reader.quantile(day.iter().map(|b| &b.latency), 0.99);
        checksum += u24 + u7 + u30 + u90 + p99.unwrap_or(0.0);
    }
    let ms = t.elapsed().as_secs_f64() * 1_000.0;
    (ms, black_box(checksum))
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let (per_s, transitions) = fold_rate();
    let (query_ms, _) = query_time();
    println!("aggregation: one core, {CHECKS} checks x {SOURCES} sources");
    println!("  results folded into verdicts and rollups: {per_s:>14.0} /s ({RESULTS} results, {transitions} transitions)");
    println!("  24h/7d/30d/90d uptime + 24h p99, {CHECKS} checks: {query_ms:>8.2} ms");
    if json {
        println!(
            "{{\"bench\": \"aggregate\", \"checks\": {CHECKS}, \"sources\": {SOURCES}, \"results\": {RESULTS}, \"folds_per_s\": {per_s:.0}, \"transitions\": {transitions}, \"query_ms\": {query_ms:.3}}}"
        );
    }
}
