//! A fleet: N devices as tasks on one runtime, a live view, and the summary.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::device::Device;
use crate::http::Origin;
use crate::stats::{LatencySummary, Phase, Stats};
use crate::token::Tokens;

/// How a device downloads, as `esp_https_ota` can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadMode {
    /// A HEAD, then `Range` pieces of `--chunk-size` on a kept-alive
    /// connection (`partial_http_download`).
    Ranged,
    /// One GET for the whole image.
    Single,
}

/// Everything that shapes a run.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub server: url::Url,
    pub origin: Origin,
    pub devices: usize,
    pub id_prefix: String,
    pub first_index: usize,
    pub device_type: String,
    pub current_version: String,
    pub channel: Option<String>,
    pub check_interval: Duration,
    pub start_spread: Duration,
    pub mode: DownloadMode,
    pub chunk_size: u64,
    /// Bytes per second each device can receive; `None` is unlimited.
    pub link_speed: Option<u64>,
    /// Chance (0–1) that a download request's connection is cut mid-body.
    pub drop_chance: f64,
    /// Chance (0–1) that a device reboots once mid-download.
    pub reboot_chance: f64,
    /// Chance (0–1) that installing fails.
    pub install_fail: f64,
    /// Chance (0–1) that the new image rolls back after boot.
    pub rollback: f64,
    pub boot_time: Duration,
    pub install_time: Duration,
    /// Report download progress every this many percent (0 = never).
    pub progress_step: u8,
    /// Each device's anti-rollback counter at the start; `None`: devices
    /// built without anti-rollback.
    pub secure_version: Option<u32>,
    /// Stop each device once it has nothing left to do.
    pub until_done: bool,
    /// Stop the run after this long, whatever the devices are doing.
    pub max_duration: Duration,
    pub retries: u32,
    pub request_timeout: Duration,
    pub seed: u64,
    pub verbose: bool,
}

impl FleetConfig {
    pub fn device_id(&self, index: usize) -> String {
        format!("{}{:06}", self.id_prefix, self.first_index + index)
    }
}

/// The end-of-run summary.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub server: String,
    pub devices: usize,
    pub elapsed_s: f64,
    pub updated: u64,
    pub up_to_date: u64,
    pub install_failed: u64,
    pub rolled_back: u64,
    /// Devices that ended on an error nothing injected.
    pub errors: u64,
    /// Devices still busy when the run stopped.
    pub unfinished: u64,
    pub bytes: u64,
    pub mib_per_s: f64,
    pub check: LatencySummary,
    /// Time to the answer's head, per download request (HEAD and GET).
    pub download_request: LatencySummary,
    /// Whole image, per device: first request to last byte.
    pub download: LatencySummary,
    pub status: LatencySummary,
    pub injected_drops: u64,
    pub injected_reboots: u64,
    /// Whether the devices have anti-rollback (`--secure-version`).
    pub anti_rollback: bool,
    /// Devices offered an app image whose `secure_version` is below their
    /// anti-rollback counter. The server must never do that: each is also
    /// an error.
    pub bricked: u64,
    /// Devices with anti-rollback by counter value at the end.
    pub secure_versions: BTreeMap<u32, u64>,
    /// Every error seen, retried or not, by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
}

impl Report {
    /// A run fails when any device ended on an unexpected error, or when a
    /// run meant to finish did not.
    pub fn ok(&self, until_done: bool) -> bool {
        self.errors == 0 && (!until_done || self.unfinished == 0)
    }

    pub fn human(&self) -> String {
        let latency = |l: &LatencySummary| {
            format!(
                "{:>8} requests   p50 {:>9.2} ms   p99 {:>9.2} ms   max {:>9.2} ms",
                l.count, l.p50_ms, l.p99_ms, l.max_ms
            )
        };
        let mut out = format!(
            "ota-sim: {} devices against {} in {:.1} s\n\
             \x20 updated          {:>8}\n\
             \x20 up to date       {:>8}\n\
             \x20 install failed   {:>8}   (injected)\n\
             \x20 rolled back      {:>8}   (injected)\n\
             \x20 errors           {:>8}\n\
             \x20 unfinished       {:>8}\n\
             \x20 downloaded       {:>8.1} MiB   ({:.1} MiB/s)\n\
             \x20 check          {}\n\
             \x20 download req   {}\n\
             \x20 download       {}\n\
             \x20 status         {}\n\
             \x20 injected         {} connection drops, {} reboots\n\
             \x20 bricked          {:>8}   {}\n",
            self.devices,
            self.server,
            self.elapsed_s,
            self.updated,
            self.up_to_date,
            self.install_failed,
            self.rolled_back,
            self.errors,
            self.unfinished,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.mib_per_s,
            latency(&self.check),
            latency(&self.download_request),
            latency(&self.download).replace("requests", "images  "),
            latency(&self.status),
            self.injected_drops,
            self.injected_reboots,
            self.bricked,
            if self.anti_rollback {
                "(offered an image below their secure_version)"
            } else {
                "(no anti-rollback: --secure-version not set)"
            },
        );
        if self.anti_rollback {
            let counters: Vec<String> = self
                .secure_versions
                .iter()
                .map(|(counter, devices)| format!("{counter}: {devices} devices"))
                .collect();
            out.push_str(&format!("  secure_version   {}\n", counters.join(", ")));
        }
        if self.errors_by_kind.is_empty() {
            out.push_str("  errors by kind   none\n");
        } else {
            out.push_str("  errors by kind (retried ones included):\n");
            for (kind, count) in &self.errors_by_kind {
                out.push_str(&format!("    {kind:<24} {count}\n"));
            }
        }
        out
    }
}

/// Runs the fleet to the end and returns the summary.
pub async fn run(config: FleetConfig, tokens: &Tokens, live: bool) -> Report {
    let config = Arc::new(config);
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let mut devices = JoinSet::new();
    for index in 0..config.devices {
        let id = config.device_id(index);
        let token = tokens.for_device(&id, &config.device_type);
        let seed = config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let device = Device::new(id, token, Arc::clone(&config), Arc::clone(&stats), seed);
        devices.spawn(device.run());
    }

    let bar = live_view(live, config.devices);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let deadline = tokio::time::sleep(config.max_duration);
    tokio::pin!(deadline);
    let mut last_bytes = 0;
    let mut last_tick = Instant::now();
    loop {
        tokio::select! {
            joined = devices.join_next() => {
                if joined.is_none() {
                    break;
                }
            }
            _ = &mut deadline => {
                devices.abort_all();
                while devices.join_next().await.is_some() {}
                break;
            }
            _ = tick.tick() => {
                if let Some(bar) = &bar {
                    let bytes = stats.bytes.load(Ordering::Relaxed);
                    let rate = (bytes - last_bytes) as f64 / last_tick.elapsed().as_secs_f64() / (1024.0 * 1024.0);
                    last_bytes = bytes;
                    last_tick = Instant::now();
                    update_view(bar, &stats, rate);
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let elapsed = started.elapsed().as_secs_f64();
    let bytes = stats.bytes.load(Ordering::Relaxed);
    let unfinished = Phase::ALL
        .iter()
        .filter(|phase| !phase.is_final())
        .map(|&phase| stats.count(phase))
        .sum();
    Report {
        server: config.server.to_string(),
        devices: config.devices,
        elapsed_s: elapsed,
        updated: stats.count(Phase::Updated),
        up_to_date: stats.count(Phase::UpToDate),
        install_failed: stats.count(Phase::InstallFailed),
        rolled_back: stats.count(Phase::RolledBack),
        errors: stats.count(Phase::Error),
        unfinished,
        bytes,
        mib_per_s: bytes as f64 / elapsed.max(1e-9) / (1024.0 * 1024.0),
        check: stats.check.summary(),
        download_request: stats.download_request.summary(),
        download: stats.download.summary(),
        status: stats.status.summary(),
        injected_drops: stats.drops.load(Ordering::Relaxed),
        injected_reboots: stats.reboots.load(Ordering::Relaxed),
        anti_rollback: config.secure_version.is_some(),
        bricked: stats.bricked.load(Ordering::Relaxed),
        secure_versions: stats.secure_versions(),
        errors_by_kind: stats.errors(),
    }
}

/// A progress bar of finished devices with the count per phase, on stderr
/// when it is a terminal.
fn live_view(wanted: bool, devices: usize) -> Option<ProgressBar> {
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(devices as u64), ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} done\n{msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    Some(bar)
}

fn update_view(bar: &ProgressBar, stats: &Stats, mib_per_s: f64) {
    let finished: u64 = Phase::ALL
        .iter()
        .filter(|phase| phase.is_final())
        .map(|&phase| stats.count(phase))
        .sum();
    bar.set_position(finished);
    let phases: Vec<String> = Phase::ALL
        .iter()
        .map(|&phase| (phase, stats.count(phase)))
        .filter(|&(_, count)| count > 0)
        .map(|(phase, count)| format!("{} {count}", phase.label()))
        .collect();
    bar.set_message(format!("{}\n{mib_per_s:.1} MiB/s", phases.join(" · ")));
}
