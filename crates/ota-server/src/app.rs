//! Building and running the server: `Application::build` binds the
//! listeners (port 0 in tests), `run_until_stopped` serves until the given
//! shutdown future resolves, then drains in-flight requests (bounded) and
//! closes the database.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use ota_core::LinkSigner;
use tokio::net::TcpListener;

use crate::auth::DeviceTokenVerifier;
use crate::blobs::Blobs;
use crate::config::Settings;
use crate::net::IdleTimeoutListener;
use crate::secrets::{self, SecretKind};
use crate::state::{self, AppState};
use crate::store::Store;
use crate::{http, telemetry};

pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
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
        tracing::info!(algorithm = ?device_tokens.algorithm(), "device tokens");

        let database_url = settings.database_url();
        let store = Store::connect(&database_url).await?;
        tracing::info!(database = %crate::store::redacted(&database_url), "database ready");
        let blobs = Blobs::open(storage_root(&settings)?).await?;
        tracing::info!(storage = %blobs.root().display(), "firmware storage ready");

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
        let state = AppState::new(state::Parts {
            settings,
            store,
            blobs,
            admin_token,
            device_tokens,
            links: LinkSigner::new(link_key.expose().as_bytes()),
            metrics: telemetry::metrics_handle(),
            openapi_json,
        });
        Ok(Self {
            listener,
            metrics_listener,
            state,
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
    /// in-flight requests up to `shutdown_timeout` to finish, and closes the
    /// database.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application {
            listener,
            metrics_listener,
            state,
        } = self;
        let local_addr = listener.local_addr().context("reading the listener's address")?;
        let settings = state.settings().clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        let main = axum::serve(
            IdleTimeoutListener::new(listener, Duration::from_secs(settings.idle_timeout)),
            http::router(state.clone(), metrics_listener.is_none()),
        )
        .with_graceful_shutdown(stopped);
        let metrics_server = metrics_listener.map(|listener| {
            let mut rx = stop_rx.clone();
            tokio::spawn(
                axum::serve(listener, http::metrics_router(state.clone()))
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    })
                    .into_future(),
            )
        });

        tracing::info!(listen = %local_addr, "serving");
        let mut main = std::pin::pin!(main.into_future());
        tokio::select! {
            result = &mut main => result.context("serving HTTP")?,
            () = shutdown => {
                tracing::info!(grace_seconds = settings.shutdown_timeout, "shutting down: no new connections, finishing in-flight requests");
                let _ = stop_tx.send(true);
                match tokio::time::timeout(Duration::from_secs(settings.shutdown_timeout), &mut main).await {
                    Ok(result) => result.context("serving HTTP")?,
                    Err(_) => tracing::warn!("in-flight requests did not finish in time; closing them"),
                }
            }
        }
        if let Some(server) = metrics_server {
            server.abort();
        }
        state.store().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

fn storage_root(settings: &Settings) -> anyhow::Result<std::path::PathBuf> {
    match settings.storage_url.as_deref() {
        None => Ok(settings.data_dir.join("firmware")),
        Some(url) if url.starts_with("file://") => Ok(url.trim_start_matches("file://").into()),
        Some(url) if url.contains("://") => {
            bail!(
                "OTA_STORAGE_URL '{url}': this build stores firmware on the local file system only (file:// or a path)"
            )
        }
        Some(path) => Ok(path.into()),
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
