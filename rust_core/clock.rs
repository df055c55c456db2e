//! The core's one notion of "now": wall-clock microseconds derived from a monotonic
//! clock. The engine's clock thread schedules by it and the executor stamps each probe's
//! start with it; neither owns it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock microseconds derived from a monotonic clock, so a wall-clock step while
/// running never makes the schedule jump or fire twice.
#[derive(Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_us: u64,
}

impl Clock {
    pub fn new() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            origin: Instant::now(),
            origin_us: since_epoch.as_micros() as u64,
        }
    }

    pub fn now_us(&self) -> u64 {
        self.origin_us + self.origin.elapsed().as_micros() as u64
    }

    /// The monotonic instant at which this clock reads `at_ms` (the origin for any time
    /// before the clock was started), to sleep until a wall-clock time.
    pub fn instant_at_ms(&self, at_ms: u64) -> Instant {
        self.origin + Duration::from_micros((at_ms * 1_000).saturating_sub(self.origin_us))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_wall_clock_and_never_goes_back() {
        let clock = Clock::new();
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let first = clock.now_us();
        // Read after the wall clock, from an origin taken before it.
        assert!(first >= clock.origin_us && clock.origin_us <= wall_us);
        let mut last = first;
        for _ in 0..1_000 {
            let now = clock.now_us();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn instant_at_ms_maps_wall_time_back_to_the_monotonic_clock() {
        let clock = Clock::new();
        let origin_ms = clock.origin_us / 1_000;
        // Times before the origin map to the origin itself.
        assert_eq!(clock.instant_at_ms(0), clock.origin);
        assert_eq!(clock.instant_at_ms(origin_ms), clock.origin);
        let later = clock.instant_at_ms(origin_ms + 250);
        let gap = later - clock.origin;
        assert!(gap <= Duration::from_millis(250));
        assert!(gap > Duration::from_millis(249));
    }
}
