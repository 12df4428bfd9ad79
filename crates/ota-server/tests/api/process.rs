//! The real `ota-server` binary as a child process: first start, memory
//! use under a large upload, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

pub(crate) struct ServerProcess {
    child: Child,
    address: String,
    log: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts `ota-server serve` with these environment variables and waits
    /// until it logs the address it serves on.
    pub(crate) fn start(data_dir: &std::path::Path, envs: &[(&str, &str)]) -> Self {
        Self::start_with_args(data_dir, &[], envs)
    }

    fn start_with_args(data_dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ota-server"));
        command
            .arg("serve")
            .args(args)
            .env_clear()
            .env("OTA_LISTEN", "127.0.0.1:0")
            .env("OTA_DATA_DIR", data_dir)
            .env("OTA_LOG_FORMAT", "json")
            .env("OTA_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the server binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(event) = serde_json::from_str::<Value>(&line)
                        && event["message"] == "serving"
                    {
                        let _ = tx.send(event["listen"].as_str().unwrap_or_default().to_owned());
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let address = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!("the server did not start: {}", log.lock().unwrap());
        });
        ServerProcess {
            child,
            address: format!("http://{address}"),
            log,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "the server did not exit: {}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates the test device type as `raw`, with the test admin token.
    pub(crate) async fn create_device_type(&self) {
        let response = reqwest::Client::new()
            .post(self.url("/api/ota/admin/device-types"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"name": DEVICE_TYPE, "image_format": "raw"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    /// Uploads and registers `bytes` as a stable build of the test device
    /// type; returns the firmware record.
    pub(crate) async fn publish(&self, version: &str, bytes: &[u8]) -> Value {
        let form = reqwest::multipart::Form::new()
            .text("device_type", DEVICE_TYPE)
            .text("version", version.to_owned())
            .text("is_stable", "true")
            .text("register", "true")
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("app.bin"),
            );
        let response = reqwest::Client::new()
            .post(self.url("/api/ota/admin/upload"))
            .bearer_auth(ADMIN_TOKEN)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{}", self.log());
        response.json::<Value>().await.unwrap()["firmware"].clone()
    }

    /// Uploads and registers a firmware of `size` bytes, then starts a
    /// device's download of it; returns the bytes and the open response.
    async fn publish_and_start_download(&self, size: usize) -> (Vec<u8>, reqwest::Response) {
        self.create_device_type().await;
        let client = reqwest::Client::new();
        let bytes = firmware_bytes(size, 6);
        let id = self.publish("1.1.0", &bytes).await["id"].as_i64().unwrap();
        let download = client
            .get(self.url(&format!("/api/ota/download/{id}")))
            .bearer_auth(device_token("tab5-0001"))
            .send()
            .await
            .unwrap();
        assert_eq!(download.status(), StatusCode::OK);
        (bytes, download)
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn first_start_generates_secrets_0600_and_logs_where_not_what() {
    use std::os::unix::fs::PermissionsExt;
    let data_dir = tempfile::tempdir().unwrap();
    let nested = data_dir.path().join("new/data");

    let server = ServerProcess::start(&nested, &[]);

    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(
        nested.join("ota.db").exists(),
        "the database is created in the data dir"
    );
    let log = server.log();
    for name in ["admin_token", "device_jwt_secret", "link_signing_key"] {
        let path = nested.join("secrets").join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
        let value = std::fs::read_to_string(&path).unwrap();
        assert!(value.trim().len() >= 32);
        assert!(!log.contains(value.trim()), "the log shows the {name}");
        assert!(
            log.contains(path.to_str().unwrap()),
            "the log does not say where {name} is"
        );
    }
    let admin_token = std::fs::read_to_string(nested.join("secrets/admin_token")).unwrap();
    let listed = reqwest::Client::new()
        .get(server.url("/api/ota/admin/firmware"))
        .bearer_auth(admin_token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK, "the generated admin token works");
}

#[tokio::test]
async fn a_configured_secret_never_appears_in_the_log() {
    let data_dir = tempfile::tempdir().unwrap();
    let token = "configured-admin-token-do-not-log-me";

    let server = ServerProcess::start(data_dir.path(), &[("OTA_ADMIN_TOKEN", token), ("RUST_LOG", "debug")]);
    reqwest::get(server.url("/healthz")).await.unwrap();

    assert!(!server.log().contains(token));
    assert!(
        !data_dir.path().join("secrets/admin_token").exists(),
        "a configured secret is not written"
    );
}

#[tokio::test]
async fn a_weak_admin_token_stops_the_start() {
    let data_dir = tempfile::tempdir().unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_ota-server"))
        .arg("serve")
        .env_clear()
        .env("OTA_LISTEN", "127.0.0.1:0")
        .env("OTA_DATA_DIR", data_dir.path())
        .env("OTA_ADMIN_TOKEN", "changeme")
        .output()
        .unwrap();

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("OTA_ADMIN_TOKEN"));
}

#[tokio::test]
async fn a_config_file_is_read_and_the_environment_wins() {
    let data_dir = tempfile::tempdir().unwrap();
    let config = data_dir.path().join("ota.toml");
    std::fs::write(
        &config,
        "max_upload_bytes = 10\nadmin_token = \"from-the-file-0123456789\"\n",
    )
    .unwrap();
    let server = ServerProcess::start_with_args(
        data_dir.path(),
        &["--config", config.to_str().unwrap()],
        &[("OTA_ADMIN_TOKEN", "from-the-environment-0123456789")],
    );
    let client = reqwest::Client::new();

    let with_file_token = client
        .get(server.url("/api/ota/admin/firmware"))
        .bearer_auth("from-the-file-0123456789")
        .send()
        .await
        .unwrap();
    let upload = client
        .post(server.url("/api/ota/admin/upload"))
        .bearer_auth("from-the-environment-0123456789")
        .multipart(
            reqwest::multipart::Form::new()
                .text("device_type", DEVICE_TYPE)
                .text("version", "1.0.0")
                .part("file", reqwest::multipart::Part::bytes(vec![7u8; 11])),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(
        with_file_token.status(),
        StatusCode::UNAUTHORIZED,
        "the environment overrides the file"
    );
    assert_eq!(
        upload.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "max_upload_bytes comes from the file"
    );
}

const MIB: u64 = 1024 * 1024;

/// 200 MiB of generated bytes in 64 KiB chunks, never held whole.
fn big_body(total: u64) -> (reqwest::Body, Arc<Mutex<sha2::Sha256>>) {
    use sha2::Digest;
    let hasher = Arc::new(Mutex::new(sha2::Sha256::new()));
    let chunk = 64 * 1024u64;
    let feed = Arc::clone(&hasher);
    let stream = futures_util::stream::iter(0..total / chunk).map(move |i| {
        let bytes = Bytes::from(vec![(i % 251) as u8; chunk as usize]);
        feed.lock().unwrap().update(&bytes);
        Ok::<_, std::io::Error>(bytes)
    });
    (reqwest::Body::wrap_stream(stream), hasher)
}

use futures_util::StreamExt;

#[tokio::test]
async fn a_200_mib_upload_keeps_the_servers_memory_flat() {
    use sha2::Digest;
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data_dir.path(),
        &[
            ("OTA_ADMIN_TOKEN", ADMIN_TOKEN),
            ("OTA_MAX_UPLOAD_BYTES", &(300 * MIB).to_string()),
        ],
    );
    server.create_device_type().await;
    let client = reqwest::Client::new();
    let warm_up = reqwest::multipart::Form::new()
        .text("device_type", DEVICE_TYPE)
        .text("version", "0.0.1")
        .part("file", reqwest::multipart::Part::bytes(vec![1u8; 1024 * 1024]));
    let response = client
        .post(server.url("/api/ota/admin/upload"))
        .bearer_auth(ADMIN_TOKEN)
        .multipart(warm_up)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let peak_before = server.status_kib("VmHWM:");

    let total = 200 * MIB;
    let (body, hasher) = big_body(total);
    let form = reqwest::multipart::Form::new()
        .text("device_type", DEVICE_TYPE)
        .text("version", "2.0.0")
        .part(
            "file",
            reqwest::multipart::Part::stream_with_length(body, total).file_name("big.bin"),
        );
    let response = client
        .post(server.url("/api/ota/admin/upload"))
        .bearer_auth(ADMIN_TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
    let uploaded: Value = response.json().await.unwrap();
    let expected_hash = hex::encode(hasher.lock().unwrap().clone().finalize());
    assert_eq!(uploaded["file_size"], total);
    assert_eq!(uploaded["file_hash"], expected_hash);
    let peak_after = server.status_kib("VmHWM:");
    let growth_mib = (peak_after.saturating_sub(peak_before)) as f64 / 1024.0;
    println!("peak RSS before {peak_before} KiB, after {peak_after} KiB, growth {growth_mib:.1} MiB");
    assert!(
        growth_mib < 64.0,
        "the server's peak RSS grew by {growth_mib:.1} MiB during a 200 MiB upload"
    );
}

#[tokio::test]
async fn sigterm_stops_new_connections_and_lets_a_download_finish() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        data_dir.path(),
        &[
            ("OTA_ADMIN_TOKEN", ADMIN_TOKEN),
            ("OTA_DEVICE_JWT_SECRET", JWT_SECRET),
            ("OTA_SHUTDOWN_TIMEOUT", "20"),
        ],
    );
    let (bytes, mut download) = server.publish_and_start_download(32 * MIB as usize).await;
    let mut received = download.chunk().await.unwrap().unwrap().to_vec();

    server.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let address = server.address.trim_start_matches("http://").to_owned();
    let refused = tokio::net::TcpStream::connect(&address).await;
    while let Some(chunk) = download.chunk().await.expect("the in-flight download is not cut off") {
        received.extend_from_slice(&chunk);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let status = server.wait_for_exit(Duration::from_secs(20));

    assert!(refused.is_err(), "a new connection was accepted after SIGTERM");
    assert_eq!(received.len(), bytes.len());
    assert_eq!(sha256_hex(&received), sha256_hex(&bytes));
    assert!(status.success(), "exit status {status}");
    assert!(
        server.log().contains("\"stopped\""),
        "the server closes cleanly: {}",
        server.log()
    );
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_shutdown_timeout() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        data_dir.path(),
        &[
            ("OTA_ADMIN_TOKEN", ADMIN_TOKEN),
            ("OTA_DEVICE_JWT_SECRET", JWT_SECRET),
            ("OTA_SHUTDOWN_TIMEOUT", "1"),
        ],
    );
    let (bytes, mut download) = server.publish_and_start_download(64 * MIB as usize).await;
    let mut received = download.chunk().await.unwrap().unwrap().len();

    server.terminate();
    let terminated = Instant::now();
    let slow_reader = async {
        while let Ok(Some(chunk)) = download.chunk().await {
            received += chunk.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        received
    };
    let received = tokio::time::timeout(Duration::from_secs(30), slow_reader)
        .await
        .expect("the download ends");
    let status = server.wait_for_exit(Duration::from_secs(15));

    assert!(
        received < bytes.len(),
        "the slow download was not cut off at the deadline"
    );
    assert!(
        terminated.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        terminated.elapsed()
    );
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn routine_polls_are_logged_at_debug_and_everything_else_at_info() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data_dir.path(),
        &[("OTA_ADMIN_TOKEN", ADMIN_TOKEN), ("OTA_DEVICE_JWT_SECRET", JWT_SECRET)],
    );
    let client = reqwest::Client::new();
    let body = serde_json::json!({"device_type": DEVICE_TYPE, "current_version": "1.0.0"});
    let poll = client
        .post(server.url("/api/ota/check"))
        .bearer_auth(device_token("tab5-log"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), StatusCode::OK);
    let refused = client
        .post(server.url("/api/ota/check"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // Lines reach stdout through a writer thread: wait for the last one.
    let started = Instant::now();
    let access = loop {
        let lines: Vec<(String, u64)> = server
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["message"] == "finished processing request")
            .map(|event| {
                let uri = event["span"]["uri"].as_str().unwrap_or_default().to_owned();
                (uri, event["status"].as_u64().unwrap_or_default())
            })
            .collect();
        if lines.iter().any(|(uri, _)| uri == "/healthz") || started.elapsed() > Duration::from_secs(10) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(access.contains(&("/healthz".to_owned(), 200)), "{access:?}");
    assert!(access.contains(&("/api/ota/check".to_owned(), 401)), "{access:?}");
    assert!(
        !access.contains(&("/api/ota/check".to_owned(), 200)),
        "a routine poll was logged at INFO: {access:?}"
    );
}

/// Waits until the server's log contains `text`.
async fn wait_for_log(server: &ServerProcess, text: &str) -> String {
    let started = Instant::now();
    loop {
        let log = server.log();
        if log.contains(text) {
            return log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no {text:?} in the log: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_minted_device_token_is_logged_by_its_jti_and_never_itself() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data_dir.path(),
        &[("OTA_ADMIN_TOKEN", ADMIN_TOKEN), ("RUST_LOG", "debug")],
    );
    server.create_device_type().await;

    let response = reqwest::Client::new()
        .post(server.url("/api/ota/admin/devices/tab5-0001/token"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"device_type": DEVICE_TYPE}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let minted: Value = response.json().await.unwrap();
    let token = minted["token"].as_str().unwrap();
    let jti = jwt_parts(token).1["jti"].as_str().unwrap().to_owned();

    let log = wait_for_log(&server, "device token issued").await;
    let line: Value = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["message"] == "device token issued")
        .unwrap();
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["device_id"], "tab5-0001");
    assert_eq!(line["device_type"], DEVICE_TYPE);
    assert_eq!(line["jti"], jti.as_str());
    assert_eq!(line["expires_at"], minted["expires_at"]);
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "the log shows the token");
}

#[tokio::test]
async fn a_configured_private_key_never_appears_in_the_log() {
    let data_dir = tempfile::tempdir().unwrap();
    let private_pem = fixture("ec_private.pem");
    let key_body = private_pem.lines().nth(1).unwrap().to_owned();

    let server = ServerProcess::start(
        data_dir.path(),
        &[
            ("OTA_DEVICE_JWT_PUBLIC_KEY", &fixture_path("ec_public.pem")),
            ("OTA_DEVICE_JWT_PRIVATE_KEY", &private_pem),
            ("RUST_LOG", "debug"),
        ],
    );
    reqwest::get(server.url("/healthz")).await.unwrap();

    let log = wait_for_log(&server, "mints_tokens").await;
    assert!(!log.contains(&key_body), "the log shows the private key");
}
