//! What every handler shares: cheap to clone, `Arc` inside.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use ota_core::LinkSigner;
use tokio::sync::Mutex;

use crate::auth::DeviceTokenVerifier;
use crate::blobs::Blobs;
use crate::catalogue::Catalogue;
use crate::config::{Secret, Settings};
use crate::counted::CountedDownloads;
use crate::hot::HotImages;
use crate::inventory::Inventory;
use crate::ratelimit::RateLimiter;
use crate::rollouts::Rollouts;
use crate::store::Store;
use crate::tokens::DeviceTokenIssuer;

/// How many counted downloads are remembered (about 1 MiB).
const COUNTED_DOWNLOADS: usize = 65_536;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    settings: Settings,
    store: Store,
    catalogue: Catalogue,
    inventory: Inventory,
    hot_images: HotImages,
    blobs: Blobs,
    admin_tokens: Vec<(String, Secret)>,
    rollouts: Rollouts,
    device_tokens: DeviceTokenVerifier,
    device_token_issuer: Option<DeviceTokenIssuer>,
    links: LinkSigner,
    rate_limiter: RateLimiter,
    counted_downloads: CountedDownloads,
    metrics: PrometheusHandle,
    openapi_json: String,
    publish_lock: Arc<Mutex<()>>,
}

/// Everything [`AppState::new`] needs.
pub struct Parts {
    pub settings: Settings,
    pub store: Store,
    pub inventory: Inventory,
    pub blobs: Blobs,
    /// Every admin token and its name.
    pub admin_tokens: Vec<(String, Secret)>,
    pub rollouts: Rollouts,
    pub device_tokens: DeviceTokenVerifier,
    /// `None` when this server only verifies device tokens.
    pub device_token_issuer: Option<DeviceTokenIssuer>,
    pub links: LinkSigner,
    pub metrics: PrometheusHandle,
    pub openapi_json: String,
}

impl AppState {
    pub fn new(parts: Parts) -> Self {
        let rate_limiter = RateLimiter::per_minute(parts.settings.device_rate_limit);
        let hot_images = HotImages::new(parts.settings.blob_cache_bytes);
        Self(Arc::new(Inner {
            hot_images,
            settings: parts.settings,
            catalogue: Catalogue::new(parts.store.clone()),
            store: parts.store,
            inventory: parts.inventory,
            blobs: parts.blobs,
            admin_tokens: parts.admin_tokens,
            rollouts: parts.rollouts,
            device_tokens: parts.device_tokens,
            device_token_issuer: parts.device_token_issuer,
            links: parts.links,
            rate_limiter,
            counted_downloads: CountedDownloads::new(COUNTED_DOWNLOADS),
            metrics: parts.metrics,
            openapi_json: parts.openapi_json,
            publish_lock: Arc::new(Mutex::new(())),
        }))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The active firmware, cached for `check` and `download`.
    pub fn catalogue(&self) -> &Catalogue {
        &self.0.catalogue
    }

    /// Where `check` leaves device sightings for the batched writer.
    pub fn inventory(&self) -> &Inventory {
        &self.0.inventory
    }

    /// Firmware images kept in memory for downloads.
    pub fn hot_images(&self) -> &HotImages {
        &self.0.hot_images
    }

    pub fn blobs(&self) -> &Blobs {
        &self.0.blobs
    }

    /// Every admin token and its name.
    pub fn admin_tokens(&self) -> &[(String, Secret)] {
        &self.0.admin_tokens
    }

    /// Where handlers wake the rollout driver.
    pub fn rollouts(&self) -> &Rollouts {
        &self.0.rollouts
    }

    pub fn device_tokens(&self) -> &DeviceTokenVerifier {
        &self.0.device_tokens
    }

    /// Mints device tokens; `None` when a public key is configured without
    /// its private key.
    pub fn device_token_issuer(&self) -> Option<&DeviceTokenIssuer> {
        self.0.device_token_issuer.as_ref()
    }

    pub fn links(&self) -> &LinkSigner {
        &self.0.links
    }

    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.0.rate_limiter
    }

    pub fn counted_downloads(&self) -> &CountedDownloads {
        &self.0.counted_downloads
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.0.metrics
    }

    pub fn openapi_json(&self) -> &str {
        &self.0.openapi_json
    }

    /// Held while a file is moved into place and its record written, so
    /// that two uploads of one version cannot interleave: in this process,
    /// and on PostgreSQL across every instance.
    /// The guard is owned, so a publication can run to its end in a task of
    /// its own.
    pub async fn lock_publication(&self) -> Result<Publishing, sqlx::Error> {
        let local = Arc::clone(&self.0.publish_lock).lock_owned().await;
        let shared = self.0.store.lock_publication().await?;
        Ok(Publishing {
            _local: local,
            _shared: shared,
        })
    }
}

/// See [`AppState::lock_publication`].
#[must_use]
pub struct Publishing {
    _local: tokio::sync::OwnedMutexGuard<()>,
    _shared: crate::store::PublicationLock,
}
