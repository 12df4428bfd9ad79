//! The active firmware, held in memory for the paths a fleet hammers
//! (`check` and `download`), so that neither reads the firmware table —
//! with what decides who is offered it: rollouts, groups and pins.
//!
//! Every write to the firmware table moves the store's firmware generation;
//! the next read after that loads a fresh snapshot. A snapshot loaded while
//! a write happened is used once but not kept, so a stale one never sticks.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ota_core::rollout::Arm;
use ota_core::wire::Firmware;
use ota_core::{Candidate, Gate, Percent, Version};

use crate::store::{RolloutRecord, Store};

/// An active firmware with its parsed selection facts.
#[derive(Debug)]
pub struct ActiveFirmware {
    pub record: Firmware,
    pub candidate: Candidate,
}

/// All active firmware at one moment, and who may be offered it.
#[derive(Debug, Default)]
pub struct Snapshot {
    by_id: HashMap<i64, Arc<ActiveFirmware>>,
    by_type: HashMap<String, Vec<Arc<ActiveFirmware>>>,
    /// Device id → the ids of its groups.
    members: HashMap<String, Vec<i64>>,
    /// Device id → the firmware it is pinned to.
    pins: HashMap<String, i64>,
}

/// What a snapshot is made of.
#[derive(Debug, Default)]
struct Loaded {
    firmware: Vec<Firmware>,
    rollouts: Vec<RolloutRecord>,
    groups: Vec<(String, i64)>,
    memberships: Vec<(String, i64)>,
    pins: Vec<(String, i64)>,
}

impl Snapshot {
    fn new(loaded: Loaded) -> Self {
        let mut snapshot = Snapshot::default();
        let group_ids: HashMap<String, i64> = loaded.groups.into_iter().collect();
        let ids_of = |names: &[String]| -> Vec<i64> {
            // A name that no longer exists matches nobody: -1 is no group's id.
            names.iter().map(|n| group_ids.get(n).copied().unwrap_or(-1)).collect()
        };
        // The latest rollout of a firmware (either arm) decides who gets it.
        let mut gates: HashMap<i64, Gate> = HashMap::new();
        for rollout in &loaded.rollouts {
            let stages: Vec<Percent> = rollout
                .stages
                .iter()
                .filter_map(|p| Percent::parse(i64::from(*p)).ok())
                .collect();
            for (arm, firmware_id, _) in rollout.arms() {
                let variant = rollout.variant.and_then(|(_, p)| Percent::parse(i64::from(p)).ok());
                gates.insert(
                    firmware_id,
                    Gate {
                        rollout_id: rollout.id,
                        state: rollout.state,
                        stages: stages.clone(),
                        stage: rollout.stage,
                        cohort_key: rollout.firmware_id,
                        arm: variant.map(|v| (arm, v)),
                        groups: ids_of(&rollout.groups),
                    },
                );
                if arm == Arm::B && variant.is_none() {
                    tracing::warn!(rollout_id = rollout.id, "a variant without a share");
                }
            }
        }
        for record in loaded.firmware {
            let Some(mut candidate) = candidate_of(&record) else {
                tracing::warn!(firmware_id = record.id, version = %record.version, "firmware with an unparsable version is not offered");
                continue;
            };
            candidate.target_groups = ids_of(&record.target_groups);
            candidate.gate = gates.remove(&record.id);
            let active = Arc::new(ActiveFirmware { record, candidate });
            snapshot
                .by_type
                .entry(active.record.device_type.clone())
                .or_default()
                .push(Arc::clone(&active));
            snapshot.by_id.insert(active.record.id, active);
        }
        for (device_id, group_id) in loaded.memberships {
            snapshot.members.entry(device_id).or_default().push(group_id);
        }
        snapshot.pins = loaded.pins.into_iter().collect();
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

    /// The ids of the groups a device is in.
    pub fn groups_of(&self, device_id: &str) -> &[i64] {
        self.members.get(device_id).map(Vec::as_slice).unwrap_or_default()
    }

    /// The firmware a device is pinned to.
    pub fn pin_of(&self, device_id: &str) -> Option<i64> {
        self.pins.get(device_id).copied()
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
        recalled: firmware.recalled_at.is_some(),
        target_groups: Vec::new(),
        gate: None,
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
        let loaded = Loaded {
            firmware: self.store.all_active_firmware().await?,
            rollouts: self.store.all_rollouts().await?,
            groups: self.store.group_ids().await?,
            memberships: self.store.memberships().await?,
            pins: self.store.pins().await?,
        };
        let snapshot = Arc::new(Snapshot::new(loaded));
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
