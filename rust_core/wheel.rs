//! Hierarchical timing wheel: 1 ms ticks, six levels of 64 slots (about 2.2 years of
//! range), a `u64` occupancy bitmap per level so the next expiry is found with
//! trailing-zero counts and empty ticks cost nothing.
//!
//! Layout, chosen for a million pending timers:
//! - each slot is a vector of 16-byte items `(deadline, index, epoch)`, so cascading a
//!   slot into lower levels reads and writes contiguous memory only and never touches
//!   the timers themselves;
//! - the timers (deadline, payload, generation, epoch) live in a slab addressed by
//!   index; a key is `(index, generation)`;
//! - cancel and reschedule are lazy: they bump the timer's epoch (and push a new item
//!   for a reschedule), leaving the old item behind; an item whose epoch is not the
//!   timer's current one is dropped when its slot fires. Stale items are compacted
//!   away once they outnumber live timers, which bounds memory and keeps every
//!   operation amortised O(1).

const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// Stale items tolerated before a compaction, on top of one per live timer.
const STALE_SLACK: usize = 1_024;

/// Furthest distance from "now" a timer can be placed at exactly; later deadlines are
/// parked in the top level and cascaded again when their slot comes round.
pub const MAX_SPAN_MS: u64 = (1 << (SLOT_BITS * LEVELS as u32)) - 1;

/// Handle to a pending timer. Stale handles (after fire or cancel) are detected by the
/// generation and ignored, so a caller can never cancel somebody else's timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

#[derive(Clone, Copy)]
struct Entry<T: Copy> {
    deadline: u64,
    value: T,
    /// Odd while pending, even while free; bumped on every allocation and release.
    generation: u32,
    /// Bumped on every insert and reschedule; only the item carrying the current epoch
    /// may fire.
    epoch: u32,
}

impl<T: Copy> Entry<T> {
    fn pending(&self) -> bool {
        self.generation & 1 == 1
    }
}

#[derive(Clone, Copy)]
struct Item {
    deadline: u64,
    index: u32,
    epoch: u32,
}

struct Level {
    occupied: u64,
    slots: [Vec<Item>; SLOTS],
}

impl Level {
    fn new() -> Self {
        Level {
            occupied: 0,
            slots: std::array::from_fn(|_| Vec::new()),
        }
    }
}

/// The wheel. `T` is the small payload carried by each timer (a check id, say).
pub struct TimerWheel<T: Copy> {
    elapsed: u64,
    levels: [Level; LEVELS],
    slab: Vec<Entry<T>>,
    free: Vec<u32>,
    scratch: Vec<Item>,
    len: usize,
    stale: usize,
}

fn slot_range(level: usize) -> u64 {
    1 << (SLOT_BITS as usize * level)
}

fn level_range(level: usize) -> u64 {
    1 << (SLOT_BITS as usize * (level + 1))
}

/// The level whose slots distinguish `when` from `elapsed`: the highest 6-bit digit in
/// which the two differ.
fn level_for(elapsed: u64, when: u64) -> usize {
    let mut masked = (elapsed ^ when) | SLOT_MASK;
    if masked >= MAX_SPAN_MS {
        masked = MAX_SPAN_MS - 1;
    }
    let significant = 63 - masked.leading_zeros() as usize;
    significant / SLOT_BITS as usize
}

impl<T: Copy> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new(0)
    }
}

impl<T: Copy> TimerWheel<T> {
    /// A wheel whose clock starts at `now` (ms, any epoch as long as it is used
    /// consistently).
    pub fn new(now: u64) -> Self {
        TimerWheel {
            elapsed: now,
            levels: std::array::from_fn(|_| Level::new()),
            slab: Vec::new(),
            free: Vec::new(),
            scratch: Vec::new(),
            len: 0,
            stale: 0,
        }
    }

    /// The time up to which the wheel has been advanced.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pre-allocate room for `additional` more timers.
    pub fn reserve(&mut self, additional: usize) {
        self.slab
            .reserve(additional.saturating_sub(self.free.len()));
    }

    /// Schedule `value` to fire at `deadline`. A deadline at or before the wheel's
    /// clock fires on the next `advance`.
    pub fn insert(&mut self, deadline: u64, value: T) -> TimerKey {
        let index = if let Some(index) = self.free.pop() {
            let entry = &mut self.slab[index as usize];
            entry.deadline = deadline;
            entry.value = value;
            entry.generation = entry.generation.wrapping_add(1);
            entry.epoch = entry.epoch.wrapping_add(1);
            index
        } else {
            let index = u32::try_from(self.slab.len()).expect("more than 2^32 timers");
            self.slab.push(Entry {
                deadline,
                value,
                generation: 1,
                epoch: 0,
            });
            index
        };
        let Entry {
            generation, epoch, ..
        } = self.slab[index as usize];
        self.push(Item {
            deadline,
            index,
            epoch,
        });
        self.len += 1;
        TimerKey { index, generation }
    }

    /// Remove a pending timer and return its payload; `None` if it already fired or was
    /// cancelled.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        if !self.is_pending(key) {
            return None;
        }
        let value = self.release(key.index);
        self.stale += 1;
        self.maybe_compact();
        Some(value)
    }

    /// Move a pending timer to a new deadline; false if the key is stale.
    pub fn reschedule(&mut self, key: TimerKey, deadline: u64) -> bool {
        if !self.is_pending(key) {
            return false;
        }
        let entry = &mut self.slab[key.index as usize];
        entry.deadline = deadline;
        entry.epoch = entry.epoch.wrapping_add(1);
        let epoch = entry.epoch;
        self.push(Item {
            deadline,
            index: key.index,
            epoch,
        });
        self.stale += 1;
        self.maybe_compact();
        true
    }

    /// Deadline of a pending timer.
    pub fn deadline(&self, key: TimerKey) -> Option<u64> {
        self.is_pending(key)
            .then(|| self.slab[key.index as usize].deadline)
    }

    fn is_pending(&self, key: TimerKey) -> bool {
        self.slab
            .get(key.index as usize)
            .is_some_and(|e| e.generation == key.generation && e.pending())
    }

    /// The earliest time at which `advance` would return something, if any timer is
    /// pending. Never later than the earliest deadline, possibly earlier (a cascade
    /// point, or a slot holding only cancelled items), never earlier than the clock.
    pub fn next_expiration(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        self.next_slot().map(|(_, _, at)| at)
    }

    /// Advance the clock to `now`, appending every timer whose deadline is `<= now` to
    /// `out` as `(deadline, value)` in deadline order. Never fires early.
    pub fn advance(&mut self, now: u64, out: &mut Vec<(u64, T)>) {
        let start = out.len();
        let mut overdue = false;
        while let Some((level, slot, at)) = self.next_slot() {
            if at > now {
                break;
            }
            self.elapsed = self.elapsed.max(at);
            let mut items = std::mem::take(&mut self.scratch);
            std::mem::swap(&mut items, &mut self.levels[level].slots[slot]);
            self.levels[level].occupied &= !(1 << slot);
            for &item in &items {
                if item.deadline > self.elapsed {
                    // PERF: cascading moves the item only; the timer is not touched.
                    self.push(item);
                    continue;
                }
                let entry = &self.slab[item.index as usize];
                if entry.epoch != item.epoch || !entry.pending() {
                    self.stale -= 1;
                    continue;
                }
                overdue |= item.deadline < at;
                let value = self.release(item.index);
                out.push((item.deadline, value));
            }
            items.clear();
            // Hand the emptied vector back to the slot so its capacity is reused.
            if self.levels[level].slots[slot].is_empty() {
                std::mem::swap(&mut items, &mut self.levels[level].slots[slot]);
            }
            self.scratch = items;
        }
        self.elapsed = self.elapsed.max(now);
        if overdue {
            // Only timers inserted with a past deadline can arrive out of order; the
            // sort is linear on the otherwise sorted run.
            out[start..].sort_by_key(|&(deadline, _)| deadline);
        }
    }

    /// `(level, slot, time the slot is due)` of the earliest occupied slot.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        for (level, lvl) in self.levels.iter().enumerate() {
            if lvl.occupied == 0 {
                continue;
            }
            let now_slot = ((self.elapsed >> (SLOT_BITS as usize * level)) & SLOT_MASK) as u32;
            // The top level is a ring: its current slot holds only parked timers a
            // whole rotation ahead, so the search starts just after it.
            let first = if level == LEVELS - 1 {
                (now_slot + 1) % SLOTS as u32
            } else {
                now_slot
            };
            let rotated = lvl.occupied.rotate_right(first);
            let slot = ((rotated.trailing_zeros() + first) % SLOTS as u32) as usize;
            let level_start = self.elapsed & !(level_range(level) - 1);
            let mut at = level_start + slot as u64 * slot_range(level);
            if level > 0 && at <= self.elapsed {
                // Only the top level wraps: timers parked beyond the wheel's span sit
                // in a slot "behind" now, which really is one rotation ahead.
                debug_assert_eq!(level, LEVELS - 1);
                at += level_range(level);
            }
            return Some((level, slot, at.max(self.elapsed)));
        }
        None
    }

    fn push(&mut self, item: Item) {
        let (level, slot) = if item.deadline <= self.elapsed {
            (0, (self.elapsed & SLOT_MASK) as usize)
        } else {
            let when = item.deadline.min(self.elapsed + MAX_SPAN_MS);
            let level = level_for(self.elapsed, when);
            let slot = ((when >> (SLOT_BITS as usize * level)) & SLOT_MASK) as usize;
            (level, slot)
        };
        let lvl = &mut self.levels[level];
        lvl.slots[slot].push(item);
        lvl.occupied |= 1 << slot;
    }

    fn release(&mut self, index: u32) -> T {
        let entry = &mut self.slab[index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(index);
        self.len -= 1;
        entry.value
    }

    fn maybe_compact(&mut self) {
        if self.stale > self.len + STALE_SLACK {
            self.compact();
        }
    }

    /// Drop every stale item; O(items), run only after as many stale items as live
    /// timers have piled up, so amortised O(1) per cancel or reschedule.
    fn compact(&mut self) {
        let slab = &self.slab;
        for lvl in &mut self.levels {
            for (slot, items) in lvl.slots.iter_mut().enumerate() {
                items.retain(|item| {
                    let e = &slab[item.index as usize];
                    e.epoch == item.epoch && e.pending()
                });
                if items.is_empty() {
                    lvl.occupied &= !(1 << slot);
                    *items = Vec::new();
                }
            }
        }
        self.stale = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};

    #[test]
    fn a_pending_timer_costs_at_most_64_bytes() {
        // The timer plus its slot item, with room for the slot vector's slack.
        let per_timer = std::mem::size_of::<Entry<u64>>() + std::mem::size_of::<Item>();
        assert_eq!(per_timer, 40);
        assert!(per_timer + std::mem::size_of::<Item>() <= 64);
    }

    #[test]
    fn fires_at_its_deadline_and_not_before() {
        let mut w = TimerWheel::new(1_000);
        w.insert(1_250, 7u64);
        let mut out = Vec::new();
        w.advance(1_249, &mut out);
        assert!(out.is_empty());
        w.advance(1_250, &mut out);
        assert_eq!(out, vec![(1_250, 7)]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_deadline_a_year_away_fires_on_time() {
        let year = 365 * 24 * 3_600 * 1_000;
        let start = 1_700_000_000_123;
        let mut w = TimerWheel::new(start);
        w.insert(start + year, 1u64);
        let mut out = Vec::new();
        w.advance(start + year - 1, &mut out);
        assert!(out.is_empty());
        assert_eq!(w.next_expiration().map(|t| t <= start + year), Some(true));
        w.advance(start + year, &mut out);
        assert_eq!(out, vec![(start + year, 1)]);
    }

    #[test]
    fn deadlines_beyond_the_span_wait_in_the_top_level() {
        let mut w = TimerWheel::new(5);
        let far = 5 + 3 * MAX_SPAN_MS;
        w.insert(far, 1u32);
        let mut out = Vec::new();
        w.advance(far - 1, &mut out);
        assert!(out.is_empty());
        w.advance(far, &mut out);
        assert_eq!(out, vec![(far, 1)]);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_advance_in_order() {
        let mut w = TimerWheel::new(10_000);
        w.insert(9_000, 1u32);
        w.insert(5_000, 2);
        w.insert(10_000, 3);
        let mut out = Vec::new();
        w.advance(10_000, &mut out);
        assert_eq!(out, vec![(5_000, 2), (9_000, 1), (10_000, 3)]);
    }

    #[test]
    fn cancel_and_stale_keys() {
        let mut w = TimerWheel::new(0);
        let a = w.insert(100, 1u32);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None);
        let b = w.insert(100, 2);
        // The slab slot is reused, but the old key must not reach the new timer.
        assert_eq!(w.cancel(a), None);
        assert!(!w.reschedule(a, 5));
        assert_eq!(w.deadline(b), Some(100));
    }

    #[test]
    fn cancelled_and_rescheduled_items_do_not_pile_up() {
        let mut w = TimerWheel::new(0);
        let keys: Vec<TimerKey> = (0..10u64).map(|i| w.insert(1_000_000 + i, i)).collect();
        for round in 0..100_000u64 {
            let key = keys[(round % 10) as usize];
            assert!(w.reschedule(key, 1_000_000 + round));
        }
        let items: usize = w
            .levels
            .iter()
            .flat_map(|l| l.slots.iter())
            .map(Vec::len)
            .sum();
        assert!(items <= 10 + STALE_SLACK + 1, "{items} items for 10 timers");
        let mut out = Vec::new();
        w.advance(u64::MAX / 2, &mut out);
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn next_expiration_skips_empty_ticks() {
        let mut w = TimerWheel::new(0);
        assert_eq!(w.next_expiration(), None);
        w.insert(70_000, 1u32);
        let at = w.next_expiration().unwrap();
        assert!(at > 0 && at <= 70_000);
        let mut out = Vec::new();
        // Jumping straight to the deadline visits only occupied slots.
        w.advance(70_000, &mut out);
        assert_eq!(out, vec![(70_000, 1)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Cancel(usize),
        Reschedule(usize, u64),
        Advance(u64),
    }

    fn delay() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => 0u64..70,
            3 => 0u64..5_000,
            2 => 0u64..400_000,
            1 => 0u64..(3 * MAX_SPAN_MS),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => delay().prop_map(Op::Insert),
            1 => any::<usize>().prop_map(Op::Cancel),
            1 => (any::<usize>(), delay()).prop_map(|(i, d)| Op::Reschedule(i, d)),
            3 => delay().prop_map(Op::Advance),
        ]
    }

    /// The reference: a binary heap of (deadline, id) with lazy deletion.
    #[derive(Default)]
    struct Reference {
        heap: BinaryHeap<Reverse<(u64, u64, u64)>>,
        live: HashMap<u64, (u64, u64)>,
        version: u64,
    }

    impl Reference {
        fn insert(&mut self, id: u64, deadline: u64) {
            self.version += 1;
            self.live.insert(id, (deadline, self.version));
            self.heap.push(Reverse((deadline, id, self.version)));
        }
        fn remove(&mut self, id: u64) -> bool {
            self.live.remove(&id).is_some()
        }
        fn advance(&mut self, now: u64) -> Vec<(u64, u64)> {
            let mut out = Vec::new();
            while let Some(&Reverse((deadline, id, version))) = self.heap.peek() {
                if deadline > now {
                    break;
                }
                self.heap.pop();
                if self.live.get(&id) == Some(&(deadline, version)) {
                    self.live.remove(&id);
                    out.push((deadline, id));
                }
            }
            out
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn behaves_like_a_binary_heap(start in 0u64..(1 << 45), ops in prop::collection::vec(op(), 1..300)) {
            let mut wheel = TimerWheel::new(start);
            let mut reference = Reference::default();
            let mut now = start;
            let mut keys: Vec<(u64, TimerKey)> = Vec::new();
            let mut next_id = 0u64;
            let mut out = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(d) => {
                        // Some inserts land in the past on purpose.
                        let deadline = (now + d).saturating_sub(if d % 7 == 0 { 30 } else { 0 });
                        let key = wheel.insert(deadline, next_id);
                        reference.insert(next_id, deadline);
                        keys.push((next_id, key));
                        next_id += 1;
                    }
                    Op::Cancel(i) if !keys.is_empty() => {
                        let (id, key) = keys.swap_remove(i % keys.len());
                        let expected = reference.remove(id);
                        prop_assert_eq!(wheel.cancel(key).is_some(), expected);
                    }
                    Op::Reschedule(i, d) if !keys.is_empty() => {
                        let (id, key) = keys[i % keys.len()];
                        let pending = reference.live.contains_key(&id);
                        prop_assert_eq!(wheel.reschedule(key, now + d), pending);
                        if pending {
                            reference.insert(id, now + d);
                        }
                    }
                    Op::Advance(d) => {
                        now += d;
                        out.clear();
                        wheel.advance(now, &mut out);
                        let expected = reference.advance(now);
                        // Deadline order, nothing early, nothing missing.
                        prop_assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
                        prop_assert!(out.iter().all(|&(deadline, _)| deadline <= now));
                        let mut got = out.clone();
                        got.sort_unstable();
                        let mut want = expected;
                        want.sort_unstable();
                        prop_assert_eq!(got, want);
                    }
                    Op::Cancel(_) | Op::Reschedule(..) => {}
                }
                prop_assert_eq!(wheel.len(), reference.live.len());
                if let Some(at) = wheel.next_expiration() {
                    let earliest = reference.live.values().map(|&(d, _)| d).min().unwrap();
                    prop_assert!(at <= earliest.max(wheel.elapsed()));
                    prop_assert!(at >= wheel.elapsed());
                }
            }
        }
    }
}
