//! `ota-sim bench`: the scenarios of issue 3 (and `upload`, of issue 5),
//! each measured next to a reference taken in the same run, on loopback.
//!
//! Every scenario starts its own `ota-server` (the real binary) on a fresh
//! data folder, and nginx where nginx is the reference. Nothing is tuned for
//! the benchmark except the per-device request budget, which is switched off
//! because a handful of simulated devices make thousands of requests per
//! second.

mod api;
mod load;
mod procs;
mod upload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::{Conn, Request};
use crate::stats::Latency;
use crate::token::TokenMinter;
pub use api::{admin, create_device_type, ensure_device_type, multipart, publish, publish_to};
pub use load::{LoadResult, closed_loop, slow_readers};
pub use procs::{ADMIN_TOKEN, JWT_SECRET, Nginx, ServerProcess, rss_of_tree};

const DEVICE_TYPE: &str = "scales_bridge_tab5";
const MIB: f64 = 1024.0 * 1024.0;

/// The scenarios, in the order of the issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Check throughput and p99 at 64 connections, against nginx answering a fixed JSON body.
    Check,
    /// Download MiB/s at 16 and 256 connections, against nginx with sendfile.
    Download,
    /// 10,000 concurrent downloads at 20 KiB/s each: memory and errors.
    Slow,
    /// Status-write throughput, then a row count: any lost write shows.
    Status,
    /// Check latency with 1,000 vs 1,000,000 devices in the inventory.
    Inventory,
    /// Upload MiB/s of an ESP image to an esp-app device type (parsed while
    /// it streams in), against a file with nothing to parse.
    Upload,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Check,
        Scenario::Download,
        Scenario::Slow,
        Scenario::Status,
        Scenario::Inventory,
        Scenario::Upload,
    ];
}

pub struct BenchOptions {
    /// Small fleets and short runs: checks the scenarios work, proves nothing.
    pub quick: bool,
    pub measure: Option<Duration>,
    pub server_bin: PathBuf,
    pub nginx: PathBuf,
}

impl BenchOptions {
    fn measure(&self) -> Duration {
        self.measure.unwrap_or(if self.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        })
    }

    fn warmup(&self) -> Duration {
        if self.quick {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        }
    }
}

/// One line of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub scenario: Scenario,
    pub measure: String,
    pub ours: String,
    pub reference: String,
    /// ours / reference, where the two are comparable numbers.
    pub ratio: Option<f64>,
    pub target: String,
    /// Whether the target was met; `None` when there is no target or in a quick run.
    pub passed: Option<bool>,
}

/// Raises this process's soft limit of open files to the hard limit: ten
/// thousand devices need ten thousand sockets.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Runs the scenarios in order and returns every row.
pub async fn run(options: &BenchOptions, scenarios: &[Scenario]) -> anyhow::Result<Vec<BenchRow>> {
    raise_open_files_limit();
    anyhow::ensure!(
        options.server_bin.exists(),
        "{} is missing: build it with `cargo build --release -p ota-server` or pass --server-bin",
        options.server_bin.display()
    );
    let mut rows = Vec::new();
    for &scenario in scenarios {
        eprintln!("bench: {scenario:?} …");
        let started = Instant::now();
        let mut new = match scenario {
            Scenario::Check => check(options).await,
            Scenario::Download => download(options).await,
            Scenario::Slow => slow(options).await,
            Scenario::Status => status(options).await,
            Scenario::Inventory => inventory(options).await,
            Scenario::Upload => upload::upload(options).await,
        }
        .with_context(|| format!("scenario {scenario:?}"))?;
        eprintln!("bench: {scenario:?} took {:.0} s", started.elapsed().as_secs_f64());
        if options.quick {
            for row in &mut new {
                row.passed = None;
            }
        }
        rows.extend(new);
    }
    Ok(rows)
}

/// The results as a Markdown table.
pub fn markdown(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "| scenario | measure | ota-server | reference | ratio | target | met |\n|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            serde_json::to_value(row.scenario)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            row.measure,
            row.ours,
            row.reference,
            row.ratio.map_or("–".to_owned(), |r| format!("{r:.2}×")),
            row.target,
            match row.passed {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        ));
    }
    out
}

/// A scratch folder, a token minter and helpers shared by the scenarios.
struct Setup {
    work: tempfile::TempDir,
    minter: TokenMinter,
}

impl Setup {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            work: tempfile::Builder::new().prefix("ota-bench-").tempdir()?,
            minter: TokenMinter::new(JWT_SECRET.as_bytes(), 24 * 3600),
        })
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    async fn server(&self, options: &BenchOptions, name: &str) -> anyhow::Result<ServerProcess> {
        ServerProcess::start(&options.server_bin, &self.dir(name)).await
    }

    fn check_request(&self, device: &str, version: &str) -> Vec<u8> {
        let token = self.minter.mint(device, DEVICE_TYPE);
        let body = format!(r#"{{"device_type":"{DEVICE_TYPE}","current_version":"{version}"}}"#);
        Request {
            method: "POST",
            path: "/api/ota/check",
            headers: vec![format!("Authorization: Bearer {token}")],
            body: Some(body.as_bytes()),
            content_type: Some("application/json"),
        }
        .encode("127.0.0.1")
    }

    fn get_request(&self, path: &str, device: Option<&str>, range: Option<(u64, u64)>) -> Vec<u8> {
        let mut headers = Vec::new();
        if let Some(device) = device {
            headers.push(format!(
                "Authorization: Bearer {}",
                self.minter.mint(device, DEVICE_TYPE)
            ));
        }
        if let Some((from, to)) = range {
            headers.push(format!("Range: bytes={from}-{to}"));
        }
        Request {
            method: "GET",
            path,
            headers,
            ..Default::default()
        }
        .encode("127.0.0.1")
    }
}

/// Random bytes standing in for a firmware image.
pub fn image(size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    rand::rngs::SmallRng::seed_from_u64(size as u64).fill_bytes(&mut bytes);
    bytes
}

/// Measures ours and the reference in turns, three rounds each (one in a
/// quick run) splitting the measuring time, each after a full warm-up, and
/// keeps each side's median round: a neighbour's burst on a shared machine then moves one round,
/// not the comparison.
async fn side_by_side(
    ours: (SocketAddr, &Arc<Vec<Vec<u8>>>),
    reference: (SocketAddr, &Arc<Vec<Vec<u8>>>),
    connections: usize,
    options: &BenchOptions,
) -> (LoadResult, LoadResult) {
    let rounds = if options.quick { 1 } else { 3 };
    let measure = options.measure() / rounds;
    let warmup = options.warmup();
    let (mut our_rounds, mut reference_rounds) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (addr, requests) = reference;
        reference_rounds.push(closed_loop(addr, Arc::clone(requests), connections, warmup, measure, 200).await);
        let (addr, requests) = ours;
        our_rounds.push(closed_loop(addr, Arc::clone(requests), connections, warmup, measure, 200).await);
    }
    (median(our_rounds), median(reference_rounds))
}

/// The round with the median rate; its errors are all the rounds' errors.
fn median(mut rounds: Vec<LoadResult>) -> LoadResult {
    let mut errors = std::collections::BTreeMap::new();
    for round in &rounds {
        for (kind, n) in &round.errors {
            *errors.entry(kind.clone()).or_default() += n;
        }
    }
    rounds.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
    let mut middle = rounds.swap_remove(rounds.len() / 2);
    middle.errors = errors;
    middle
}

fn rate(value: f64, unit: &str) -> String {
    if value >= 100.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

fn with_errors(text: String, result: &LoadResult) -> String {
    match result.error_count() {
        0 => text,
        n => format!("{text} ({n} errors: {:?})", result.errors),
    }
}

async fn check(options: &BenchOptions) -> anyhow::Result<Vec<BenchRow>> {
    let setup = Setup::new()?;
    let server = setup.server(options, "check").await?;
    publish(server.addr, "1.1.0", &image(1024 * 1024)).await?;
    let www = setup.dir("www");
    std::fs::create_dir_all(&www)?;
    let nginx = Nginx::start(
        &options.nginx,
        &www,
        r#"{"update_available":false,"current_version":"1.1.0"}"#,
    )
    .await?;
    let (warmup, measure) = (options.warmup(), options.measure());
    let devices = if options.quick { 100 } else { 1000 };
    let up_to_date: Arc<Vec<_>> = Arc::new(
        (0..devices)
            .map(|i| setup.check_request(&format!("bench-{i:06}"), "1.1.0"))
            .collect(),
    );
    let (ours, reference) = side_by_side((server.addr, &up_to_date), (nginx.addr, &up_to_date), 64, options).await;
    let outdated: Arc<Vec<_>> = Arc::new(
        (0..devices)
            .map(|i| setup.check_request(&format!("bench-{i:06}"), "1.0.0"))
            .collect(),
    );
    let offering = closed_loop(server.addr, outdated, 64, warmup, measure, 200).await;
    let ratio = ours.per_second() / reference.per_second();
    Ok(vec![
        BenchRow {
            scenario: Scenario::Check,
            measure: "check, up to date, 64 connections: requests/s".into(),
            ours: with_errors(rate(ours.per_second(), "req/s"), &ours),
            reference: with_errors(
                format!("nginx fixed JSON: {}", rate(reference.per_second(), "req/s")),
                &reference,
            ),
            ratio: Some(ratio),
            target: "≥ 0.30×".into(),
            passed: Some(ratio >= 0.3 && ours.error_count() == 0),
        },
        BenchRow {
            scenario: Scenario::Check,
            measure: "check, up to date, 64 connections: p50 / p99".into(),
            ours: format!("{:.2} / {:.2} ms", ours.latency.p50_ms, ours.latency.p99_ms),
            reference: format!("{:.2} / {:.2} ms", reference.latency.p50_ms, reference.latency.p99_ms),
            ratio: None,
            target: "p99 ≤ 5 ms".into(),
            passed: Some(ours.latency.p99_ms <= 5.0),
        },
        BenchRow {
            scenario: Scenario::Check,
            measure: "check with an offer (open row read, link signed), 64 connections".into(),
            ours: with_errors(
                format!(
                    "{}, p99 {:.2} ms",
                    rate(offering.per_second(), "req/s"),
                    offering.latency.p99_ms
                ),
                &offering,
            ),
            reference: "–".into(),
            ratio: None,
            target: "–".into(),
            passed: None,
        },
    ])
}

async fn download(options: &BenchOptions) -> anyhow::Result<Vec<BenchRow>> {
    let setup = Setup::new()?;
    let server = setup.server(options, "download").await?;
    let size = if options.quick { 256 * 1024 } else { 2 * 1024 * 1024 };
    let bytes = image(size);
    let id = publish(server.addr, "1.1.0", &bytes).await?;
    let www = setup.dir("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("app.bin"), &bytes)?;
    let nginx = Nginx::start(&options.nginx, &www, "{}").await?;
    let mut rows = Vec::new();
    for connections in [16, 256] {
        let ours_requests: Arc<Vec<_>> = Arc::new(
            (0..connections)
                .map(|c| setup.get_request(&format!("/api/ota/download/{id}"), Some(&format!("dl-{c:04}")), None))
                .collect(),
        );
        let nginx_requests = Arc::new(vec![setup.get_request("/app.bin", None, None)]);
        let (ours, reference) = side_by_side(
            (server.addr, &ours_requests),
            (nginx.addr, &nginx_requests),
            connections,
            options,
        )
        .await;
        let ratio = ours.mib_per_second() / reference.mib_per_second();
        rows.push(BenchRow {
            scenario: Scenario::Download,
            measure: format!("download {} MiB image, {connections} connections", size as f64 / MIB),
            ours: with_errors(rate(ours.mib_per_second(), "MiB/s"), &ours),
            reference: with_errors(
                format!("nginx sendfile: {}", rate(reference.mib_per_second(), "MiB/s")),
                &reference,
            ),
            ratio: Some(ratio),
            target: "≥ 0.90×".into(),
            passed: Some(ratio >= 0.9 && ours.error_count() == 0),
        });
    }
    Ok(rows)
}

async fn slow(options: &BenchOptions) -> anyhow::Result<Vec<BenchRow>> {
    let setup = Setup::new()?;
    let server = setup.server(options, "slow").await?;
    let size = 2 * 1024 * 1024u64;
    let bytes = image(size as usize);
    let id = publish(server.addr, "1.1.0", &bytes).await?;
    let www = setup.dir("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("app.bin"), &bytes)?;
    let nginx = Nginx::start(&options.nginx, &www, "{}").await?;
    let readers = if options.quick { 200 } else { 10_000 };
    let rate_per_device = 20 * 1024;
    let (ramp, hold) = if options.quick {
        (Duration::from_secs(1), Duration::from_secs(2))
    } else {
        (Duration::from_secs(10), options.measure().max(Duration::from_secs(20)))
    };
    // 64 KiB pieces, as esp_https_ota's partial download mode asks.
    let piece = 64 * 1024u64;
    let pieces = size / piece;
    let range = |k: u64| Some(((k % pieces) * piece, (k % pieces) * piece + piece - 1));
    let ours_requests: Arc<Vec<_>> = Arc::new(
        (0..1024u64)
            .map(|k| {
                setup.get_request(
                    &format!("/api/ota/download/{id}"),
                    Some(&format!("slow-{k:05}")),
                    range(k),
                )
            })
            .collect(),
    );
    let nginx_requests: Arc<Vec<_>> = Arc::new(
        (0..pieces)
            .map(|k| setup.get_request("/app.bin", None, range(k)))
            .collect(),
    );
    let server_pid = server.pid();
    let nginx_pid = nginx.pid();
    let reference = slow_readers(nginx.addr, nginx_requests, readers, rate_per_device, ramp, hold, || {
        rss_of_tree(nginx_pid)
    })
    .await;
    drop(nginx);
    let ours = slow_readers(server.addr, ours_requests, readers, rate_per_device, ramp, hold, || {
        rss_of_tree(server_pid)
    })
    .await;
    let errors = |r: &load::SlowResult| match r.errors.values().sum::<u64>() {
        0 => "0".to_owned(),
        n => format!("{n} {:?}", r.errors),
    };
    let our_errors: u64 = ours.errors.values().sum();
    Ok(vec![
        BenchRow {
            scenario: Scenario::Slow,
            measure: format!("{readers} downloads at 20 KiB/s held at once"),
            ours: ours.peak_in_flight.to_string(),
            reference: format!("nginx: {}", reference.peak_in_flight),
            ratio: None,
            target: format!("{readers}"),
            passed: Some(ours.peak_in_flight == readers as u64),
        },
        BenchRow {
            scenario: Scenario::Slow,
            measure: format!("{readers} slow downloads: peak server RSS"),
            ours: format!("{:.1} MiB", ours.peak_rss as f64 / MIB),
            reference: format!("nginx (all processes): {:.1} MiB", reference.peak_rss as f64 / MIB),
            ratio: Some(ours.peak_rss as f64 / reference.peak_rss.max(1) as f64),
            target: "≤ 200 MiB".into(),
            passed: Some(ours.peak_rss as f64 <= 200.0 * MIB),
        },
        BenchRow {
            scenario: Scenario::Slow,
            measure: format!("{readers} slow downloads: errors (bytes moved)"),
            ours: format!("{} ({:.0} MiB)", errors(&ours), ours.bytes as f64 / MIB),
            reference: format!(
                "nginx: {} ({:.0} MiB)",
                errors(&reference),
                reference.bytes as f64 / MIB
            ),
            ratio: None,
            target: "0".into(),
            passed: Some(our_errors == 0),
        },
    ])
}

async fn status(options: &BenchOptions) -> anyhow::Result<Vec<BenchRow>> {
    let setup = Setup::new()?;
    let server = setup.server(options, "status").await?;
    let id = publish(server.addr, "1.1.0", &image(64 * 1024)).await?;
    let devices = if options.quick { 200 } else { 5000 };
    let connections = 64;
    let next = Arc::new(AtomicUsize::new(0));
    let acked_success = Arc::new(AtomicU64::new(0));
    let acked_writes = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Latency::default());
    let minter = Arc::new(TokenMinter::new(JWT_SECRET.as_bytes(), 3600));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let (next, acked_success, acked_writes, latency, minter) = (
            Arc::clone(&next),
            Arc::clone(&acked_success),
            Arc::clone(&acked_writes),
            Arc::clone(&latency),
            Arc::clone(&minter),
        );
        let addr = server.addr;
        tasks.spawn(async move {
            let mut errors = 0u64;
            let mut conn = Conn::connect(addr, None).await?;
            loop {
                let device = next.fetch_add(1, Ordering::Relaxed);
                if device >= devices {
                    return Ok::<u64, anyhow::Error>(errors);
                }
                let token = minter.mint(&format!("status-{device:06}"), DEVICE_TYPE);
                let auth = format!("Authorization: Bearer {token}");
                let check = format!(r#"{{"device_type":"{DEVICE_TYPE}","current_version":"1.0.0"}}"#);
                let mut steps = vec![("/api/ota/check", check, false)];
                for (status, progress) in [
                    ("downloading", 0),
                    ("downloading", 50),
                    ("installing", 100),
                    ("success", 100),
                ] {
                    steps.push((
                        "/api/ota/status",
                        format!(r#"{{"firmware_id":{id},"status":"{status}","progress":{progress}}}"#),
                        true,
                    ));
                }
                for (path, body, is_status) in &steps {
                    let request = Request {
                        method: "POST",
                        path,
                        headers: vec![auth.clone()],
                        body: Some(body.as_bytes()),
                        content_type: Some("application/json"),
                    }
                    .encode("127.0.0.1");
                    let sent = Instant::now();
                    let head = conn.send(&request).await?;
                    conn.discard_body().await?;
                    if head.status != 200 {
                        errors += 1;
                        continue;
                    }
                    if *is_status {
                        latency.record(sent.elapsed());
                        acked_writes.fetch_add(1, Ordering::Relaxed);
                        if body.contains("\"success\"") {
                            acked_success.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        errors += joined??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let writes = acked_writes.load(Ordering::Relaxed);
    let success = acked_success.load(Ordering::Relaxed);
    let (code, detail) = admin(server.addr, "GET", &format!("/api/ota/admin/firmware/{id}"), None, None).await?;
    anyhow::ensure!(code == 200, "firmware {id} answered {code}");
    let stats = &detail["stats"];
    let success_rows = stats["success"].as_u64().unwrap_or(0);
    let all_rows: u64 = stats
        .as_object()
        .map(|counts| counts.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0);
    let summary = latency.summary();
    Ok(vec![
        BenchRow {
            scenario: Scenario::Status,
            measure: format!("status reports, {devices} devices × 4, {connections} connections"),
            ours: format!(
                "{} (p50 {:.2} ms, p99 {:.2} ms){}",
                rate(writes as f64 / elapsed, "writes/s"),
                summary.p50_ms,
                summary.p99_ms,
                if errors > 0 {
                    format!(", {errors} refused")
                } else {
                    String::new()
                }
            ),
            reference: "–".into(),
            ratio: None,
            target: "–".into(),
            passed: None,
        },
        BenchRow {
            scenario: Scenario::Status,
            measure: "rows in `success` (all rows) vs acknowledged success reports (devices)".into(),
            ours: format!("{success_rows} ({all_rows})"),
            reference: format!("acknowledged: {success} ({devices})"),
            ratio: None,
            target: "equal: 0 lost".into(),
            passed: Some(success_rows == success && all_rows == devices as u64 && errors == 0),
        },
    ])
}

async fn inventory(options: &BenchOptions) -> anyhow::Result<Vec<BenchRow>> {
    let setup = Setup::new()?;
    let sizes: [usize; 2] = if options.quick {
        [1_000, 20_000]
    } else {
        [1_000, 1_000_000]
    };
    let (warmup, measure) = (options.warmup(), options.measure());
    let mut results = Vec::new();
    for devices in sizes {
        let name = format!("inventory-{devices}");
        let server = setup.server(options, &name).await?;
        publish(server.addr, "1.0.0", &image(64 * 1024)).await?;
        let current = publish(server.addr, "1.1.0", &image(64 * 1024)).await?;
        server.stop()?;
        let seeding = Instant::now();
        seed_inventory(&setup.dir(&name), devices, current).await?;
        eprintln!(
            "bench: seeded {devices} devices in {:.1} s",
            seeding.elapsed().as_secs_f64()
        );
        let server = setup.server(options, &name).await?;
        // Up-to-date devices drawn from the whole inventory.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(devices as u64);
        let requests: Arc<Vec<_>> = Arc::new(
            (0..devices.min(10_000))
                .map(|_| setup.check_request(&format!("inv-{:07}", rng.random_range(0..devices)), "1.1.0"))
                .collect(),
        );
        results.push((
            devices,
            closed_loop(server.addr, requests, 64, warmup, measure, 200).await,
        ));
    }
    let [(small, few), (large, many)] = [results.remove(0), results.remove(0)];
    let ratio = many.latency.p99_ms / few.latency.p99_ms;
    Ok(vec![BenchRow {
        scenario: Scenario::Inventory,
        measure: format!("check p99, 64 connections, {large} vs {small} devices in the inventory"),
        ours: with_errors(
            format!("{:.2} ms ({})", many.latency.p99_ms, rate(many.per_second(), "req/s")),
            &many,
        ),
        reference: with_errors(
            format!(
                "{small} devices: {:.2} ms ({})",
                few.latency.p99_ms,
                rate(few.per_second(), "req/s")
            ),
            &few,
        ),
        ratio: Some(ratio),
        target: "≤ 1.20×".into(),
        passed: Some(ratio <= 1.2 && many.error_count() == 0),
    }])
}

/// Writes `devices` inventory rows, each with one finished update to
/// firmware `firmware_id`, straight into the server's SQLite database (the
/// server is stopped).
async fn seed_inventory(data_dir: &Path, devices: usize, firmware_id: i64) -> anyhow::Result<()> {
    use sqlx::ConnectOptions;
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data_dir.join("ota.db"))
        .connect()
        .await
        .context("opening the server's database")?;
    let now = chrono::Utc::now();
    let mut tx = sqlx::Connection::begin(&mut db).await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1) \
         INSERT INTO devices (device_id, device_type, current_version, channel, last_status, first_seen, last_seen) \
         SELECT printf('inv-%07d', i), $2, '1.1.0', 'stable', 'success', $3, $3 FROM n",
    )
    .bind(devices as i64)
    .bind(DEVICE_TYPE)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1) \
         INSERT INTO device_ota_log (device_id, firmware_id, from_version, to_version, status, progress, \
                                     started_at, updated_at, completed_at) \
         SELECT printf('inv-%07d', i), $2, '1.0.0', '1.1.0', 'success', 100, $3, $3, $3 FROM n",
    )
    .bind(devices as i64)
    .bind(firmware_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM devices")
        .fetch_one(&mut db)
        .await?;
    anyhow::ensure!(count as usize >= devices, "seeded {count} devices, wanted {devices}");
    Ok(())
}
