//! The database: connection, migrations and the queries, one module per table.
//!
//! SQLite (WAL, `busy_timeout`, foreign keys on, `synchronous=FULL`) is the
//! embedded default. Migrations are embedded in the binary and applied at
//! start. Queries use `$N` placeholders so they stay portable.

mod audit;
mod device_types;
mod devices;
mod firmware;
mod groups;
mod logs;
mod rollouts;

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use audit::{AuditFilter, Change};
pub use device_types::DeviceTypeValues;
pub use devices::{DeviceQuery, Sighting};
pub use firmware::{FirmwareChanges, FirmwareFilter, NewFirmware};
pub use groups::Members;
pub use logs::{DeviceReport, LogFilter, LogWrite, NewLog, RolloutMark};
pub use rollouts::{NewRollout, RolloutFilter, RolloutRecord, StateChange, Tally};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The database behind the server.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    description: String,
    /// Moves on every write to the firmware and device type tables, for
    /// caches in front of them.
    firmware_generation: Arc<AtomicU64>,
}

impl Store {
    /// Connects to `sqlite://path` (creating the file if needed) and applies migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        if !url.starts_with("sqlite:") {
            bail!(
                "OTA_DATABASE_URL '{}': this build supports SQLite only (sqlite://path/to/ota.db)",
                redacted(url)
            );
        }
        let options =
            SqliteConnectOptions::from_str(url).with_context(|| format!("'{}' is not an SQLite URL", redacted(url)))?;
        Self::open(options, redacted(url)).await
    }

    /// Opens (creating) the SQLite file at `path` and applies migrations.
    pub async fn open_file(path: &Path) -> anyhow::Result<Self> {
        Self::open(SqliteConnectOptions::new().filename(path), path.display().to_string()).await
    }

    async fn open(options: SqliteConnectOptions, description: String) -> anyhow::Result<Self> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .with_context(|| format!("opening the SQLite database {description}"))?;
        MIGRATIONS.run(&pool).await.context("applying database migrations")?;
        Ok(Self {
            pool,
            description,
            firmware_generation: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A number that changes whenever a firmware or device type record is written.
    pub fn firmware_generation(&self) -> u64 {
        self.firmware_generation.load(Ordering::Acquire)
    }

    /// Runs a write to the firmware (or device type) table to its end, even if the request
    /// that asked for it goes away, and then moves the firmware generation.
    /// (A statement handed to SQLite commits whether or not anyone awaits it;
    /// the generation must move after every commit, or caches keep old rows.)
    async fn write_firmware<T, F, Fut>(&self, write: F) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        F: FnOnce(SqlitePool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    {
        let generation = Arc::clone(&self.firmware_generation);
        let written = write(self.pool.clone());
        tokio::spawn(async move {
            let result = written.await;
            generation.fetch_add(1, Ordering::AcqRel);
            result
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "a firmware write task failed");
            sqlx::Error::WorkerCrashed
        })?
    }

    /// Which database this is, without credentials.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Whether the database answers with a read of a real table.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT id FROM firmware LIMIT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Waits for running queries and closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A database URL without its credentials, for messages and logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://<credentials>{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Whether an error is a unique-constraint violation.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_database_url_of_another_kind_is_refused_clearly() {
        for url in ["postgres://ota:secret@db/ota", "/var/lib/ota.db", "mysql://x"] {
            let error = Store::connect(url).await.unwrap_err().to_string();
            assert!(error.contains("SQLite only"), "{url}: {error}");
            assert!(!error.contains("secret"), "the password is shown: {error}");
        }
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redacted("postgres://ota:pw@db:5432/ota"),
            "postgres://<credentials>@db:5432/ota"
        );
        assert_eq!(redacted("sqlite://./data/ota.db"), "sqlite://./data/ota.db");
    }
}
