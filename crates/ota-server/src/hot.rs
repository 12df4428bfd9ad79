//! The firmware images devices are downloading right now, held in memory.
//!
//! A fleet downloads a handful of images, each megabytes, in many small
//! ranges (`esp_https_ota` asks for 64 KiB at a time). Keeping those images
//! as `Bytes` makes every range a zero-copy slice instead of an open, a
//! seek and a read. The cache holds at most `OTA_BLOB_CACHE_BYTES`, evicts
//! the least recently used image first, and takes no image larger than half
//! of it (those are streamed from disk). An image is checked against its
//! SHA-256 when it is loaded, so a file damaged on disk is never served
//! from memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ota_core::wire::Firmware;
use tokio::sync::OnceCell;

use crate::blobs::Blobs;

#[derive(Debug)]
struct Entry {
    image: Arc<OnceCell<Bytes>>,
    size: u64,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Entries {
    by_path: HashMap<String, Entry>,
    used: u64,
    clock: u64,
}

/// Hot firmware images, bounded by a byte budget.
#[derive(Debug)]
pub struct HotImages {
    budget: u64,
    entries: Mutex<Entries>,
}

/// Why an image could not be taken from memory.
#[derive(Debug, thiserror::Error)]
pub enum HotError {
    #[error("the stored file of firmware {id} does not match its SHA-256")]
    Damaged { id: i64 },
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

impl HotImages {
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The whole image of a firmware, from memory (loading it if needed), or
    /// `None` when it is too large for the cache.
    pub async fn image(&self, blobs: &Blobs, firmware: &Firmware) -> Result<Option<Bytes>, HotError> {
        let size = u64::try_from(firmware.file_size).unwrap_or(u64::MAX);
        if size > self.budget / 2 {
            return Ok(None);
        }
        let cell = self.entry(&firmware.binary_path, size);
        let loaded = cell.get_or_try_init(|| load(blobs, firmware)).await;
        match loaded {
            Ok(image) => {
                metrics::counter!("ota_hot_image_requests_total", "result" => "memory").increment(1);
                Ok(Some(image.clone()))
            }
            Err(e) => {
                self.forget(&firmware.binary_path);
                Err(e)
            }
        }
    }

    /// The entry of an image, made room for if new.
    fn entry(&self, binary_path: &str, size: u64) -> Arc<OnceCell<Bytes>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.clock += 1;
        let now = entries.clock;
        if let Some(entry) = entries.by_path.get_mut(binary_path) {
            entry.last_used = now;
            return Arc::clone(&entry.image);
        }
        while entries.used + size > self.budget {
            let Some(oldest) = entries
                .by_path
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(path, _)| path.clone())
            else {
                break;
            };
            if let Some(evicted) = entries.by_path.remove(&oldest) {
                entries.used -= evicted.size;
            }
        }
        let image = Arc::new(OnceCell::new());
        entries.by_path.insert(
            binary_path.to_owned(),
            Entry {
                image: Arc::clone(&image),
                size,
                last_used: now,
            },
        );
        entries.used += size;
        image
    }

    fn forget(&self, binary_path: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.by_path.remove(binary_path) {
            entries.used -= entry.size;
        }
    }
}

async fn load(blobs: &Blobs, firmware: &Firmware) -> Result<Bytes, HotError> {
    metrics::counter!("ota_hot_image_requests_total", "result" => "load").increment(1);
    let (image, sha256) = blobs.read_whole(&firmware.binary_path).await?;
    if sha256.as_str() != firmware.file_hash || image.len() as i64 != firmware.file_size {
        tracing::error!(firmware_id = firmware.id, path = %firmware.binary_path, "stored firmware file is damaged");
        return Err(HotError::Damaged { id: firmware.id });
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_image_is_evicted_first() {
        let hot = HotImages::new(100);
        let a = hot.entry("a", 40);
        hot.entry("b", 40);
        assert!(Arc::ptr_eq(&a, &hot.entry("a", 40)), "a is used again");
        hot.entry("c", 40);

        let entries = hot.entries.lock().unwrap();
        let mut kept: Vec<&str> = entries.by_path.keys().map(String::as_str).collect();
        kept.sort();
        assert_eq!(kept, ["a", "c"]);
        assert_eq!(entries.used, 80);
    }
}
