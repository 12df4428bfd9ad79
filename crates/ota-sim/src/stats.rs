//! What a run measures: devices per phase, bytes, latencies and errors,
//! shared by every device task.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Where a simulated device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for its next poll.
    Idle,
    Checking,
    Downloading,
    Installing,
    Rebooting,
    /// Finished on a newer version than it started with.
    Updated,
    /// Finished on the version it started with: nothing was offered.
    UpToDate,
    /// Finished after an injected install failure.
    InstallFailed,
    /// Finished after an injected rollback, back on its old version.
    RolledBack,
    /// Finished after an error that nothing injected.
    Error,
}

impl Phase {
    pub const ALL: [Phase; 10] = [
        Phase::Idle,
        Phase::Checking,
        Phase::Downloading,
        Phase::Installing,
        Phase::Rebooting,
        Phase::Updated,
        Phase::UpToDate,
        Phase::InstallFailed,
        Phase::RolledBack,
        Phase::Error,
    ];

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Phase::Updated | Phase::UpToDate | Phase::InstallFailed | Phase::RolledBack | Phase::Error
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Checking => "checking",
            Phase::Downloading => "downloading",
            Phase::Installing => "installing",
            Phase::Rebooting => "rebooting",
            Phase::Updated => "updated",
            Phase::UpToDate => "up to date",
            Phase::InstallFailed => "install failed",
            Phase::RolledBack => "rolled back",
            Phase::Error => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Latencies in microseconds, from 1 µs to 10 minutes, 3 significant digits.
pub struct Latency(Mutex<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        Self(Mutex::new(new_histogram()))
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Latency {
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.lock().expect("histogram lock").saturating_record(micros);
    }

    pub fn merge(&self, other: &Histogram<u64>) {
        let _ = self.0.lock().expect("histogram lock").add(other);
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.0.lock().expect("histogram lock"))
    }
}

/// Count and percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// Everything the devices of one run share.
#[derive(Default)]
pub struct Stats {
    phases: [AtomicI64; Phase::ALL.len()],
    pub bytes: AtomicU64,
    pub drops: AtomicU64,
    pub reboots: AtomicU64,
    /// Devices offered an app image below their anti-rollback counter.
    pub bricked: AtomicU64,
    pub check: Latency,
    /// Time to the response head of each download request (HEAD or GET).
    pub download_request: Latency,
    /// From the first download request to the last byte of the image.
    pub download: Latency,
    pub status: Latency,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Devices with anti-rollback, by the value of their counter.
    secure_versions: Mutex<BTreeMap<u32, u64>>,
}

impl Stats {
    pub fn enter(&self, phase: Phase) {
        self.phases[phase.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn leave(&self, phase: Phase) {
        self.phases[phase.index()].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn count(&self, phase: Phase) -> u64 {
        self.phases[phase.index()].load(Ordering::Relaxed).max(0) as u64
    }

    /// Counts one error of a kind, e.g. `connect`, `http 503`, `hash mismatch`.
    pub fn error(&self, kind: impl Into<String>) {
        *self.errors.lock().expect("errors lock").entry(kind.into()).or_default() += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().expect("errors lock").clone()
    }

    /// A device's anti-rollback counter went from `before` to `after`
    /// (`None`: no anti-rollback).
    pub fn secure_version_moved(&self, before: Option<u32>, after: Option<u32>) {
        if before == after {
            return;
        }
        let mut counts = self.secure_versions.lock().expect("secure versions lock");
        if let Some(before) = before
            && let Some(count) = counts.get_mut(&before)
        {
            *count -= 1;
            if *count == 0 {
                counts.remove(&before);
            }
        }
        if let Some(after) = after {
            *counts.entry(after).or_default() += 1;
        }
    }

    /// How many devices hold each anti-rollback counter value.
    pub fn secure_versions(&self) -> BTreeMap<u32, u64> {
        self.secure_versions.lock().expect("secure versions lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let latency = Latency::default();
        for ms in 1..=100 {
            latency.record(Duration::from_millis(ms));
        }
        let summary = latency.summary();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn phases_count_devices_in_and_out() {
        let stats = Stats::default();
        stats.enter(Phase::Checking);
        stats.enter(Phase::Checking);
        stats.leave(Phase::Checking);
        stats.enter(Phase::Updated);
        assert_eq!(stats.count(Phase::Checking), 1);
        assert_eq!(stats.count(Phase::Updated), 1);
        assert_eq!(stats.count(Phase::Idle), 0);
        stats.error("connect");
        stats.error("connect");
        assert_eq!(stats.errors()["connect"], 2);
    }

    #[test]
    fn secure_versions_count_each_device_at_its_counter() {
        let stats = Stats::default();
        stats.secure_version_moved(None, Some(0));
        stats.secure_version_moved(None, Some(0));
        stats.secure_version_moved(None, None);

        stats.secure_version_moved(Some(0), Some(2));

        assert_eq!(stats.secure_versions(), BTreeMap::from([(0, 1), (2, 1)]));
        stats.secure_version_moved(Some(0), Some(2));
        assert_eq!(stats.secure_versions(), BTreeMap::from([(2, 2)]));
    }
}
