//! Building and running the server: `Application::build` binds the
//! listeners (port 0 in tests), `run_until_stopped` serves until the given
//! shutdown future resolves, then drains in-flight requests (bounded) and
//! closes the database.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use ota_core::LinkSigner;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, DeviceTokenVerifier};
use crate::blobs::{Blobs, StorageLocation};
use crate::config::Settings;
use crate::inventory::{Inventory, InventoryWriter};
use crate::net::IdleTimeoutListener;
use crate::rollouts::{RolloutDriver, Rollouts};
use crate::secrets::{self, SecretKind};
use crate::state::{self, AppState};
use crate::store::Store;
use crate::tokens::DeviceTokenIssuer;
use crate::{http, retention, telemetry};

pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    inventory_writer: InventoryWriter,
    rollout_driver: RolloutDriver,
    retention: retention::Sweeper,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let data_dir = settings.data_dir.clone();
        tokio::fs::create_dir_all(&data_dir)
            .await
            .with_context(|| format!("creating the data dir {}", data_dir.display()))?;

        let admin_token = secrets::resolve(SecretKind::AdminToken, settings.admin_token.as_ref(), &data_dir)?;
        let link_key = secrets::resolve(
            SecretKind::LinkSigningKey,
            settings.link_signing_key.as_ref(),
            &data_dir,
        )?;
        let jwt_secret = match settings.device_jwt_public_key {
            Some(_) => None,
            None => Some(secrets::resolve(
                SecretKind::DeviceJwtSecret,
                settings.device_jwt_secret.as_ref(),
                &data_dir,
            )?),
        };
        let device_tokens = DeviceTokenVerifier::from_settings(&settings, jwt_secret.as_ref())?;
        let device_token_issuer = DeviceTokenIssuer::from_settings(&settings, jwt_secret.as_ref(), &device_tokens)?;
        tracing::info!(
            algorithm = ?device_tokens.algorithm(),
            mints_tokens = device_token_issuer.is_some(),
            "device tokens"
        );

        let store = match &settings.database_url {
            Some(url) => Store::connect(url).await?,
            None => Store::open_file(&settings.data_dir.join("ota.db")).await?,
        };
        tracing::info!(database = %store.describe(), "database ready");
        let blobs = Blobs::open(StorageLocation::parse(
            settings.storage_url.as_deref(),
            &settings.data_dir,
        )?)
        .await?;
        tracing::info!(storage = %blobs.describe(), "firmware storage ready");

        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?,
            ),
            None => None,
        };
        let openapi_json = http::openapi().to_json().context("rendering the OpenAPI document")?;
        let (inventory, inventory_writer) = Inventory::start(store.clone());
        let (rollouts, rollout_driver) = Rollouts::start(store.clone(), Duration::from_secs(settings.rollout_interval));
        let retention = retention::Sweeper::start(
            store.clone(),
            retention::Policy {
                days: settings.log_retention_days,
                per_device: settings.log_retention_per_device,
            },
            Duration::from_secs(settings.retention_interval),
        );
        let admin_tokens = auth::named_admin_tokens(admin_token, settings.admin_tokens.as_ref())?;
        let state = AppState::new(state::Parts {
            settings,
            store,
            inventory,
            blobs,
            admin_tokens,
            rollouts,
            device_tokens,
            device_token_issuer,
            links: LinkSigner::new(link_key.expose().as_bytes()),
            metrics: telemetry::metrics_handle(),
            openapi_json,
        });
        Ok(Self {
            listener,
            metrics_listener,
            state,
            inventory_writer,
            rollout_driver,
            retention,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The shared state (database, storage, settings), for embedding and tests.
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves; then stops accepting, gives
    /// in-flight requests up to `shutdown_timeout` to finish, closes the
    /// connections still open, and closes the database.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application {
            listener,
            metrics_listener,
            state,
            inventory_writer,
            rollout_driver,
            retention,
        } = self;
        let local_addr = listener.local_addr().context("reading the listener's address")?;
        let settings = state.settings().clone();
        let stopping = CancellationToken::new();
        let closing = CancellationToken::new();

        let listener = IdleTimeoutListener::new(listener, Duration::from_secs(settings.idle_timeout), closing.clone());
        let router = http::router(state.clone(), metrics_listener.is_none());
        let main = crate::serve::serve_http1(listener, router, stopping.clone());
        let metrics_server = metrics_listener.map(|listener| {
            let serve = axum::serve(listener, http::metrics_router(state.clone()))
                .with_graceful_shutdown(stopping.clone().cancelled_owned());
            tokio::spawn(serve.into_future())
        });
        let upkeep = tokio::spawn(keep_metrics_tidy(state.clone()));

        tracing::info!(listen = %local_addr, "serving");
        let mut main = std::pin::pin!(main);
        tokio::select! {
            () = &mut main => {}
            () = shutdown => {
                tracing::info!(grace_seconds = settings.shutdown_timeout, "shutting down: no new connections, finishing in-flight requests");
                stopping.cancel();
                let grace = Duration::from_secs(settings.shutdown_timeout);
                if tokio::time::timeout(grace, &mut main).await.is_err() {
                    tracing::warn!("in-flight requests did not finish in time; closing their connections");
                    closing.cancel();
                    if tokio::time::timeout(CLOSE_WAIT, &mut main).await.is_err() {
                        tracing::warn!("some connections did not close");
                    }
                }
            }
        }
        upkeep.abort();
        if let Some(server) = metrics_server {
            server.abort();
        }
        rollout_driver.finish(CLOSE_WAIT).await;
        retention.finish(CLOSE_WAIT).await;
        inventory_writer.finish(CLOSE_WAIT).await;
        if tokio::time::timeout(CLOSE_WAIT, state.store().close()).await.is_err() {
            tracing::warn!("the database did not close in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long closing connections and the database may take after the grace period.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Drains the metrics recorder's histogram buffers, which otherwise grow
/// until someone scrapes `/metrics`.
async fn keep_metrics_tidy(state: AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        state.metrics().run_upkeep();
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
