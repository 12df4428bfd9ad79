//! Two `ota-server` processes on one PostgreSQL database and one firmware
//! store, as behind a load balancer. Runs on PostgreSQL only (the second
//! pass of `scripts/test.sh`, where `OTA_TEST_DATABASE_URL` is set).

use std::collections::BTreeMap;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::process::ServerProcess;

/// How many devices report through both instances at once.
const DEVICES: usize = 300;

/// The settings every instance shares: one database, one store, one set of
/// secrets (a link signed by one instance must verify on the other).
struct Fleet {
    database_url: String,
    storage_url: String,
    _storage_dir: tempfile::TempDir,
}

impl Fleet {
    async fn new() -> Option<Self> {
        let database_url = test_database().await?;
        let storage_dir = tempfile::tempdir().unwrap();
        let storage_url = match storage_url_for_test() {
            Some(url) => url,
            None => storage_dir.path().display().to_string(),
        };
        Some(Fleet {
            database_url,
            storage_url,
            _storage_dir: storage_dir,
        })
    }

    fn start(&self, data_dir: &std::path::Path) -> ServerProcess {
        let mut envs = vec![
            ("OTA_DATABASE_URL", self.database_url.clone()),
            ("OTA_STORAGE_URL", self.storage_url.clone()),
            ("OTA_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("OTA_DEVICE_JWT_SECRET", JWT_SECRET.to_owned()),
            (
                "OTA_LINK_SIGNING_KEY",
                "shared-link-signing-key-0123456789abcdef".to_owned(),
            ),
            ("OTA_DEVICE_RATE_LIMIT", "0".to_owned()),
        ];
        // The S3 credentials and endpoint, when the store is a bucket.
        for (name, value) in std::env::vars() {
            if name.starts_with("AWS_") {
                envs.push((leak(name), value));
            }
        }
        let envs: Vec<(&str, &str)> = envs.iter().map(|(n, v)| (*n, v.as_str())).collect();
        ServerProcess::start(data_dir, &envs)
    }
}

fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

async fn check(client: &reqwest::Client, server: &ServerProcess, device_id: &str, version: &str) -> Value {
    let response = client
        .post(server.url("/api/ota/check"))
        .bearer_auth(device_token(device_id))
        .json(&json!({"device_type": DEVICE_TYPE, "current_version": version}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", server.log());
    response.json().await.unwrap()
}

async fn report(client: &reqwest::Client, server: &ServerProcess, device_id: &str, body: Value) -> StatusCode {
    client
        .post(server.url("/api/ota/status"))
        .bearer_auth(device_token(device_id))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn admin_json(client: &reqwest::Client, server: &ServerProcess, path: &str) -> Value {
    let response = client
        .get(server.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_database_and_one_store_without_losing_or_doubling_a_row() {
    let Some(fleet) = Fleet::new().await else {
        eprintln!("OTA_TEST_DATABASE_URL is not set: the multi-instance test runs on PostgreSQL only");
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = fleet.start(dir_a.path());
    let b = fleet.start(dir_b.path());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    // B has a catalogue in memory before the upload: it must learn of the
    // new firmware from A, not from its cache's age.
    a.create_device_type().await;
    assert_eq!(
        check(&client, &b, "tab5-0000", "1.0.0").await["update_available"],
        false
    );

    // Upload through A.
    let bytes = firmware_bytes(300_000, 8);
    let firmware_id = a.publish("1.1.0", &bytes).await["id"].as_i64().unwrap();
    // A rollout at 100 %, created through A: its counters are read back
    // through both.
    let rollout = client
        .post(a.url("/api/ota/admin/rollouts"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"firmware_id": firmware_id, "stages": [100]}))
        .send()
        .await
        .unwrap();
    assert_eq!(rollout.status(), StatusCode::CREATED, "{}", a.log());
    let rollout_id = rollout.json::<Value>().await.unwrap()["id"].as_i64().unwrap();

    // Check and download through B, well within the 30 s a cache may keep.
    let started = std::time::Instant::now();
    let offer = loop {
        let answer = check(&client, &b, "tab5-0000", "1.0.0").await;
        if answer["update_available"] == true {
            break answer;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "B still offers nothing 5 s after A's upload: {answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(offer["version"], "1.1.0");
    let download_url = offer["download_url"].as_str().unwrap();
    assert!(download_url.starts_with(&b.url("")), "{download_url}");
    let downloaded = client.get(download_url).send().await.unwrap();
    assert_eq!(downloaded.status(), StatusCode::OK);
    assert_eq!(
        downloaded.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", sha256_hex(&bytes))
    );
    assert_eq!(downloaded.bytes().await.unwrap().as_ref(), bytes.as_slice());

    // Hundreds of devices, each asking both instances at once and then
    // reporting every step through both at once.
    let servers = [&a, &b];
    let outcomes: Vec<(String, Vec<i64>, Vec<StatusCode>)> = futures_util::stream::iter(1..=DEVICES)
        .map(|n| {
            let client = client.clone();
            async move {
                let device_id = format!("tab5-{n:04}");
                let (first, second) = tokio::join!(
                    check(&client, servers[0], &device_id, "1.0.0"),
                    check(&client, servers[1], &device_id, "1.0.0"),
                );
                let log_ids = [&first, &second].map(|answer| answer["log_id"].as_i64().unwrap_or(-1));
                let mut statuses = Vec::new();
                for status in ["downloading", "installing", "success"] {
                    let body = json!({"firmware_id": firmware_id, "status": status});
                    let (x, y) = tokio::join!(
                        report(&client, servers[n % 2], &device_id, body.clone()),
                        report(&client, servers[(n + 1) % 2], &device_id, body),
                    );
                    statuses.extend([x, y]);
                }
                (device_id, log_ids.to_vec(), statuses)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;

    for (device_id, log_ids, statuses) in &outcomes {
        assert!(log_ids[0] > 0, "{device_id}: no log_id from A");
        assert_eq!(log_ids[0], log_ids[1], "{device_id}: two attempts opened at once");
        // Of two equal reports at once, one moves the attempt and the
        // other finds it there already: both are answered, neither fails.
        for status in statuses {
            assert!(
                *status == StatusCode::OK || *status == StatusCode::CONFLICT,
                "{device_id}: {status}"
            );
        }
    }

    // The database: one attempt per device, every one a success; one
    // inventory row per device, running the new version.
    let mut db = OtherConnection::open(&fleet.database_url).await;
    let rows = db
        .count("SELECT COUNT(*) FROM device_ota_log WHERE device_id <> 'tab5-0000'")
        .await;
    assert_eq!(rows, DEVICES as i64, "lost or doubled attempt rows");
    let successes = db
        .count("SELECT COUNT(DISTINCT device_id) FROM device_ota_log WHERE status = 'success' AND device_id <> 'tab5-0000'")
        .await;
    assert_eq!(successes, DEVICES as i64);
    let devices = db
        .count("SELECT COUNT(*) FROM devices WHERE current_version = '1.1.0' AND last_status = 'success'")
        .await;
    assert_eq!(devices, DEVICES as i64);

    // The rollout's counters agree on both instances and with the rows.
    let mut seen = BTreeMap::new();
    for (name, server) in [("a", &a), ("b", &b)] {
        let rollout = admin_json(&client, server, &format!("/api/ota/admin/rollouts/{rollout_id}")).await;
        let totals = &rollout["totals"];
        seen.insert(
            name,
            (
                totals["offered"].clone(),
                totals["succeeded"].clone(),
                totals["failed"].clone(),
            ),
        );
    }
    assert_eq!(seen["a"], seen["b"]);
    // Every device, and tab5-0000 (offered, never reported).
    assert_eq!(seen["a"].0, json!(DEVICES + 1), "{seen:?}");
    assert_eq!(seen["a"].1, json!(DEVICES), "{seen:?}");
    assert_eq!(seen["a"].2, json!(0), "{seen:?}");
}
