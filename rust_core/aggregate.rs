//! Folding probe results into check statuses and transitions.
//!
//! This is the single-source version the walking skeleton needs: a check's status is
//! its latest result's status, and every change is a transition. Per-source state
//! machines and multi-source verdicts build on this shape.

use std::collections::HashMap;

pub use crate::result::{ProbeResult, Status, Transition};

#[derive(Default)]
pub struct Verdicts {
    status: HashMap<u64, Status>,
}

impl Verdicts {
    pub fn status(&self, check_id: u64) -> Status {
        self.status
            .get(&check_id)
            .copied()
            .unwrap_or(Status::Unknown)
    }

    /// Seed a check's status (after a restart), without a transition.
    pub fn seed(&mut self, check_id: u64, status: Status) {
        self.status.insert(check_id, status);
    }

    pub fn forget(&mut self, check_id: u64) {
        self.status.remove(&check_id);
    }

    /// Fold one result in; a transition when the status changed.
    pub fn fold(&mut self, result: &ProbeResult) -> Option<Transition> {
        let slot = self
            .status
            .entry(result.check_id)
            .or_insert(Status::Unknown);
        let previous = *slot;
        if previous == result.status {
            return None;
        }
        *slot = result.status;
        Some(Transition {
            check_id: result.check_id,
            previous,
            current: result.status,
            at_us: result.started_us + result.latency_us,
            reason: result.error_kind.clone().or_else(|| result.message.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(check_id: u64, status: Status) -> ProbeResult {
        ProbeResult {
            started_us: 1,
            latency_us: 2,
            status,
            error_kind: (status == Status::Down).then(|| "timeout".to_owned()),
            ..ProbeResult::new(check_id)
        }
    }

    #[test]
    fn only_changes_are_transitions() {
        let mut v = Verdicts::default();
        let t = v.fold(&result(1, Status::Up)).unwrap();
        assert_eq!((t.previous, t.current), (Status::Unknown, Status::Up));
        assert!(v.fold(&result(1, Status::Up)).is_none());
        let t = v.fold(&result(1, Status::Down)).unwrap();
        assert_eq!(t.reason.as_deref(), Some("timeout"));
        assert_eq!(v.status(1), Status::Down);
        assert_eq!(v.status(2), Status::Unknown);
    }

    #[test]
    fn a_seeded_status_does_not_transition_again() {
        let mut v = Verdicts::default();
        v.seed(1, Status::Down);
        assert!(v.fold(&result(1, Status::Down)).is_none());
        v.forget(1);
        assert!(v.fold(&result(1, Status::Down)).is_some());
    }
}
