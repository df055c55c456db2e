//! Runs native probes on a tokio runtime of its own, bounded by a global cap on probes
//! in flight and a per-host cap, and hands each finished result to a sink.
//!
//! Dispatch never blocks the caller (the clock thread): a probe waiting for a slot waits
//! on the runtime, and its timeout only starts once it runs, so a slow or failing target
//! holds at most its own slots, never the schedule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::probe::{self, ConfigError, Outcome, ProbeContext, ProbeSpec};

#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    pub max_in_flight: usize,
    pub max_per_host: usize,
    /// Extra trusted CA certificates (PEM).
    pub extra_ca_pem: Option<String>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            threads: 0,
            max_in_flight: 10_000,
            max_per_host: 1_000,
            extra_ca_pem: None,
        }
    }
}

/// What a finished probe reports: the outcome, when it started (µs since the epoch) and
/// how long it took (µs).
pub type Finished = (Outcome, u64, u64);

pub struct Executor {
    runtime: tokio::runtime::Runtime,
    ctx: Arc<ProbeContext>,
    global: Arc<Semaphore>,
    max_per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Executor {
    pub fn new(config: &ExecutorConfig) -> Result<Self, ConfigError> {
        if config.max_in_flight == 0 || config.max_per_host == 0 {
            return Err(ConfigError::new(
                "max_in_flight",
                "limits must be at least 1",
            ));
        }
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if config.threads > 0 {
            builder.worker_threads(config.threads);
        }
        let runtime = builder
            .thread_name("tocsin-probe")
            .enable_all()
            .build()
            .map_err(|e| ConfigError::new("threads", e.to_string()))?;
        Ok(Executor {
            runtime,
            ctx: ProbeContext::new(config.extra_ca_pem.as_deref())?,
            global: Arc::new(Semaphore::new(config.max_in_flight)),
            max_per_host: config.max_per_host,
            hosts: Mutex::new(HashMap::new()),
        })
    }

    fn host_slots(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            hosts
                .entry(host.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.max_per_host))),
        )
    }

    /// Start a probe; `done` runs on a probe thread when it finishes.
    pub fn spawn<F>(&self, spec: Arc<ProbeSpec>, timeout: Duration, clock: Clock, done: F)
    where
        F: FnOnce(Finished) + Send + 'static,
    {
        let ctx = Arc::clone(&self.ctx);
        let global = Arc::clone(&self.global);
        let host = self.host_slots(spec.host());
        self.runtime.spawn(async move {
            // The semaphores are never closed, so acquiring cannot fail.
            let Ok(_slot) = global.acquire_owned().await else {
                return;
            };
            let Ok(_host_slot) = host.acquire_owned().await else {
                return;
            };
            let started_us = clock.now_us();
            let start = Instant::now();
            let outcome = probe::run(&spec, &ctx, timeout).await;
            let took = start.elapsed().as_micros() as u64;
            done((outcome, started_us, took));
        });
    }
}
