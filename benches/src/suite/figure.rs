//! What one workload measured once, and the per-sample record kept for the JSON file.

use crate::daemon::percentile;

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    /// In the workload's unit.
    pub value: f64,
    /// Wall time the measurement took.
    pub secs: f64,
    /// Per-operation latency, for the fsync workloads.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

impl Figure {
    /// `count` things done in `secs`.
    pub fn rate(count: f64, secs: f64) -> Figure {
        Figure {
            value: count / secs.max(1e-9),
            secs,
            p50_us: None,
            p99_us: None,
        }
    }

    /// Bytes in `secs`, as MB/s (10^6 bytes).
    pub fn mb_per_s(bytes: u64, secs: f64) -> Figure {
        Figure::rate(bytes as f64 / 1e6, secs)
    }

    /// Operations with their latencies in microseconds, done in `secs` of wall time.
    pub fn with_latencies(mut lat_us: Vec<u64>, secs: f64) -> Figure {
        lat_us.sort_unstable();
        Figure {
            p50_us: Some(percentile(&lat_us, 0.5)),
            p99_us: Some(percentile(&lat_us, 0.99)),
            ..Figure::rate(lat_us.len() as f64, secs)
        }
    }
}

/// One sample: a figure with where, when and what CPU it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub round: usize,
    pub target: String,
    pub workload: String,
    pub unit: String,
    pub figure: Figure,
    /// CPU seconds of the benchmark process (for `engine`, the engine's threads too).
    pub cpu_client_s: f64,
    /// CPU seconds of the FUSE daemon, for targets served by one.
    pub cpu_daemon_s: Option<f64>,
}
