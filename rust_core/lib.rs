//! tocsin's native core: the timing wheel and scheduler that own time, the engine that
//! dispatches due runs, and the folding of results into statuses. Plain Rust; the
//! Python bindings live in `py.rs` alone.

pub mod aggregate;
pub mod clock;
pub mod deadlines;
pub mod engine;
pub mod executor;
pub mod probe;
pub mod result;
pub mod schedule;
pub mod stats;
pub mod timers;
pub mod wakeup;
pub mod wheel;

#[cfg(feature = "python")]
mod py;
