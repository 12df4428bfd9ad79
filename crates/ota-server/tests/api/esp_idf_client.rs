//! The device side, end to end: the ESP-IDF client's portable core, built
//! for Linux with its host port (`clients/esp-idf/host`, libcurl, files for
//! the flash slots and NVS) and run under ASan and UBSan, against this
//! server over real HTTP. A proxy in between records every request and cuts
//! connections on demand.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ota_core::esp::Chip;
use ota_core::esp::build::AppImageSpec;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::esp_images::{tab5_checks_images, upload_image};
use crate::helpers::*;

const PIECE: u64 = 64 * 1024;
/// Exit codes of ota-host-client.
const IDLE: i32 = 0;
const POLL_FAILED: i32 = 1;
const POWER_CUT: i32 = 3;
const REBOOT_DUE: i32 = 4;

/// Builds `ota-host-client` once per test run (make, ASan + UBSan).
fn host_client() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let out = target.join("esp-idf-host");
        let status = std::process::Command::new("make")
            .arg("-C")
            .arg(root.join("clients/esp-idf/host"))
            .arg(format!("OUT={}", out.display()))
            .arg(out.join("ota-host-client"))
            .status()
            .expect("make runs");
        assert!(
            status.success(),
            "building the host client failed: it needs gcc, make, libcurl4-openssl-dev and libcjson-dev \
             (scripts/test.sh installs them)"
        );
        let binary = out.join("ota-host-client");
        // The tests rely on the sanitizers to catch leaks and invalid accesses.
        let bytes = std::fs::read(&binary).unwrap();
        for runtime in ["__asan_init", "__ubsan_handle_"] {
            assert!(
                bytes.windows(runtime.len()).any(|w| w == runtime.as_bytes()),
                "ota-host-client is built without the sanitizer behind {runtime}"
            );
        }
        binary
    })
}

/// A Tab5 app image of `version` and about `len` bytes.
fn tab5_image(project: &str, version: &str, len: usize) -> Vec<u8> {
    AppImageSpec::new(Chip::Esp32p4)
        .chip_revisions(100, 199)
        .version(version)
        .project_name(project)
        .secure_version(1)
        .target_len(len)
        .image()
}

/// One request the client sent through the proxy.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    range: Option<(u64, Option<u64>)>,
    body: String,
}

/// Faults the proxy injects into the server's answers, each on as many
/// connections as its counter says.
#[derive(Default)]
struct Faults {
    /// Connections to cut once `cut_after` response bytes have passed.
    cuts: AtomicUsize,
    cut_after: usize,
    /// Connections whose response byte `corrupt_at` is flipped.
    corruptions: AtomicUsize,
    corrupt_at: usize,
    /// Requests whose body contains `lose_answer_to` reach the server, but
    /// their answers are lost (the connection closes instead).
    lost_answers: AtomicUsize,
    lose_answer_to: &'static str,
}

impl Faults {
    /// Takes one from `counter` if any is left.
    fn take(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A TCP proxy to the server that records request heads and injects faults.
struct Proxy {
    address: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    faults: Arc<Faults>,
}

impl Proxy {
    async fn start(upstream: &str, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(faults);
        let (seen_, faults_) = (seen.clone(), faults.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(client, server, seen_.clone(), faults_.clone()));
            }
        });
        Proxy { address, seen, faults }
    }

    fn mark(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn since(&self, mark: usize) -> Vec<Seen> {
        self.seen.lock().unwrap()[mark..].to_vec()
    }
}

async fn relay(client: TcpStream, server: TcpStream, seen: Arc<Mutex<Vec<Seen>>>, faults: Arc<Faults>) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let lose_answer = Arc::new(AtomicBool::new(false));
    let lose_answer_ = lose_answer.clone();
    let faults_ = faults.clone();
    let upstream = async move {
        let mut parser = RequestParser::default();
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = client_rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            // Parsed before it is forwarded: the answer cannot come first.
            for request in parser.feed(&buf[..n]) {
                if !faults_.lose_answer_to.is_empty()
                    && request.body.contains(faults_.lose_answer_to)
                    && Faults::take(&faults_.lost_answers)
                {
                    lose_answer_.store(true, Ordering::SeqCst);
                }
                seen.lock().unwrap().push(request);
            }
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_tx.shutdown().await;
    };
    let downstream = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let (mut passed, mut cut, mut corrupted) = (0usize, false, false);
        while let Ok(n) = server_rx.read(&mut buf).await {
            let mut n = n;
            if n == 0 || lose_answer.load(Ordering::SeqCst) {
                break;
            }
            let end = passed + n;
            if !corrupted && faults.corrupt_at >= passed && faults.corrupt_at < end && Faults::take(&faults.corruptions)
            {
                buf[faults.corrupt_at - passed] ^= 0x01;
                corrupted = true;
            }
            if faults.cut_after > passed && faults.cut_after <= end && Faults::take(&faults.cuts) {
                n = faults.cut_after - passed;
                cut = true;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() || cut {
                break;
            }
            passed = end;
        }
        let _ = client_tx.shutdown().await;
    };
    // A cut ends both directions: the client sees its connection end mid-body.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

/// Splits a client's byte stream into requests (bodies by Content-Length),
/// enough for what the host client sends. A request is complete, and
/// returned, once its last byte is fed.
#[derive(Default)]
struct RequestParser {
    pending: Vec<u8>,
    waiting: Option<(Seen, usize)>,
}

impl RequestParser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Seen> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            if let Some((mut seen, left)) = self.waiting.take() {
                let take = left.min(self.pending.len());
                seen.body.push_str(&String::from_utf8_lossy(&self.pending[..take]));
                self.pending.drain(..take);
                if left > take {
                    self.waiting = Some((seen, left - take));
                    return out;
                }
                out.push(seen);
            }
            let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                return out;
            };
            let head = String::from_utf8_lossy(&self.pending[..end]).into_owned();
            self.pending.drain(..end + 4);
            let mut lines = head.lines();
            let mut first = lines.next().unwrap_or_default().split(' ');
            let (method, path) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
            let (mut range, mut body_len) = (None, 0);
            for line in lines {
                let (name, value) = line.split_once(':').unwrap_or_default();
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    body_len = value.parse().unwrap();
                } else if name.eq_ignore_ascii_case("range") {
                    let (from, to) = value.trim_start_matches("bytes=").split_once('-').unwrap();
                    range = Some((from.parse().unwrap(), to.parse().ok()));
                }
            }
            let seen = Seen {
                method: method.to_owned(),
                path: path.split('?').next().unwrap_or_default().to_owned(),
                range,
                body: String::new(),
            };
            self.waiting = Some((seen, body_len));
        }
    }
}

/// A simulated device: a folder with the flash slots and NVS, slot 0
/// holding the app it shipped with.
struct Device {
    id: String,
    dir: tempfile::TempDir,
    token: String,
}

impl Device {
    fn new(id: &str, shipped: &[u8]) -> Device {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("slot0.bin"), shipped).unwrap();
        Device {
            id: id.to_owned(),
            dir,
            token: device_token(id),
        }
    }

    /// Runs `ota-host-client` for this device against `server`; returns its
    /// exit code and what it printed. Fails on any sanitizer report.
    async fn run(&self, server: &str, extra: &[&str]) -> (i32, String) {
        let output = tokio::process::Command::new(host_client())
            .args(["--server", server, "--device-type", DEVICE_TYPE, "--retry-ms", "50"])
            .arg("--device-dir")
            .arg(self.dir.path())
            .args(extra)
            .env("OTA_DEVICE_TOKEN", &self.token)
            .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
            .output()
            .await
            .expect("ota-host-client runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        for alarm in ["Sanitizer", "runtime error", "LeakSanitizer"] {
            assert!(!stderr.contains(alarm), "the client tripped {alarm}:\n{stderr}");
        }
        let code = output.status.code().expect("the client exited rather than crashed");
        eprintln!("--- ota-host-client {extra:?} exit {code}\n{stdout}{stderr}");
        (code, stdout + &stderr)
    }

    fn slot(&self, n: u8) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join(format!("slot{n}.bin"))).ok()
    }

    fn otadata(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("otadata")).unwrap_or_default()
    }
}

/// The device's OTA log rows, oldest first.
async fn rows_of(app: &TestApp, device: &Device) -> Vec<Value> {
    let mut rows = app.logs(&format!("device_id={}", device.id)).await["items"]
        .as_array()
        .unwrap()
        .clone();
    rows.reverse();
    rows
}

async fn the_row(app: &TestApp, device: &Device) -> Value {
    let rows = rows_of(app, device).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    rows[0].clone()
}

/// A server with the Tab5 type checking images, and `version` published
/// stable for it.
async fn server_offering(version: &str, image: &[u8]) -> (TestApp, i64) {
    server_offering_with(version, image, &[]).await
}

async fn server_offering_with(version: &str, image: &[u8], fields: &[(&str, &str)]) -> (TestApp, i64) {
    let app = spawn_app().await;
    tab5_checks_images(&app).await;
    let fields = [&[("register", "true"), ("is_stable", "true")], fields].concat();
    let response = upload_image(&app, image.to_vec(), &fields).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let uploaded: Value = response.json().await.unwrap();
    assert_eq!(uploaded["firmware"]["version"], version);
    (app, uploaded["firmware"]["id"].as_i64().unwrap())
}

#[tokio::test]
async fn the_host_client_updates_through_cut_connections_and_a_power_cut() {
    // Arrange: 1.1.0 (about 7 pieces) on the server; a Tab5 running 1.0.0.
    // Their descriptors say "v1.1.0" and "v1.0.0", as `git describe` tags do;
    // the server names the new one "1.1.0".
    let new_image = tab5_image("scales_bridge", "v1.1.0", 420 * 1024);
    let (app, firmware_id) = server_offering("1.1.0", &new_image).await;
    let device = Device::new("tab5-0001", &tab5_image("scales_bridge", "v1.0.0", 300 * 1024));
    let faults = Faults {
        cut_after: 80 * 1024,
        ..Faults::default()
    };
    let proxy = Proxy::start(&app.address, faults).await;

    // A check alone opens the attempt: pending.
    let (code, out) = device.run(&proxy.address, &["--check-only"]).await;
    assert_eq!(code, IDLE);
    assert!(
        out.contains(&format!(
            "update_available=true firmware_id={firmware_id} version=1.1.0"
        )),
        "{out}"
    );
    let row = the_row(&app, &device).await;
    assert_eq!(row["status"], "pending");
    let log_id = row["id"].clone();

    // Two connections cut mid-download, then the power goes at 45 %.
    proxy.faults.cuts.store(2, Ordering::SeqCst);
    let power_cut_at = new_image.len() as u64 * 45 / 100;
    let mark = proxy.mark();
    let (code, out) = device
        .run(&proxy.address, &["--power-cut-at", &power_cut_at.to_string()])
        .await;
    assert_eq!(code, POWER_CUT, "{out}");
    assert_eq!(proxy.faults.cuts.load(Ordering::SeqCst), 0, "both cuts happened");
    let before_power_cut = proxy.since(mark);
    let row = the_row(&app, &device).await;
    assert_eq!(
        (row["id"].clone(), row["status"].as_str()),
        (log_id.clone(), Some("downloading"))
    );
    let progress = row["progress"].as_i64().unwrap();
    assert!(
        (10..=40).contains(&progress) && progress % 10 == 0,
        "progress {progress} in 10 % steps"
    );
    assert_eq!(device.otadata(), "", "nothing activated yet");

    // After the "reboot": it resumes where NVS says, finishes, checks the
    // hash and activates the new slot, then stops before rebooting.
    let mark = proxy.mark();
    let (code, out) = device.run(&proxy.address, &["--boots", "1"]).await;
    assert_eq!(code, REBOOT_DUE, "{out}");
    assert!(out.contains("verdict resumable"), "{out}");
    let after_power_cut = proxy.since(mark);
    let row = the_row(&app, &device).await;
    assert_eq!(
        (row["id"].clone(), row["status"].as_str()),
        (log_id.clone(), Some("installing"))
    );
    assert_eq!(
        device.slot(1).as_deref(),
        Some(new_image.as_slice()),
        "the slot holds the exact image"
    );
    assert_eq!(device.otadata(), "boot=1 state=new\n");

    // Every download went HEAD first, then Range pieces of at most 64 KiB.
    let downloads: Vec<Seen> = before_power_cut
        .iter()
        .chain(&after_power_cut)
        .filter(|s| s.path == format!("/api/ota/download/{firmware_id}"))
        .cloned()
        .collect();
    assert_eq!(downloads[0].method, "HEAD");
    assert_eq!(
        downloads.iter().filter(|s| s.method == "HEAD").count(),
        4,
        "one per attempt: {downloads:#?}"
    );
    for seen in downloads.iter().filter(|s| s.method == "GET") {
        let (from, to) = seen.range.expect("every GET asks for a range");
        let to = to.expect("a bounded range");
        assert!(to >= from && to - from < PIECE, "{seen:?}");
    }
    let full_pieces = downloads
        .iter()
        .filter_map(|s| s.range)
        .filter(|(from, to)| to.map(|to| to - from + 1) == Some(PIECE))
        .count();
    assert!(full_pieces >= 5, "{downloads:#?}");
    // The resumed download starts where the first run's NVS record ended,
    // not at byte 0, and never re-fetches what the record covers.
    let resumed_from = after_power_cut
        .iter()
        .find_map(|s| (s.method == "GET" && s.path.starts_with("/api/ota/download")).then_some(s.range))
        .flatten()
        .expect("the resumed download asked for a range")
        .0;
    assert!(
        resumed_from > 0 && resumed_from <= power_cut_at,
        "resumed at {resumed_from}"
    );
    let mut next = resumed_from;
    for seen in after_power_cut
        .iter()
        .filter(|s| s.method == "GET" && s.path.starts_with("/api/ota/download"))
    {
        let (from, to) = seen.range.unwrap();
        assert_eq!(from, next, "pieces follow each other, none fetched twice");
        next = to.unwrap() + 1;
    }
    assert_eq!(next, new_image.len() as u64);
    assert_eq!(after_power_cut[0].path, "/api/ota/check", "a fresh link first");

    // The new app boots pending verify, passes its self-test, confirms, reports.
    let (code, out) = device.run(&proxy.address, &["--boots", "1"]).await;
    assert_eq!(code, IDLE, "{out}");
    assert!(out.contains("boot slot=1 state=pending_verify version=v1.1.0"), "{out}");
    let confirmed = out.find("confirmed slot=1").expect("confirmed");
    assert!(confirmed < out.find("verdict confirmed").unwrap());
    let row = the_row(&app, &device).await;
    assert_eq!((row["id"].clone(), row["status"].as_str()), (log_id, Some("success")));
    assert_eq!(row["progress"], 100);
    assert!(row["completed_at"].is_string());
    assert_eq!(device.otadata(), "boot=1 state=valid\n");

    // Running 1.1.0 now, it is offered nothing.
    let (code, out) = device.run(&proxy.address, &["--check-only"]).await;
    assert_eq!(code, IDLE);
    assert!(out.contains("boot slot=1 state=valid version=v1.1.0"), "{out}");
    assert!(out.contains("update_available=false"), "{out}");
    assert!(
        !device.dir.path().join("nvs/ota_attempt").exists(),
        "the attempt is closed"
    );
}

#[tokio::test]
async fn a_lost_answer_to_the_success_report_does_not_stall_the_device() {
    let new_image = tab5_image("scales_bridge", "1.1.0", 150 * 1024);
    let (app, _) = server_offering("1.1.0", &new_image).await;
    let faults = Faults {
        lost_answers: AtomicUsize::new(1),
        lose_answer_to: r#""status":"success""#,
        ..Faults::default()
    };
    let proxy = Proxy::start(&app.address, faults).await;
    let device = Device::new("tab5-0005", &tab5_image("scales_bridge", "1.0.0", 100 * 1024));

    // Boot 1 installs; boot 2 confirms and reports success, whose answer is
    // lost; its poll sends it again, finds it already taken, and checks.
    let (code, out) = device.run(&proxy.address, &["--boots", "2"]).await;

    assert_eq!(code, IDLE, "{out}");
    assert_eq!(
        proxy.faults.lost_answers.load(Ordering::SeqCst),
        0,
        "an answer was lost"
    );
    let seen = proxy.since(0);
    let successes = seen
        .iter()
        .filter(|s| s.path == "/api/ota/status" && s.body.contains(r#""status":"success""#))
        .count();
    assert!(successes >= 2, "success was sent again: {seen:#?}");
    assert_eq!(
        seen.last().map(|s| s.path.as_str()),
        Some("/api/ota/check"),
        "it went on checking"
    );
    assert_eq!(the_row(&app, &device).await["status"], "success");
    assert!(
        !device.dir.path().join("nvs/ota_attempt").exists(),
        "the attempt is closed"
    );
}

#[tokio::test]
async fn the_same_version_with_a_higher_build_number_is_installed() {
    let new_image = tab5_image("scales_bridge", "1.1.0", 100 * 1024);
    let (app, _) = server_offering_with("1.1.0", &new_image, &[("build_number", "7")]).await;
    let device = Device::new("tab5-0006", &tab5_image("scales_bridge", "1.1.0", 100 * 1024));

    let (code, out) = device.run(&app.address, &["--build-number", "3", "--boots", "1"]).await;
    assert_eq!(code, REBOOT_DUE, "{out}");
    // The new app is build 7 (a build number is compiled into the app).
    let (code, out) = device.run(&app.address, &["--build-number", "7", "--boots", "1"]).await;

    assert_eq!(code, IDLE, "{out}");
    assert!(out.contains("confirmed slot=1"), "{out}");
    assert!(!out.contains("rebooting"), "nothing more to install: {out}");
    assert_eq!(the_row(&app, &device).await["status"], "success");
    // A build that still says 3 is offered build 7 again: it is not
    // installed over itself in a loop.
    let (code, out) = device.run(&app.address, &["--build-number", "3", "--boots", "1"]).await;
    assert_eq!(code, IDLE, "{out}");
    assert!(out.contains("not retrying"), "{out}");
}

#[tokio::test]
async fn a_new_app_that_fails_its_self_test_is_rolled_back_and_reported() {
    let new_image = tab5_image("scales_bridge", "1.1.0", 200 * 1024);
    let (app, firmware_id) = server_offering("1.1.0", &new_image).await;
    let device = Device::new("tab5-0002", &tab5_image("scales_bridge", "1.0.0", 200 * 1024));

    // Boot 1 installs, boot 2 (pending verify) fails its self-test and asks
    // for the rollback, boot 3 runs 1.0.0 again and reports.
    let (code, out) = device.run(&app.address, &["--self-test", "fail", "--boots", "3"]).await;

    assert_eq!(code, IDLE, "{out}");
    assert!(out.contains("boot slot=1 state=pending_verify version=1.1.0"), "{out}");
    assert!(out.contains("self-test failed"), "{out}");
    assert!(out.contains("boot slot=0 state=valid version=1.0.0"), "{out}");
    assert!(out.contains("verdict rolled_back"), "{out}");
    assert!(!out.contains("confirmed slot=1"), "{out}");
    assert_eq!(device.otadata(), "boot=0 state=valid\n");
    let failed: Vec<Value> = rows_of(&app, &device)
        .await
        .into_iter()
        .filter(|r| r["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["firmware_id"], firmware_id);
    let message = failed[0]["error_message"].as_str().unwrap();
    assert!(message.starts_with("rollback: 1.0.0 runs again"), "{message}");
    // The server does not offer the build that just rolled back on this
    // device again: no new attempt is opened, not even a pending one.
    let (code, out) = device.run(&app.address, &["--boots", "1"]).await;
    assert_eq!(code, IDLE, "{out}");
    assert!(!out.contains("writing it"), "{out}");
    assert_eq!(rows_of(&app, &device).await.len(), 1, "one attempt only");
}

#[tokio::test]
async fn a_device_refuses_an_image_for_another_project_before_writing_it() {
    let (app, _) = server_offering("1.1.0", &tab5_image("scales_bridge", "1.1.0", 100 * 1024)).await;
    let device = Device::new("tab5-0003", &tab5_image("lab_fixture", "1.0.0", 100 * 1024));

    let (code, out) = device.run(&app.address, &["--boots", "1"]).await;

    assert_eq!(code, POLL_FAILED, "{out}");
    assert_eq!(device.slot(1).map(|s| s.len()), Some(0), "not one byte written");
    assert_eq!(device.otadata(), "");
    let row = the_row(&app, &device).await;
    assert_eq!(row["status"], "failed");
    let message = row["error_message"].as_str().unwrap();
    assert!(
        message.contains("project \"scales_bridge\"") && message.contains("\"lab_fixture\""),
        "{message}"
    );
}

#[tokio::test]
async fn bytes_that_do_not_match_the_announced_hash_are_never_booted() {
    let image = tab5_image("scales_bridge", "1.1.0", 200 * 1024);
    let (app, _) = server_offering("1.1.0", &image).await;
    // One bit flips on the way, inside the first piece's body (past the
    // image header, which the device checks before writing).
    let faults = Faults {
        corruptions: AtomicUsize::new(1),
        corrupt_at: 30_000,
        ..Faults::default()
    };
    let proxy = Proxy::start(&app.address, faults).await;
    let device = Device::new("tab5-0004", &tab5_image("scales_bridge", "1.0.0", 100 * 1024));

    let (code, out) = device.run(&proxy.address, &["--boots", "1"]).await;

    assert_eq!(proxy.faults.corruptions.load(Ordering::SeqCst), 0, "the bit flipped");
    assert_eq!(code, POLL_FAILED, "{out}");
    assert_eq!(device.otadata(), "", "the bad slot is not activated");
    let row = the_row(&app, &device).await;
    assert_eq!(row["status"], "failed");
    let message = row["error_message"].as_str().unwrap();
    assert!(message.starts_with("hash_mismatch:"), "{message}");
    let (code, out) = device.run(&app.address, &["--check-only"]).await;
    assert_eq!(code, IDLE);
    assert!(out.contains("boot slot=0 state=valid version=1.0.0"), "{out}");
}

#[tokio::test]
async fn a_power_cut_right_after_activation_still_ends_in_success() {
    let (app, _) = server_offering("1.1.0", &tab5_image("scales_bridge", "1.1.0", 100 * 1024)).await;
    let device = Device::new("tab5-0007", &tab5_image("scales_bridge", "1.0.0", 100 * 1024));

    // The slot is activated, but the power goes before the record says so.
    let (code, out) = device.run(&app.address, &["--power-cut-after-activation"]).await;
    assert_eq!(code, POWER_CUT, "{out}");
    assert_eq!(device.otadata(), "boot=1 state=new\n");

    let (code, out) = device.run(&app.address, &["--boots", "1"]).await;

    assert_eq!(code, IDLE, "{out}");
    assert!(out.contains("boot slot=1 state=pending_verify version=1.1.0"), "{out}");
    assert!(out.contains("verdict confirmed"), "{out}");
    assert_eq!(the_row(&app, &device).await["status"], "success");
}

#[tokio::test]
async fn without_a_self_test_a_new_app_that_cannot_reach_the_server_is_rolled_back_and_tried_again() {
    let (app, _) = server_offering("1.1.0", &tab5_image("scales_bridge", "1.1.0", 100 * 1024)).await;
    let device = Device::new("tab5-0008", &tab5_image("scales_bridge", "1.0.0", 100 * 1024));
    let (code, out) = device.run(&app.address, &["--self-test", "none", "--boots", "1"]).await;
    assert_eq!(code, REBOOT_DUE, "{out}");

    // The new app's first boot finds no server (nothing listens there).
    let dead = "http://127.0.0.1:9";
    let (code, out) = device.run(dead, &["--self-test", "none", "--boots", "1"]).await;
    assert_eq!(code, REBOOT_DUE, "{out}");
    assert!(out.contains("rollback requested"), "{out}");

    // Back on the old app with the server up: the rollback is reported as
    // the server's absence, and the build is installed again.
    let (code, out) = device.run(&app.address, &["--self-test", "none", "--boots", "1"]).await;
    assert_eq!(code, REBOOT_DUE, "{out}");
    assert!(out.contains("boot slot=0 state=valid version=1.0.0"), "{out}");
    let rows = rows_of(&app, &device).await;
    let message = rows[0]["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("could not reach the server"), "{rows:#?}");
    assert_eq!(
        rows.last().unwrap()["status"],
        "installing",
        "installed again: {rows:#?}"
    );

    // This time it reaches the server: kept, and reported.
    let (code, out) = device.run(&app.address, &["--self-test", "none", "--boots", "1"]).await;
    assert_eq!(code, IDLE, "{out}");
    assert!(out.contains("verdict confirmed"), "{out}");
    assert_eq!(rows_of(&app, &device).await.last().unwrap()["status"], "success");
}

#[tokio::test]
async fn a_recall_takes_the_device_back_to_the_previous_version() {
    let (app, bad) = server_offering("1.1.0", &tab5_image("scales_bridge", "1.1.0", 100 * 1024)).await;
    let shipped = tab5_image("scales_bridge", "1.0.0", 100 * 1024);
    let response = upload_image(&app, shipped.clone(), &[("register", "true"), ("is_stable", "true")]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let previous = response.json::<Value>().await.unwrap()["firmware"]["id"]
        .as_i64()
        .unwrap();
    let device = Device::new("tab5-0009", &shipped);
    let (code, out) = device.run(&app.address, &["--boots", "1"]).await;
    assert_eq!(code, REBOOT_DUE, "{out}");
    let (code, out) = device.run(&app.address, &["--boots", "1"]).await;
    assert_eq!(code, IDLE, "{out}");
    assert!(out.contains("confirmed slot=1"), "{out}");

    let response = app
        .admin_post(
            &format!("/api/ota/admin/firmware/{bad}/recall"),
            json!({"reason": "drops the scale"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // The next check offers 1.0.0 as a downgrade: installed into slot 0,
    // booted, confirmed, reported.
    let (code, out) = device.run(&app.address, &["--boots", "1", "--check-only"]).await;
    assert_eq!(code, IDLE, "{out}");
    assert!(out.contains("is_downgrade=true"), "{out}");
    let (code, out) = device.run(&app.address, &["--boots", "1"]).await;
    assert_eq!(code, REBOOT_DUE, "{out}");
    let (code, out) = device.run(&app.address, &["--boots", "1"]).await;
    assert_eq!(code, IDLE, "{out}");
    assert!(out.contains("boot slot=0 state=pending_verify version=1.0.0"), "{out}");
    assert!(out.contains("confirmed slot=0"), "{out}");
    let rows = rows_of(&app, &device).await;
    let last = rows.last().unwrap();
    assert_eq!(
        (last["firmware_id"].as_i64(), &last["status"]),
        (Some(previous), &json!("success")),
        "{rows:#?}"
    );
    assert_eq!(last["from_version"], "1.1.0", "{rows:#?}");
    // Back on 1.0.0, it is offered nothing: the recalled build never again.
    let (code, out) = device.run(&app.address, &["--boots", "1"]).await;
    assert_eq!(code, IDLE, "{out}");
    assert!(!out.contains("writing it"), "{out}");
}
