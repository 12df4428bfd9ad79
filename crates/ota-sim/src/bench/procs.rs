//! The processes a benchmark measures: the real `ota-server` binary on a
//! fresh data folder, and nginx (Debian's package) as the reference, both on
//! loopback and both stopped when dropped.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::time::{Instant, sleep};

/// The admin token and device secret every benchmark server runs with.
pub const ADMIN_TOKEN: &str = "bench-admin-token-8f2c61d0a9e47b35";
pub const JWT_SECRET: &str = "bench-device-secret-5e1f09c2b7a84d63";

/// A running `ota-server serve`.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl ServerProcess {
    /// Starts the server on `data_dir` and waits until it serves.
    pub async fn start(bin: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(bin, data_dir, &[]).await
    }

    /// As [`ServerProcess::start`], with more `OTA_*` settings.
    pub async fn start_with(bin: &Path, data_dir: &Path, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let log_path = data_dir.join("server.log");
        std::fs::create_dir_all(data_dir)?;
        let log = File::create(&log_path)?;
        let child = Command::new(bin)
            .arg("serve")
            .env("OTA_LISTEN", "127.0.0.1:0")
            .env("OTA_DATA_DIR", data_dir)
            .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("OTA_DEVICE_JWT_SECRET", JWT_SECRET)
            // A benchmark makes thousands of requests per second from a few
            // thousand devices: the per-device budget would refuse them.
            .env("OTA_DEVICE_RATE_LIMIT", "0")
            .env("OTA_LOG_FORMAT", "json")
            .envs(settings.iter().copied())
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with `cargo build --release -p ota-server`)",
                    bin.display()
                )
            })?;
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|event| event["message"] == "serving")
                .and_then(|event| event["listen"].as_str().and_then(|a| a.parse().ok()))
            {
                server.addr = addr;
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("ota-server exited with {status} before serving:\n{text}");
            }
            anyhow::ensure!(Instant::now() < deadline, "ota-server did not start in 30 s:\n{text}");
            sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server with SIGTERM, as an operator would, and waits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.child)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child);
    }
}

/// nginx serving `root` and a fixed JSON answer for `/api/ota/check`.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with as many workers as there are cores, sendfile on,
    /// access log to a file (as the server logs each request).
    pub async fn start(bin: &Path, root: &Path, check_answer: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: install Debian's nginx (scripts/bench.sh does) or pass --nginx",
            bin.display()
        );
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Workers of a root master run as `nobody`, who cannot read a
        // private temporary folder.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let prefix = dir.path().display();
        let config = format!(
            r#"{user}
daemon off;
worker_processes auto;
worker_rlimit_nofile 30000;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 20000; multi_accept on; }}
http {{
    access_log {prefix}/access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {addr} backlog=16384;
        root {root};
        location = /api/ota/check {{
            default_type application/json;
            return 200 '{check_answer}';
        }}
    }}
}}
"#,
            root = root.display(),
        );
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, config)?;
        let log = File::create(dir.path().join("stderr.log"))?;
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                anyhow::bail!("nginx exited with {status}:\n{log}");
            }
            anyhow::ensure!(Instant::now() < deadline, "nginx did not listen on {addr} in 10 s");
            sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { child, addr, _dir: dir })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops its workers too; SIGKILL would not.
        let _ = terminate(&mut self.child);
    }
}

fn terminate(child: &mut Child) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = libc::pid_t::try_from(child.id())?;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            anyhow::bail!("process {pid} ignored SIGTERM for 40 s and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Resident memory of a process and its children (nginx's workers), in bytes.
pub fn rss_of_tree(pid: u32) -> u64 {
    let mut total = rss(pid);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if parent_of(child) == Some(pid) {
                total += rss(child);
            }
        }
    }
    total
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_counts_the_children() {
        let me = std::process::id();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let child_rss = rss(child.id());
        let tree = rss_of_tree(me);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(rss(me) > 1024 * 1024);
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
        assert!(child_rss > 0);
        // This process alone is far larger than `sleep`, so the tree's total
        // is above the child's and, with the child, above the parent's.
        assert!(tree > child_rss + 1024 * 1024, "tree {tree}, child {child_rss}");
    }
}
