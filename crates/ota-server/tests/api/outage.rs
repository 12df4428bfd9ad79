//! The database goes away under load and comes back: the server answers
//! 503 problem+json meanwhile, says it is not ready, never crashes, recovers
//! by itself, and loses no acknowledged status report.
//!
//! PostgreSQL is really stopped (`pg_ctl stop -m immediate`, as a crash
//! would) and started again. It is a private cluster of this test's own on
//! a free port, made with the machine's PostgreSQL binaries, so stopping it
//! disturbs no other test. Runs in the PostgreSQL pass of `scripts/test.sh`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::*;
use crate::process::ServerProcess;

const DEVICES: usize = 40;

/// A PostgreSQL cluster in a temporary folder, run as the `postgres` user
/// when the tests run as root (PostgreSQL refuses to run as root).
struct PrivatePostgres {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    fn start() -> Self {
        let bindir = std::env::var_os("OTA_PG_BINDIR")
            .map(PathBuf::from)
            .or_else(|| {
                let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|p| p.join("pg_ctl").exists())
                    .collect();
                found.sort();
                found.pop()
            })
            .expect("PostgreSQL's binaries (scripts/test.sh installs them and sets OTA_PG_BINDIR)");
        let dir = tempfile::Builder::new()
            .prefix("ota-outage-")
            .tempdir_in("/tmp")
            .unwrap();
        let as_postgres = running_as_root();
        if as_postgres {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(chowned.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PrivatePostgres {
            bindir,
            dir,
            port,
            as_postgres,
        };
        let data = cluster.data();
        cluster.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
        cluster.start_again();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// One of PostgreSQL's tools, as the user that owns the cluster.
    fn tool(&self, tool: &str, args: &[&str]) -> Command {
        let program = self.bindir.join(tool);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.args(args);
        command
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let output = self.tool(tool, args).output().unwrap();
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"],
        );
    }

    /// As a crash would: no shutdown checkpoint, connections cut.
    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Everything the server answered during the run that was not a 200.
#[derive(Default)]
struct Seen {
    unavailable: usize,
    unexpected: Vec<String>,
}

/// Sends `request` until it is answered 200; every 503 must be a problem
/// document. Returns the 200's body.
async fn until_ok(seen: &Mutex<Seen>, request: impl Fn() -> reqwest::RequestBuilder) -> Value {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no 200 in two minutes; the last answer: {last}"
        );
        let response = match request().send().await {
            Ok(response) => response,
            Err(e) => {
                last = format!("no answer: {e:?}");
                seen.lock().await.unexpected.push(format!("no answer: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = response.status();
        if status == StatusCode::OK {
            return response.json().await.unwrap();
        }
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.text().await.unwrap_or_default();
        last = format!("{status} {body}");
        let mut seen = seen.lock().await;
        if status == StatusCode::SERVICE_UNAVAILABLE && content_type == "application/problem+json" {
            seen.unavailable += 1;
        } else {
            seen.unexpected.push(format!("{status} {content_type}: {body}"));
        }
        drop(seen);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_under_load_answers_503_and_loses_no_acknowledged_report() {
    if !on_postgres() {
        eprintln!("OTA_TEST_DATABASE_URL is not set: the outage test runs in the PostgreSQL pass");
        return;
    }
    let postgres = PrivatePostgres::start();
    let data_dir = tempfile::tempdir().unwrap();
    let database_url = postgres.url();
    let server = ServerProcess::start(
        data_dir.path(),
        &[
            ("OTA_DATABASE_URL", database_url.as_str()),
            ("OTA_ADMIN_TOKEN", ADMIN_TOKEN),
            ("OTA_DEVICE_JWT_SECRET", JWT_SECRET),
            ("OTA_DEVICE_RATE_LIMIT", "0"),
        ],
    );
    server.create_device_type().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let firmware_id = server.publish("1.1.0", &firmware_bytes(4096, 3)).await["id"]
        .as_i64()
        .unwrap();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let down = Arc::new(AtomicBool::new(false));
    let not_ready_while_down = Arc::new(AtomicBool::new(false));

    // Devices: check, then each report once acknowledged, slowly enough
    // that the outage falls in the middle of the run.
    let devices = {
        let (client, seen, server_url) = (client.clone(), Arc::clone(&seen), server.url(""));
        tokio::spawn(async move {
            futures_util::stream::iter(1..=DEVICES)
                .map(|n| {
                    let (client, seen, base) = (client.clone(), Arc::clone(&seen), server_url.clone());
                    async move {
                        // Staggered over ten seconds, so some devices
                        // start before, during and after the outage.
                        tokio::time::sleep(Duration::from_millis(250 * n as u64)).await;
                        let device_id = format!("tab5-{n:04}");
                        let token = device_token(&device_id);
                        let offer = until_ok(&seen, || {
                            client
                                .post(format!("{base}/api/ota/check"))
                                .bearer_auth(&token)
                                .json(&json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0"}))
                        })
                        .await;
                        assert_eq!(offer["firmware_id"], firmware_id, "{offer}");
                        for status in ["downloading", "installing", "success"] {
                            tokio::time::sleep(Duration::from_millis(700)).await;
                            until_ok(&seen, || {
                                client
                                    .post(format!("{base}/api/ota/status"))
                                    .bearer_auth(&token)
                                    .json(&json!({"firmware_id": firmware_id, "status": status}))
                            })
                            .await;
                        }
                    }
                })
                .buffer_unordered(DEVICES)
                .collect::<Vec<()>>()
                .await
        })
    };
    // readyz, watched throughout.
    let watcher = {
        let (client, url, down, not_ready) = (
            client.clone(),
            server.url("/readyz"),
            Arc::clone(&down),
            Arc::clone(&not_ready_while_down),
        );
        tokio::spawn(async move {
            loop {
                if let Ok(response) = client.get(&url).send().await
                    && down.load(Ordering::SeqCst)
                    && response.status() == StatusCode::SERVICE_UNAVAILABLE
                {
                    not_ready.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    postgres.stop();
    down.store(true, Ordering::SeqCst);
    // Longer than a request waits for a connection (5 s): requests that
    // came in at the start of the outage have had their 503.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        not_ready_while_down.load(Ordering::SeqCst),
        "readyz never said 503 while the database was down"
    );
    down.store(false, Ordering::SeqCst);
    postgres.start_again();

    tokio::time::timeout(Duration::from_secs(120), devices)
        .await
        .expect("the devices did not all finish after the database came back")
        .unwrap_or_else(|e| panic!("{e}; the server's log:\n{}", server.log()));
    watcher.abort();

    let seen = seen.lock().await;
    assert!(
        seen.unexpected.is_empty(),
        "answers other than 200 and 503 problem+json: {:?}",
        seen.unexpected
    );
    assert!(seen.unavailable > 0, "no request ever met the outage");
    assert_eq!(
        client.get(server.url("/readyz")).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Every acknowledged report is there: one attempt per device, each a
    // success, and no attempt twice.
    let mut db = OtherConnection::open(&database_url).await;
    assert_eq!(db.count("SELECT COUNT(*) FROM device_ota_log").await, DEVICES as i64);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM device_ota_log WHERE status = 'success'")
            .await,
        DEVICES as i64
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT device_id) FROM device_ota_log").await,
        DEVICES as i64
    );
    assert!(
        server.log().contains("\"level\":\"WARN\""),
        "the outage left no warning in the log"
    );
    eprintln!(
        "outage: {} answers 503 problem+json while the database was down",
        seen.unavailable
    );
}
