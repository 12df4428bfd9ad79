//! One simulated ESP32: it polls `/api/ota/check`, downloads the way
//! `esp_https_ota` does, reports its progress, "reboots" into the new image
//! and checks again. Flash, NVS, eFuse and the boot are simulated (this is
//! the one part that cannot run here); everything on the wire is real.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use ota_core::wire::{CheckRequest, CheckResponse, Offer, StatusReport};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::flash::{AntiRollback, Flash};
use crate::fleet::{DownloadMode, FleetConfig};
use crate::http::{Conn, Head, Origin, Request};
use crate::stats::{Phase, Stats};

/// Why a device gave up.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with a status the device cannot go on from.
    Http { status: u16, detail: String },
    /// The connection failed, `retries` times in a row.
    Io(io::Error),
    /// The server answered something the device does not understand.
    Protocol(String),
    /// The downloaded image does not match the offered hash.
    HashMismatch,
    /// The server offered an app image whose `secure_version` is below the
    /// device's anti-rollback counter: a real device would refuse it.
    BelowSecureVersion { image: u32, device: u32 },
}

impl Failure {
    /// The error kind for the summary.
    pub fn kind(&self) -> String {
        match self {
            Failure::Http { status, .. } => format!("http {status}"),
            Failure::Io(e) => io_kind(e),
            Failure::Protocol(_) => "protocol".into(),
            Failure::HashMismatch => "hash mismatch".into(),
            Failure::BelowSecureVersion { .. } => "below secure_version".into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Http { status, detail } => write!(f, "HTTP {status}: {detail}"),
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Protocol(what) => write!(f, "{what}"),
            Failure::HashMismatch => write!(f, "the image's SHA-256 does not match the offer"),
            Failure::BelowSecureVersion { image, device } => write!(
                f,
                "the offered image's secure_version {image} is below the device's anti-rollback counter {device}"
            ),
        }
    }
}

fn io_kind(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut => "timeout".into(),
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::UnexpectedEof => "connection closed".into(),
        io::ErrorKind::InvalidData => "bad answer".into(),
        kind => format!("io {kind}"),
    }
}

/// How an update attempt ended, when nothing went wrong unexpectedly.
enum Outcome {
    Installed,
    InstallFailed,
    RolledBack,
}

/// Paces reads to the device's link speed.
struct Pace {
    rate: Option<u64>,
    since: Instant,
    bytes: u64,
}

impl Pace {
    fn new(rate: Option<u64>) -> Self {
        Self {
            rate,
            since: Instant::now(),
            bytes: 0,
        }
    }

    async fn take(&mut self, bytes: usize) {
        let Some(rate) = self.rate else { return };
        self.bytes += bytes as u64;
        let due = self.since + Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if due > Instant::now() {
            sleep_until(due).await;
        }
    }
}

pub struct Device {
    id: String,
    token: String,
    version: String,
    config: Arc<FleetConfig>,
    stats: Arc<Stats>,
    api: Option<Conn>,
    rng: SmallRng,
    phase: Phase,
    /// Firmware this device failed to install or rolled back from: a real
    /// client remembers it and does not try again.
    refused: HashSet<i64>,
    last_outcome: Option<Phase>,
    updated: bool,
    anti_rollback: AntiRollback,
}

impl Device {
    pub fn new(id: String, token: String, config: Arc<FleetConfig>, stats: Arc<Stats>, seed: u64) -> Self {
        stats.enter(Phase::Idle);
        stats.secure_version_moved(None, config.secure_version);
        Self {
            id,
            token,
            version: config.current_version.clone(),
            anti_rollback: AntiRollback::new(config.secure_version),
            config,
            stats,
            api: None,
            rng: SmallRng::seed_from_u64(seed),
            phase: Phase::Idle,
            refused: HashSet::new(),
            last_outcome: None,
            updated: false,
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        if phase != self.phase {
            self.stats.leave(self.phase);
            self.stats.enter(phase);
            self.phase = phase;
        }
    }

    /// Polls and updates until the device has nothing left to do (in
    /// `until done` runs) or forever (the caller stops it).
    pub async fn run(mut self) {
        let config = Arc::clone(&self.config);
        let spread = config.start_spread.as_secs_f64();
        if spread > 0.0 {
            sleep(Duration::from_secs_f64(self.rng.random_range(0.0..spread))).await;
        }
        loop {
            self.set_phase(Phase::Checking);
            let offer = match self.check().await {
                Ok(offer) => offer,
                Err(failure) => return self.fail(failure),
            };
            let finished = match offer {
                None => Some(if self.updated { Phase::Updated } else { Phase::UpToDate }),
                Some(offer) if self.refused.contains(&offer.firmware_id) => self.last_outcome,
                Some(offer) => match self.update(offer).await {
                    // Booted into the new version: check again at once.
                    Ok(Outcome::Installed) => continue,
                    Ok(Outcome::InstallFailed) => Some(Phase::InstallFailed),
                    Ok(Outcome::RolledBack) => Some(Phase::RolledBack),
                    Err(failure) => return self.fail(failure),
                },
            };
            if let Some(phase) = finished
                && config.until_done
            {
                self.api = None;
                self.set_phase(phase);
                return;
            }
            self.set_phase(Phase::Idle);
            // Between polls a device closes its connection, as
            // `esp_http_client_cleanup` does.
            self.api = None;
            let interval = config.check_interval.as_secs_f64();
            let jittered = interval * self.rng.random_range(0.5..1.5);
            sleep(Duration::from_secs_f64(jittered)).await;
        }
    }

    fn fail(&mut self, failure: Failure) {
        self.stats.error(failure.kind());
        if self.config.verbose {
            eprintln!("{}: {failure}", self.id);
        }
        self.api = None;
        self.set_phase(Phase::Error);
    }

    async fn check(&mut self) -> Result<Option<Offer>, Failure> {
        let body = serde_json::to_vec(&CheckRequest {
            device_type: self.config.device_type.clone(),
            current_version: self.version.clone(),
            build_number: None,
            channel: self.config.channel.clone(),
            secure_version: self.anti_rollback.counter().map(i64::from),
        })
        .expect("a check request serialises");
        let started = Instant::now();
        let answer = self.api_call("/api/ota/check", &body).await?;
        self.stats.check.record(started.elapsed());
        match serde_json::from_slice::<CheckResponse>(&answer) {
            Ok(CheckResponse::Offer(offer)) if offer.update_available => Ok(Some(offer)),
            Ok(CheckResponse::NoUpdate(no)) if !no.update_available => Ok(None),
            Ok(_) | Err(_) => Err(Failure::Protocol(format!(
                "a check answer that is neither an offer nor `update_available: false`: {}",
                String::from_utf8_lossy(&answer)
            ))),
        }
    }

    async fn report(
        &mut self,
        firmware_id: i64,
        status: &str,
        progress: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), Failure> {
        let body = serde_json::to_vec(&StatusReport {
            firmware_id,
            status: status.to_owned(),
            progress,
            error_message: error.map(str::to_owned),
        })
        .expect("a status report serialises");
        let started = Instant::now();
        self.api_call("/api/ota/status", &body).await?;
        self.stats.status.record(started.elapsed());
        Ok(())
    }

    /// POSTs JSON to the server, retrying what a device retries: a broken
    /// connection, 429 and 503 (after `Retry-After`), 500s.
    async fn api_call(&mut self, path: &str, body: &[u8]) -> Result<Bytes, Failure> {
        let request = Request {
            method: "POST",
            path,
            headers: vec![format!("Authorization: Bearer {}", self.token)],
            body: Some(body),
            content_type: Some("application/json"),
        }
        .encode(&self.config.origin.host);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = match self.api_once(&request).await {
                Ok((head, answer)) if head.status == 200 => return Ok(answer),
                Ok((head, answer)) if head.status == 429 || head.status >= 500 => {
                    self.stats.error(format!("http {}", head.status));
                    if attempt > self.config.retries {
                        return Err(http_failure(&head, &answer));
                    }
                    head.retry_after.unwrap_or_else(|| self.backoff(attempt))
                }
                Ok((head, answer)) => return Err(http_failure(&head, &answer)),
                Err(e) => {
                    self.api = None;
                    if attempt > self.config.retries {
                        return Err(Failure::Io(e));
                    }
                    self.stats.error(io_kind(&e));
                    self.backoff(attempt)
                }
            };
            sleep(wait).await;
        }
    }

    async fn api_once(&mut self, request: &[u8]) -> io::Result<(Head, Bytes)> {
        let limit = self.config.request_timeout;
        let conn = match self.api.take() {
            Some(conn) if conn.reusable() => conn,
            _ => within(limit, Conn::connect(self.config.origin.addr, None)).await?,
        };
        let mut conn = conn;
        let head = within(limit, conn.send(request)).await?;
        let body = within(limit, conn.body()).await?;
        if conn.reusable() {
            self.api = Some(conn);
        }
        Ok((head, body))
    }

    /// Exponential backoff with full jitter: 0.5 s, 1 s, 2 s … capped at 30 s.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let cap = (0.5 * 2f64.powi(attempt.min(6) as i32 - 1)).min(30.0);
        Duration::from_secs_f64(self.rng.random_range(0.0..=cap))
    }

    /// One update attempt of one offer, from `downloading` to `success`,
    /// `failed`, or an unexpected failure.
    async fn update(&mut self, offer: Offer) -> Result<Outcome, Failure> {
        let size = u64::try_from(offer.file_size).map_err(|_| Failure::Protocol("a negative file size".into()))?;
        self.set_phase(Phase::Downloading);
        self.report(offer.firmware_id, "downloading", Some(0), None).await?;
        let mut flash = Flash::new(offer.firmware_id);
        let mut reboot_at =
            (size > 1 && self.rng.random_bool(self.config.reboot_chance)).then(|| self.rng.random_range(1..size));
        let started = Instant::now();
        let mut offer = offer;
        let mut resuming = false;
        let mut next_progress = self.config.progress_step;
        loop {
            match self
                .fetch(&offer, size, &mut flash, &mut reboot_at, resuming, &mut next_progress)
                .await
            {
                Ok(true) => break,
                Ok(false) => {
                    // Rebooted mid-download: boot, check again (the open
                    // attempt is offered again) and resume from what flash holds.
                    self.stats.reboots.fetch_add(1, Ordering::Relaxed);
                    self.api = None;
                    self.set_phase(Phase::Rebooting);
                    sleep(self.config.boot_time).await;
                    self.set_phase(Phase::Checking);
                    match self.check().await? {
                        Some(again) if again.firmware_id == flash.firmware_id && again.file_hash == offer.file_hash => {
                            offer = again;
                        }
                        other => {
                            return Err(Failure::Protocol(format!(
                                "after a reboot the server offered {:?} instead of firmware {}",
                                other.map(|o| o.firmware_id),
                                flash.firmware_id
                            )));
                        }
                    }
                    self.set_phase(Phase::Downloading);
                    resuming = true;
                }
                Err(failure) => {
                    let _ = self
                        .report(offer.firmware_id, "failed", None, Some(&format!("download: {failure}")))
                        .await;
                    return Err(failure);
                }
            }
        }
        self.stats.download.record(started.elapsed());

        let written = flash.finish();
        if !written.sha256.eq_ignore_ascii_case(&offer.file_hash) {
            let _ = self
                .report(offer.firmware_id, "failed", None, Some("SHA-256 mismatch"))
                .await;
            return Err(Failure::HashMismatch);
        }
        if let Some(image) = &written.image
            && self.anti_rollback.refuses(image)
        {
            self.stats.bricked.fetch_add(1, Ordering::Relaxed);
            let failure = Failure::BelowSecureVersion {
                image: image.app.secure_version,
                device: self.anti_rollback.counter().unwrap_or_default(),
            };
            let _ = self
                .report(
                    offer.firmware_id,
                    "failed",
                    None,
                    Some(&format!("anti-rollback: {failure}")),
                )
                .await;
            return Err(failure);
        }
        self.set_phase(Phase::Installing);
        self.report(offer.firmware_id, "installing", Some(100), None).await?;
        sleep(self.config.install_time).await;
        if self.rng.random_bool(self.config.install_fail) {
            self.report(offer.firmware_id, "failed", None, Some("install failed (simulated)"))
                .await?;
            self.refused.insert(offer.firmware_id);
            self.last_outcome = Some(Phase::InstallFailed);
            return Ok(Outcome::InstallFailed);
        }

        self.api = None;
        self.set_phase(Phase::Rebooting);
        sleep(self.config.boot_time).await;
        self.set_phase(Phase::Checking);
        if self.rng.random_bool(self.config.rollback) {
            // The new image did not confirm itself; the bootloader went back.
            self.report(offer.firmware_id, "failed", None, Some("rollback")).await?;
            self.refused.insert(offer.firmware_id);
            self.last_outcome = Some(Phase::RolledBack);
            return Ok(Outcome::RolledBack);
        }
        if let Some(image) = &written.image {
            // Confirming the new app burns its secure_version into eFuse.
            let before = self.anti_rollback.counter();
            self.anti_rollback.confirm(image);
            self.stats.secure_version_moved(before, self.anti_rollback.counter());
        }
        self.version = offer.version.clone();
        self.updated = true;
        self.report(offer.firmware_id, "success", Some(100), None).await?;
        Ok(Outcome::Installed)
    }

    /// Downloads until the image is in flash (`true`) or the device reboots
    /// (`false`). Drops are survived by reconnecting and asking for the rest.
    async fn fetch(
        &mut self,
        offer: &Offer,
        size: u64,
        flash: &mut Flash,
        reboot_at: &mut Option<u64>,
        mut resuming: bool,
        next_progress: &mut u8,
    ) -> Result<bool, Failure> {
        let url = url::Url::parse(&offer.download_url)
            .or_else(|_| self.config.server.join(&offer.download_url))
            .map_err(|e| Failure::Protocol(format!("a bad download_url: {e}")))?;
        let origin = if url.host_str() == self.config.server.host_str() && url.port() == self.config.server.port() {
            self.config.origin.clone()
        } else {
            Origin::of(&url).await.map_err(|e| Failure::Protocol(e.to_string()))?
        };
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let limit = self.config.request_timeout;
        let read_max = self
            .config
            .link_speed
            .map_or(64 * 1024, |rate| (rate / 10).clamp(1024, 64 * 1024)) as usize;
        let recv_buffer = self.config.link_speed.map(|_| 16 * 1024);
        let auth = format!("Authorization: Bearer {}", self.token);
        let mut conn: Option<Conn> = None;
        let mut head_done = false;
        let mut failures = 0;
        let mut pace = Pace::new(self.config.link_speed);

        while flash.written < size {
            if failures > self.config.retries {
                return Err(Failure::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the download failed too many times in a row",
                )));
            }
            let mut c = match conn.take() {
                Some(c) if c.reusable() => c,
                _ => match within(limit, Conn::connect(origin.addr, recv_buffer)).await {
                    Ok(c) => {
                        pace = Pace::new(self.config.link_speed);
                        c
                    }
                    Err(e) => {
                        failures += 1;
                        self.stats.error(io_kind(&e));
                        sleep(self.backoff(failures)).await;
                        continue;
                    }
                },
            };
            if self.config.mode == DownloadMode::Ranged && !head_done && !resuming {
                // Partial download mode starts with a HEAD that must say 200
                // and the full length.
                let request = Request {
                    method: "HEAD",
                    path: &path,
                    headers: vec![auth.clone()],
                    ..Default::default()
                }
                .encode(&origin.host);
                let started = Instant::now();
                match within(limit, c.send_head(&request)).await {
                    Ok(head) if head.status == 200 && head.content_length == size => {
                        self.stats.download_request.record(started.elapsed());
                        head_done = true;
                        if head.close {
                            continue;
                        }
                    }
                    Ok(head) => return Err(head_failure(&head, size)),
                    Err(e) => {
                        failures += 1;
                        self.stats.error(io_kind(&e));
                        continue;
                    }
                }
            }

            let from = flash.written;
            let range = if resuming {
                // IDF ≥ 5.5 resumes after a reboot with an open-ended range.
                Some(format!("Range: bytes={from}-"))
            } else {
                match self.config.mode {
                    DownloadMode::Single if from == 0 => None,
                    DownloadMode::Single => Some(format!("Range: bytes={from}-")),
                    // The last piece may reach past the end: the server clamps.
                    DownloadMode::Ranged => Some(format!("Range: bytes={from}-{}", from + self.config.chunk_size - 1)),
                }
            };
            resuming = false;
            let mut headers = vec![auth.clone()];
            headers.extend(range.clone());
            let request = Request {
                method: "GET",
                path: &path,
                headers,
                ..Default::default()
            }
            .encode(&origin.host);
            let started = Instant::now();
            let head = match within(limit, c.send(&request)).await {
                Ok(head) => head,
                Err(e) => {
                    failures += 1;
                    self.stats.error(io_kind(&e));
                    continue;
                }
            };
            self.stats.download_request.record(started.elapsed());
            let expected_status = if range.is_some() { 206 } else { 200 };
            if head.status == 429 || head.status == 503 {
                failures += 1;
                self.stats.error(format!("http {}", head.status));
                sleep(head.retry_after.unwrap_or_else(|| self.backoff(failures))).await;
                continue;
            }
            if head.status != expected_status {
                return Err(head_failure(&head, size));
            }
            if range.is_some() {
                let starts_right = head
                    .content_range
                    .as_deref()
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split_once('-'))
                    .is_some_and(|(start, _)| start.parse() == Ok(from));
                if !starts_right {
                    return Err(Failure::Protocol(format!(
                        "asked for bytes from {from}, got Content-Range {:?}",
                        head.content_range
                    )));
                }
            }
            // A drop cuts the connection somewhere in this answer's body.
            let cut_at = (head.content_length > 0 && self.rng.random_bool(self.config.drop_chance))
                .then(|| self.rng.random_range(0..head.content_length));
            let mut got = 0u64;
            loop {
                if cut_at.is_some_and(|cut| got >= cut) {
                    self.stats.drops.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                let chunk = match within(limit, c.body_chunk(read_max)).await {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        failures += 1;
                        self.stats.error(io_kind(&e));
                        break;
                    }
                };
                if chunk.is_empty() {
                    failures = 0;
                    if c.reusable() {
                        conn = Some(c);
                    }
                    break;
                }
                got += chunk.len() as u64;
                flash.write(&chunk);
                self.stats.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                pace.take(chunk.len()).await;
                if flash.written > size {
                    return Err(Failure::Protocol(format!("the server sent more than {size} bytes")));
                }
                let percent = (flash.written * 100 / size) as u8;
                if self.config.progress_step > 0 && percent >= *next_progress && flash.written < size {
                    while *next_progress <= percent {
                        *next_progress += self.config.progress_step;
                    }
                    self.report(offer.firmware_id, "downloading", Some(i64::from(percent)), None)
                        .await?;
                }
                if reboot_at.is_some_and(|at| flash.written >= at) && flash.written < size {
                    *reboot_at = None;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

fn http_failure(head: &Head, body: &[u8]) -> Failure {
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    Failure::Http {
        status: head.status,
        detail,
    }
}

fn head_failure(head: &Head, size: u64) -> Failure {
    if head.status == 200 || head.status == 206 {
        Failure::Protocol(format!(
            "a download answer of {} bytes for an image of {size}",
            head.content_length
        ))
    } else {
        Failure::Http {
            status: head.status,
            detail: "the download was refused".into(),
        }
    }
}

async fn within<T>(limit: Duration, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the server did not answer in time",
        )),
    }
}
