//! What the tests share: the real `ota-server` binary on a random loopback
//! port and a fresh data folder, `otactl` commands pointed at it, and small
//! helpers for files and output.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

pub const ADMIN_TOKEN: &str = "cli-test-admin-token-5b0e7d21c94f3a68";
pub const DEVICE_TYPE: &str = "scales_bridge_tab5";
/// The device types every test server starts with, as `raw`: the server
/// takes firmware only for device types that exist.
pub const DEVICE_TYPES: [&str; 2] = [DEVICE_TYPE, "other_type"];

/// A running `ota-server serve`, stopped when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    pub data: tempfile::TempDir,
    /// XDG_CONFIG_HOME for the otactl runs of this test.
    pub config_home: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_otactl")).with_file_name("ota-server");
        assert!(
            bin.exists(),
            "{} is missing: run the suite with `cargo test --workspace` (scripts/test.sh)",
            bin.display()
        );
        let data = tempfile::tempdir().unwrap();
        let log_path = data.path().join("server.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = StdCommand::new(bin)
            .arg("serve")
            .env("OTA_LISTEN", "127.0.0.1:0")
            .env("OTA_DATA_DIR", data.path())
            .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("OTA_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            url: String::new(),
            data,
            config_home: tempfile::tempdir().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let listen = text
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|event| event["message"] == "serving")
                .and_then(|event| event["listen"].as_str().map(str::to_owned));
            if let Some(listen) = listen {
                server.url = format!("http://{listen}");
                for name in DEVICE_TYPES {
                    server.create_raw_device_type(name);
                }
                return server;
            }
            assert!(server.child.try_wait().unwrap().is_none(), "ota-server exited:\n{text}");
            assert!(Instant::now() < deadline, "ota-server did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `POST /api/ota/admin/device-types` for a `raw` type, which must answer 201.
    pub fn create_raw_device_type(&self, name: &str) {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}/api/ota/admin/device-types", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"name": name, "image_format": "raw"}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 201, "creating the device type {name}");
    }

    /// `otactl` with this server and the admin token in the environment.
    pub fn otactl(&self) -> Command {
        let mut command = self.bare_otactl();
        command.env("OTA_SERVER", &self.url).env("OTA_ADMIN_TOKEN", ADMIN_TOKEN);
        command
    }

    /// `otactl` with no server or token given, and an empty config folder.
    pub fn bare_otactl(&self) -> Command {
        let mut command = Command::cargo_bin("otactl").unwrap();
        command
            .env_remove("OTA_SERVER")
            .env_remove("OTA_ADMIN_TOKEN")
            .env_remove("OTACTL_CONFIG")
            .env_remove("OTA_CA_CERT")
            .env("XDG_CONFIG_HOME", self.config_home.path())
            .env("HOME", self.config_home.path())
            .timeout(Duration::from_secs(60));
        command
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_home.path().join("otactl").join("config.toml")
    }

    pub fn firmware_dir(&self) -> PathBuf {
        self.data.path().join("firmware")
    }

    /// The device side, for the logs: a check and status reports.
    pub fn device_post(&self, token: &str, path: &str, body: Value) -> Value {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().unwrap()
    }
}

/// The fleet helpers: devices that check in, and `otactl --json` answers.
impl Server {
    /// `otactl --json ARGS`, which must succeed: its JSON answer.
    pub fn json(&self, args: &[&str]) -> Value {
        let output = self.otactl().arg("--json").args(args).output().unwrap();
        assert!(
            output.status.success(),
            "otactl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        json_of(&output)
    }

    /// A device token for `device_id`, minted with `otactl device token`.
    pub fn device_token(&self, device_id: &str, device_type: &str) -> String {
        let output = self
            .otactl()
            .args(["device", "token", device_id, "-t", device_type])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        stdout_of(&output).trim().to_owned()
    }

    /// `device_id` checks in running `version`: the check's answer and its token.
    pub fn check_in(&self, device_id: &str, device_type: &str, version: &str) -> (Value, String) {
        let token = self.device_token(device_id, device_type);
        let answer = self.device_post(
            &token,
            "/api/ota/check",
            serde_json::json!({"device_type": device_type, "current_version": version}),
        );
        (answer, token)
    }

    /// `otactl groups create NAME`, which must succeed.
    pub fn groups_create(&self, name: &str) {
        self.otactl().args(["groups", "create", name]).assert().success();
    }

    /// Waits until the inventory holds `count` devices (check-ins are
    /// written in batches, about once a second).
    pub fn wait_for_devices(&self, count: i64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let page = self.json(&["device", "list", "--limit", "1"]);
            if page["total"] == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the inventory holds {page}, not {count} devices"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A firmware file of `size` bytes.
pub fn image(dir: &Path, name: &str, size: usize) -> PathBuf {
    let path = dir.join(name);
    let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

pub fn sha256_of(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

pub fn json_of(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON on stdout ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

pub fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One request a [`FakeServer`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// A tiny HTTP/1.1 server that answers each request with `(status, JSON
/// body)` from a closure: for answers the real server never gives (a hash
/// it got wrong, a firewall's page, a redirect). It keeps what it received.
pub struct FakeServer {
    pub url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl FakeServer {
    pub fn start(answer: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let answer = std::sync::Arc::new(answer);
        let kept = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (answer, kept) = (std::sync::Arc::clone(&answer), std::sync::Arc::clone(&kept));
                std::thread::spawn(move || serve_connection(stream, &*answer, &kept));
            }
        });
        FakeServer { url, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_connection(
    stream: std::net::TcpStream,
    answer: &dyn Fn(&Seen) -> (u16, String),
    kept: &std::sync::Mutex<Vec<Seen>>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let path = path.split('?').next().unwrap_or("").to_owned();
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(value) = header.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
            if header.starts_with("transfer-encoding:") && header.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            body.resize(length, 0);
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        let request = Seen { method, path, body };
        let (status, text) = answer(&request);
        kept.lock().unwrap().push(request);
        let location = if (300..400).contains(&status) {
            "Location: http://elsewhere.example/\r\n"
        } else {
            ""
        };
        let head = format!(
            "HTTP/1.1 {status} Fake\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{location}\r\n",
            text.len()
        );
        if writer
            .write_all(head.as_bytes())
            .and_then(|_| writer.write_all(text.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}
