//! `otactl` through nginx, as production runs it: https with a private CA
//! (`--ca-cert`), the API under a path prefix, and the proxy's own error
//! pages when the server behind it is down. Needs Debian's nginx and the
//! openssl command (scripts/test.sh installs both).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use common::*;
use predicates::prelude::*;

/// nginx terminating TLS on a random port and proxying `/ota/` to `upstream`.
struct TlsProxy {
    child: Child,
    url: String,
    ca_cert: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsProxy {
    fn start(upstream: &str) -> Self {
        let nginx = Path::new("/usr/sbin/nginx");
        assert!(nginx.exists(), "nginx is missing: scripts/test.sh installs it");
        let dir = tempfile::tempdir().unwrap();
        let ca_cert = dir.path().join("ca.pem");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        // A private CA, and a server certificate it signs for 127.0.0.1.
        let extensions = dir.path().join("server.ext");
        std::fs::write(
            &extensions,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let d = dir.path();
        openssl(
            d,
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=otactl-test-CA -keyout ca.key -out ca.pem",
        );
        openssl(
            d,
            "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost -keyout key.pem -out server.csr",
        );
        openssl(
            d,
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile server.ext -out cert.pem",
        );
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let prefix = dir.path().display();
        // Workers of a root master run as `nobody`, who cannot read a private temporary folder.
        let user = if std::env::var("USER").as_deref() == Ok("root") || is_root() {
            "user root;"
        } else {
            ""
        };
        let config = format!(
            r#"{user}
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        client_max_body_size 0;
        location /ota/ {{
            proxy_pass {upstream}/;
            proxy_request_buffering off;
        }}
    }}
}}
"#,
            cert = cert.display(),
            key = key.display(),
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = StdCommand::new(nginx)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsProxy {
            child,
            url: format!("https://127.0.0.1:{port}/ota"),
            ca_cert,
            _dir: dir,
        }
    }
}

impl Drop for TlsProxy {
    /// SIGTERM, so that the master stops its workers; SIGKILL would leave
    /// them running, orphaned.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `openssl ARGS` in `dir`.
fn openssl(dir: &Path, args: &str) {
    let output = StdCommand::new("openssl")
        .args(args.split(' '))
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    StdCommand::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn https_with_a_private_ca_and_a_path_prefix_works_end_to_end() {
    let server = Server::start();
    let proxy = TlsProxy::start(&server.url);
    let dir = tempfile::tempdir().unwrap();
    let file = image(dir.path(), "app.bin", 1_500_000);

    let upload = server
        .otactl()
        .env("OTA_SERVER", &proxy.url)
        .env("OTA_CA_CERT", &proxy.ca_cert)
        .args(["--json", "firmware", "upload"])
        .arg(&file)
        .args(["-t", DEVICE_TYPE, "-v", "1.0.0", "--register"])
        .output()
        .unwrap();

    assert!(upload.status.success(), "{}", String::from_utf8_lossy(&upload.stderr));
    assert_eq!(json_of(&upload)["file_hash"], sha256_of(&file));
    server
        .otactl()
        .args(["--server", &proxy.url, "--ca-cert"])
        .arg(&proxy.ca_cert)
        .args(["firmware", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1.0.0"));
    server
        .otactl()
        .args(["--server", &proxy.url, "--ca-cert"])
        .arg(&proxy.ca_cert)
        .arg("status")
        .assert()
        .success();
}

#[test]
fn a_certificate_nobody_vouches_for_is_exit_code_3() {
    let server = Server::start();
    let proxy = TlsProxy::start(&server.url);

    let output = server
        .otactl()
        .env("OTA_SERVER", &proxy.url)
        .args(["firmware", "list"])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot be reached") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
    assert!(!stderr.contains(ADMIN_TOKEN), "{stderr}");
}

#[test]
fn a_proxy_whose_server_is_down_is_exit_code_3() {
    let server = Server::start();
    let dead = format!(
        "http://127.0.0.1:{}",
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let proxy = TlsProxy::start(&dead);

    let output = server
        .otactl()
        .env("OTA_SERVER", &proxy.url)
        .env("OTA_CA_CERT", &proxy.ca_cert)
        .args(["firmware", "list"])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("502"), "{stderr}");
}

#[test]
fn a_ca_file_that_holds_no_certificate_is_a_usage_error() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("ca.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();

    server
        .otactl()
        .arg("--ca-cert")
        .arg(&bogus)
        .args(["firmware", "list"])
        .assert()
        .code(2);
    server
        .otactl()
        .args(["--ca-cert", "/nonexistent/ca.pem", "firmware", "list"])
        .assert()
        .code(2);
}
