//! Timing-wheel cost per operation (insert, cancel, reschedule, expire) at 10k, 100k and
//! 1M pending timers. A program, not a test: prints a table, or one JSON object as the
//! last line with `--json`. Run through `bench/wheel.py` or `cargo bench --bench wheel`.

mod support;

use std::hint::black_box;
use std::time::Instant;

use _core::wheel::{TimerKey, TimerWheel};
use support::Rng;

const START: u64 = 1_700_000_000_000;
const HOUR_MS: u64 = 3_600_000;
const MINUTE_MS: u64 = 60_000;
const OPS: usize = 200_000;

fn filled(pending: usize, rng: &mut Rng) -> (TimerWheel<u64>, Vec<TimerKey>) {
    let mut wheel = TimerWheel::new(START);
    wheel.reserve(pending + OPS);
    let keys = (0..pending)
        .map(|i| wheel.insert(START + 1 + rng.next() % HOUR_MS, i as u64))
        .collect();
    (wheel, keys)
}

fn ns_per(ops: usize, start: Instant) -> f64 {
    start.elapsed().as_nanos() as f64 / ops as f64
}

/// Expire every pending timer, moving the clock the way the engine's clock thread
/// does: straight to the next expiration each time, so the figure includes every
/// cascade and every wake-up. Deadlines are spread uniformly over `horizon_ms`.
fn expire(pending: usize, horizon_ms: u64, rng: &mut Rng) -> f64 {
    let mut wheel = TimerWheel::new(START);
    wheel.reserve(pending);
    for i in 0..pending {
        wheel.insert(START + 1 + rng.next() % horizon_ms, i as u64);
    }
    let mut out = Vec::with_capacity(4_096);
    let mut fired = 0usize;
    let t = Instant::now();
    while let Some(at) = wheel.next_expiration() {
        wheel.advance(at, &mut out);
        fired += out.len();
        out.clear();
    }
    let ns = ns_per(fired.max(1), t);
    assert_eq!(fired, pending, "every timer fires exactly once");
    ns
}

fn measure(pending: usize) -> [f64; 5] {
    let mut rng = Rng(0x5EED ^ pending as u64);
    let (mut wheel, keys) = filled(pending, &mut rng);
    let deadlines: Vec<u64> = (0..OPS).map(|_| START + 1 + rng.next() % HOUR_MS).collect();

    let t = Instant::now();
    let new_keys: Vec<TimerKey> = deadlines
        .iter()
        .enumerate()
        .map(|(i, &d)| wheel.insert(d, i as u64))
        .collect();
    let insert = ns_per(OPS, t);

    let t = Instant::now();
    for &key in &new_keys {
        black_box(wheel.cancel(key));
    }
    let cancel = ns_per(OPS, t);

    let picks: Vec<TimerKey> = (0..OPS)
        .map(|_| keys[rng.next() as usize % keys.len()])
        .collect();
    let t = Instant::now();
    for (&key, &d) in picks.iter().zip(&deadlines) {
        black_box(wheel.reschedule(key, d));
    }
    let reschedule = ns_per(OPS, t);
    drop(wheel);

    let expire_minute = expire(pending, MINUTE_MS, &mut rng);
    let expire_hour = expire(pending, HOUR_MS, &mut rng);
    [insert, cancel, reschedule, expire_minute, expire_hour]
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let sizes = [10_000usize, 100_000, 1_000_000];
    let rows: Vec<(usize, [f64; 5])> = sizes.iter().map(|&n| (n, measure(n))).collect();
    println!("timing wheel: ns per operation ({OPS} ops per figure, deadlines within 1 h;");
    println!("  expire: every timer fired, deadlines spread over 60 s or over 1 h)");
    println!(
        "{:>10} {:>10} {:>10} {:>12} {:>12} {:>12}",
        "pending", "insert", "cancel", "reschedule", "expire 60s", "expire 1h"
    );
    for (n, [i, c, r, em, eh]) in &rows {
        println!("{n:>10} {i:>10.1} {c:>10.1} {r:>12.1} {em:>12.1} {eh:>12.1}");
    }
    if json {
        let body: Vec<String> = rows
            .iter()
            .map(|(n, [i, c, r, em, eh])| {
                format!(
                    "\"{n}\": {{\"insert_ns\": {i:.2}, \"cancel_ns\": {c:.2}, \"reschedule_ns\": {r:.2}, \"expire_60s_ns\": {em:.2}, \"expire_1h_ns\": {eh:.2}}}"
                )
            })
            .collect();
        println!(
            "{{\"bench\": \"wheel\", \"ops\": {OPS}, \"pending\": {{{}}}}}",
            body.join(", ")
        );
    }
}
