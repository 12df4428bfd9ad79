//! Downloads already counted for `download_count`, remembered in memory.
//!
//! A download from byte 0 counts once per device and firmware; the
//! database decides (`firmware_download`), but asking it costs a write
//! transaction. Devices that restart from byte 0 (ESP-IDF before 5.5 has
//! no resumption, and single-GET clients retry whole) would ask again and
//! again. Pairs the database has answered are remembered here, so a repeat
//! costs a hash lookup. The set is bounded: when full it starts again
//! empty, and the database still answers for anything forgotten.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

pub struct CountedDownloads {
    seen: Mutex<HashSet<u64>>,
    hasher: RandomState,
    capacity: usize,
}

impl CountedDownloads {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(HashSet::new()),
            hasher: RandomState::new(),
            capacity,
        }
    }

    fn key(&self, firmware_id: i64, device_id: &str) -> u64 {
        self.hasher.hash_one((firmware_id, device_id))
    }

    /// Whether this device's download of this firmware is known to be counted.
    pub fn contains(&self, firmware_id: i64, device_id: &str) -> bool {
        let key = self.key(firmware_id, device_id);
        self.seen.lock().expect("counted-downloads lock").contains(&key)
    }

    /// Remembers that the database has counted this pair.
    pub fn remember(&self, firmware_id: i64, device_id: &str) {
        let key = self.key(firmware_id, device_id);
        let mut seen = self.seen.lock().expect("counted-downloads lock");
        if seen.len() >= self.capacity {
            seen.clear();
        }
        seen.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_remembered_apart_and_forgotten_when_full() {
        let counted = CountedDownloads::new(2);
        assert!(!counted.contains(1, "tab5-1"));
        counted.remember(1, "tab5-1");
        assert!(counted.contains(1, "tab5-1"));
        assert!(!counted.contains(2, "tab5-1"));
        assert!(!counted.contains(1, "tab5-2"));
        counted.remember(1, "tab5-2");
        counted.remember(2, "tab5-1");
        // The third pair found the set full: it starts again with that one.
        assert!(counted.contains(2, "tab5-1"));
        assert!(!counted.contains(1, "tab5-1"));
    }
}
