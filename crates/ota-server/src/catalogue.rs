//! The active firmware, held in memory for the paths a fleet hammers
//! (`check` and `download`), so that neither reads the firmware table.
//!
//! Every write to the firmware table moves the store's firmware generation;
//! the next read after that loads a fresh snapshot. A snapshot loaded while
//! a write happened is used once but not kept, so a stale one never sticks.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ota_core::wire::Firmware;
use ota_core::{Candidate, Percent, Version};

use crate::store::Store;

/// An active firmware with its parsed selection facts.
#[derive(Debug)]
pub struct ActiveFirmware {
    pub record: Firmware,
    pub candidate: Candidate,
}

/// All active firmware at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    by_id: HashMap<i64, Arc<ActiveFirmware>>,
    by_type: HashMap<String, Vec<Arc<ActiveFirmware>>>,
}

impl Snapshot {
    fn new(records: Vec<Firmware>) -> Self {
        let mut snapshot = Snapshot::default();
        for record in records {
            let Some(candidate) = candidate_of(&record) else {
                tracing::warn!(firmware_id = record.id, version = %record.version, "firmware with an unparsable version is not offered");
                continue;
            };
            let active = Arc::new(ActiveFirmware { record, candidate });
            snapshot
                .by_type
                .entry(active.record.device_type.clone())
                .or_default()
                .push(Arc::clone(&active));
            snapshot.by_id.insert(active.record.id, active);
        }
        snapshot
    }

    /// An active firmware by id.
    pub fn get(&self, id: i64) -> Option<&Arc<ActiveFirmware>> {
        self.by_id.get(&id)
    }

    /// The active firmware of a device type.
    pub fn of_type(&self, device_type: &str) -> &[Arc<ActiveFirmware>] {
        self.by_type.get(device_type).map(Vec::as_slice).unwrap_or_default()
    }
}

fn candidate_of(firmware: &Firmware) -> Option<Candidate> {
    let min_version = match &firmware.min_version {
        Some(min) => Some(Version::parse(min).ok()?),
        None => None,
    };
    Some(Candidate {
        firmware_id: firmware.id,
        version: Version::parse(&firmware.version).ok()?,
        build_number: firmware.build_number,
        min_version,
        is_stable: firmware.is_stable,
        is_active: firmware.is_active,
        rollout: Percent::parse(i64::from(firmware.rollout_percentage)).ok()?,
        // The image's anti-rollback counter: a device whose eFuse counter is
        // higher erases it at boot, so select_offer never offers it to one.
        secure_version: firmware.secure_version,
    })
}

/// How long a snapshot is used at most, whatever the generation says: a
/// last line of defence should a write ever fail to move it.
const MAX_AGE: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Cached {
    generation: u64,
    loaded_at: Instant,
    snapshot: Arc<Snapshot>,
}

/// The cache in front of the firmware table.
#[derive(Debug)]
pub struct Catalogue {
    store: Store,
    current: RwLock<Option<Cached>>,
}

impl Catalogue {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            current: RwLock::new(None),
        }
    }

    /// The active firmware as of the last write to the firmware table.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, sqlx::Error> {
        let generation = self.store.firmware_generation();
        if let Some(cached) = &*self.current.read().unwrap_or_else(|p| p.into_inner())
            && cached.generation == generation
            && cached.loaded_at.elapsed() < MAX_AGE
        {
            return Ok(Arc::clone(&cached.snapshot));
        }
        let loaded_at = Instant::now();
        let snapshot = Arc::new(Snapshot::new(self.store.all_active_firmware().await?));
        if self.store.firmware_generation() == generation {
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
                generation,
                loaded_at,
                snapshot: Arc::clone(&snapshot),
            });
        }
        Ok(snapshot)
    }
}
