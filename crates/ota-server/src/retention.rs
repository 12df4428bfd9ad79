//! Log retention: a background sweep that deletes finished attempts older
//! than `OTA_LOG_RETENTION_DAYS` or beyond the newest
//! `OTA_LOG_RETENTION_PER_DEVICE` of their device, in small batches so that
//! devices' writes are never held up for long.

use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Rows deleted per statement.
const BATCH: usize = 1000;
/// Attempts found per read of the table.
const PER_READ: i64 = 100_000;
/// The pause between two batches of one sweep.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

/// What to keep. Both zero: everything, and no sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Days a finished attempt is kept (0: for ever).
    pub days: u64,
    /// Finished attempts kept per device (0: all).
    pub per_device: u64,
}

impl Policy {
    fn is_off(&self) -> bool {
        self.days == 0 && self.per_device == 0
    }
}

/// The running sweep; `finish` stops it.
pub struct Sweeper {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Sweeper {
    /// Starts the sweep: one shortly after start, then every `interval`.
    /// With a policy that keeps everything, nothing runs.
    pub fn start(store: Store, policy: Policy, interval: Duration) -> Sweeper {
        let stop = CancellationToken::new();
        let task = (!policy.is_off()).then(|| tokio::spawn(sweep_every(store, policy, interval, stop.clone())));
        Sweeper { stop, task }
    }

    pub async fn finish(self, limit: Duration) {
        self.stop.cancel();
        if let Some(task) = self.task
            && tokio::time::timeout(limit, task).await.is_err()
        {
            tracing::warn!("the log retention sweep did not finish in time");
        }
    }
}

async fn sweep_every(store: Store, policy: Policy, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep(&store, policy, &stop).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "log retention deleted finished attempts"),
            Err(e) => tracing::warn!(error = %e, "log retention could not delete; trying again next time"),
        }
    }
}

/// One sweep: reads up to [`PER_READ`] attempts that may go, deletes them
/// [`BATCH`] at a time, and reads again until a read comes back short.
/// Returns how many rows went.
pub async fn sweep(store: &Store, policy: Policy, stop: &CancellationToken) -> Result<u64, sqlx::Error> {
    let older_than = (policy.days > 0).then(|| Utc::now() - chrono::Duration::days(policy.days as i64));
    let keep = (policy.per_device > 0).then(|| i64::try_from(policy.per_device).unwrap_or(i64::MAX));
    let mut total = 0;
    loop {
        let ids = store.prunable_logs(older_than, keep, PER_READ).await?;
        for batch in ids.chunks(BATCH) {
            if stop.is_cancelled() {
                return Ok(total);
            }
            let deleted = store.delete_logs(batch).await?;
            total += deleted;
            metrics::counter!("ota_log_rows_deleted_total").increment(deleted);
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
        if (ids.len() as i64) < PER_READ || stop.is_cancelled() {
            return Ok(total);
        }
    }
}
