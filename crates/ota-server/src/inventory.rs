//! The device inventory's `last_seen` writes, batched off the request path.
//!
//! Every `check` tells us what a device runs. Writing that synchronously
//! would put a database write (and its fsync) on the path a fleet hammers.
//! Instead `check` hands it to a writer task that upserts a batch, one row
//! per device, every second or every `MAX_BATCH` devices, and once more when
//! the server stops. If the writer falls behind, sightings are dropped and
//! counted (`ota_inventory_dropped_total`): they are refreshed by the
//! device's next check, and no update attempt depends on them — except
//! the anti-rollback counter: a reported counter is also held in memory
//! until it is written, so that the very next check of the device is held
//! to it ([`Inventory::secure_version`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{Sighting, Store};

const FLUSH_EVERY: Duration = Duration::from_secs(1);
const MAX_BATCH: usize = 1024;
const QUEUE: usize = 16 * 1024;

/// Where handlers leave sightings.
#[derive(Debug, Clone)]
pub struct Inventory {
    queue: mpsc::Sender<Sighting>,
    /// Anti-rollback counters reported but perhaps not written yet.
    counters: Counters,
}

/// Device id → the highest counter not yet known to be in the database.
type Counters = Arc<Mutex<HashMap<String, u32>>>;

/// The task that writes sightings; [`InventoryWriter::finish`] flushes it.
#[derive(Debug)]
pub struct InventoryWriter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Inventory {
    pub fn start(store: Store) -> (Inventory, InventoryWriter) {
        Self::start_with(store, FLUSH_EVERY)
    }

    pub fn start_with(store: Store, flush_every: Duration) -> (Inventory, InventoryWriter) {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let counters = Counters::default();
        let task = tokio::spawn(write_batches(
            store,
            receiver,
            stop.clone(),
            flush_every,
            counters.clone(),
        ));
        (Inventory { queue, counters }, InventoryWriter { stop, task })
    }

    /// Records a sighting, without waiting.
    pub fn seen(&self, sighting: Sighting) {
        if let Some(counter) = sighting.secure_version {
            let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            let held = counters.entry(sighting.device_id.clone()).or_insert(counter);
            *held = (*held).max(counter);
        }
        if self.queue.try_send(sighting).is_err() {
            metrics::counter!("ota_inventory_dropped_total").increment(1);
        }
    }
}

impl Inventory {
    /// The highest anti-rollback counter the device has reported: written,
    /// or still on its way to the database.
    pub async fn secure_version(&self, store: &Store, device_id: &str) -> Result<Option<u32>, sqlx::Error> {
        let held = self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(device_id)
            .copied();
        let stored = store.device_secure_version(device_id).await?;
        Ok(held.max(stored))
    }
}

impl InventoryWriter {
    /// Writes what is queued and stops, waiting at most `limit`.
    pub async fn finish(self, limit: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!("the inventory writer did not finish in time");
        }
    }
}

async fn write_batches(
    store: Store,
    mut receiver: mpsc::Receiver<Sighting>,
    stop: CancellationToken,
    flush_every: Duration,
    counters: Counters,
) {
    let mut pending: HashMap<String, Sighting> = HashMap::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + flush_every, flush_every);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                while let Ok(sighting) = receiver.try_recv() {
                    keep_latest(&mut pending, sighting);
                }
                flush(&store, &mut pending, &counters).await;
                return;
            }
            Some(sighting) = receiver.recv() => {
                keep_latest(&mut pending, sighting);
                if pending.len() >= MAX_BATCH {
                    flush(&store, &mut pending, &counters).await;
                }
            }
            _ = tick.tick() => flush(&store, &mut pending, &counters).await,
        }
    }
}

/// Keeps a device's latest sighting, with the highest anti-rollback counter
/// any of its sightings reported (a counter only grows).
fn keep_latest(pending: &mut HashMap<String, Sighting>, mut sighting: Sighting) {
    if let Some(earlier) = pending.get(&sighting.device_id) {
        sighting.secure_version = sighting.secure_version.max(earlier.secure_version);
    }
    pending.insert(sighting.device_id.clone(), sighting);
}

async fn flush(store: &Store, pending: &mut HashMap<String, Sighting>, counters: &Counters) {
    if pending.is_empty() {
        return;
    }
    let mut batch: Vec<Sighting> = pending.drain().map(|(_, sighting)| sighting).collect();
    // In one order everywhere: two instances writing the same devices lock
    // their rows in the same order, and so never deadlock on PostgreSQL.
    batch.sort_unstable_by(|a, b| a.device_id.cmp(&b.device_id));
    match store.devices_seen(&batch).await {
        Ok(()) => forget_written(counters, &batch),
        Err(e) => {
            tracing::warn!(error = %e, devices = batch.len(), "could not record device sightings; retrying with the next batch");
            if batch.len() < QUEUE {
                for sighting in batch {
                    keep_latest(pending, sighting);
                }
            } else {
                metrics::counter!("ota_inventory_dropped_total").increment(batch.len() as u64);
            }
        }
    }
}

/// The database holds the counters of a written batch: memory need not.
fn forget_written(counters: &Counters, batch: &[Sighting]) {
    let mut held = counters.lock().unwrap_or_else(|e| e.into_inner());
    for seen in batch {
        if let Some(counter) = seen.secure_version
            && held.get(&seen.device_id).is_some_and(|h| *h <= counter)
        {
            held.remove(&seen.device_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(device: &str, version: &str) -> Sighting {
        Sighting {
            device_id: device.into(),
            device_type: "scales_bridge_tab5".into(),
            current_version: version.into(),
            build_number: None,
            channel: "stable".into(),
            secure_version: None,
            seen_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn the_highest_anti_rollback_counter_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_file(&dir.path().join("ota.db")).await.unwrap();
        let (inventory, writer) = Inventory::start_with(store.clone(), Duration::from_secs(3600));
        let with = |version, secure| Sighting {
            secure_version: secure,
            ..sighting("tab5-1", version)
        };
        inventory.seen(with("1.0.0", Some(3)));
        inventory.seen(with("1.1.0", None));
        inventory.seen(with("1.1.0", Some(2)));
        writer.finish(Duration::from_secs(5)).await;
        assert_eq!(
            store.device_secure_version("tab5-1").await.unwrap(),
            Some(3),
            "within a batch"
        );

        for (secure, expected) in [(None, 3), (Some(1), 3), (Some(4), 4)] {
            let (inventory, writer) = Inventory::start_with(store.clone(), Duration::from_secs(3600));
            inventory.seen(with("1.2.0", secure));
            writer.finish(Duration::from_secs(5)).await;
            assert_eq!(
                store.device_secure_version("tab5-1").await.unwrap(),
                Some(expected),
                "{secure:?}"
            );
        }
        assert_eq!(store.device_version("tab5-1").await.unwrap().as_deref(), Some("1.2.0"));
    }

    #[tokio::test]
    async fn a_counter_is_known_before_it_is_written_and_an_older_sighting_still_raises_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_file(&dir.path().join("ota.db")).await.unwrap();
        let older = Sighting {
            secure_version: Some(5),
            ..sighting("tab5-1", "1.0.0")
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (inventory, writer) = Inventory::start_with(store.clone(), Duration::from_secs(3600));
        inventory.seen(sighting("tab5-1", "1.1.0"));
        writer.finish(Duration::from_secs(5)).await;

        let (inventory, writer) = Inventory::start_with(store.clone(), Duration::from_secs(3600));
        inventory.seen(older);
        assert_eq!(
            inventory.secure_version(&store, "tab5-1").await.unwrap(),
            Some(5),
            "before the write"
        );
        writer.finish(Duration::from_secs(5)).await;

        assert_eq!(
            store.device_secure_version("tab5-1").await.unwrap(),
            Some(5),
            "an older sighting raises it"
        );
        assert_eq!(
            store.device_version("tab5-1").await.unwrap().as_deref(),
            Some("1.1.0"),
            "but changes nothing else"
        );
        assert!(
            inventory.counters.lock().unwrap().is_empty(),
            "written counters leave memory"
        );
    }

    #[tokio::test]
    async fn finishing_writes_what_is_queued_with_the_latest_sighting_per_device() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_file(&dir.path().join("ota.db")).await.unwrap();
        let (inventory, writer) = Inventory::start_with(store.clone(), Duration::from_secs(3600));

        inventory.seen(sighting("tab5-1", "1.0.0"));
        inventory.seen(sighting("tab5-1", "1.1.0"));
        inventory.seen(sighting("tab5-2", "1.0.0"));
        writer.finish(Duration::from_secs(5)).await;

        assert_eq!(store.device_version("tab5-1").await.unwrap().as_deref(), Some("1.1.0"));
        assert_eq!(store.device_version("tab5-2").await.unwrap().as_deref(), Some("1.0.0"));
    }

    #[tokio::test]
    async fn a_sighting_older_than_a_status_report_does_not_undo_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_file(&dir.path().join("ota.db")).await.unwrap();
        let (inventory, writer) = Inventory::start_with(store.clone(), Duration::from_secs(3600));
        let before_the_update = sighting("tab5-1", "1.0.0");
        tokio::time::sleep(Duration::from_millis(5)).await;
        store
            .device_reported(crate::store::DeviceReport {
                device_id: "tab5-1",
                device_type: "scales_bridge_tab5",
                status: ota_core::OtaStatus::Success,
                now_running: Some("1.1.0"),
                error_message: None,
            })
            .await
            .unwrap();

        inventory.seen(before_the_update);
        writer.finish(Duration::from_secs(5)).await;

        assert_eq!(store.device_version("tab5-1").await.unwrap().as_deref(), Some("1.1.0"));
    }

    #[tokio::test]
    async fn sightings_are_written_without_waiting_for_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_file(&dir.path().join("ota.db")).await.unwrap();
        let (inventory, _writer) = Inventory::start_with(store.clone(), Duration::from_millis(50));

        inventory.seen(sighting("tab5-1", "1.0.0"));

        let mut written = None;
        for _ in 0..100 {
            written = store.device_version("tab5-1").await.unwrap();
            if written.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(written.as_deref(), Some("1.0.0"));
    }
}
