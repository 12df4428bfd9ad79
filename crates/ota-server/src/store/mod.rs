//! The database: connection, migrations and the queries, one module per table.
//!
//! SQLite (WAL, `busy_timeout`, foreign keys on, `synchronous=FULL`) is the
//! embedded default; PostgreSQL is for several instances. Each has its own
//! migrations, embedded in the binary and applied at start (on PostgreSQL
//! under an advisory lock, so instances may start together). The queries
//! are written once, with `$N` placeholders and SQL both understand, and
//! [`on_db!`] compiles each for both pools.

/// Runs `$body` with `$pool` bound to the store's pool (`&SqlitePool` or
/// `&PgPool`) and the type `DB` to its `sqlx::Database`: one text, compiled
/// for each backend.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => {
                #[allow(dead_code)]
                type DB = ::sqlx::Sqlite;
                $body
            }
            $crate::store::Db::Postgres($pool) => {
                #[allow(dead_code)]
                type DB = ::sqlx::Postgres;
                $body
            }
        }
    };
}

/// [`on_db!`] for one connection (a transaction's, or one taken from the pool).
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::store::Conn::Sqlite($c) => {
                #[allow(dead_code)]
                type DB = ::sqlx::Sqlite;
                $body
            }
            $crate::store::Conn::Postgres($c) => {
                #[allow(dead_code)]
                type DB = ::sqlx::Postgres;
                $body
            }
        }
    };
}

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
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, SqliteConnection, SqlitePool};

pub use audit::{AuditFilter, Change};
pub use device_types::DeviceTypeValues;
pub use devices::{DeviceQuery, Sighting};
pub use firmware::{FirmwareChanges, FirmwareFilter, NewFirmware};
pub use groups::Members;
pub use logs::{DeviceReport, LogFilter, LogWrite, NewLog, RolloutMark};
pub use rollouts::{NewRollout, RolloutFilter, RolloutRecord, StateChange, Tally};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a statement waits for a lock (SQLite's `busy_timeout`,
/// PostgreSQL's `lock_timeout`) before the request answers 503.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a free connection before it answers 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The pool of one backend or the other.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One connection of one backend or the other, for the helpers that run
/// inside a caller's transaction.
pub enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl<'c> From<&'c mut SqliteConnection> for Conn<'c> {
    fn from(conn: &'c mut SqliteConnection) -> Self {
        Conn::Sqlite(conn)
    }
}

impl<'c> From<&'c mut PgConnection> for Conn<'c> {
    fn from(conn: &'c mut PgConnection) -> Self {
        Conn::Postgres(conn)
    }
}

/// The database behind the server.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    description: String,
    /// Moves on every write to the firmware and device type tables, for
    /// caches in front of them.
    firmware_generation: Arc<AtomicU64>,
}

impl Store {
    /// Connects to `sqlite://path` (creating the file if needed) or
    /// `postgres://…` and applies migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)
                .with_context(|| format!("'{}' is not a PostgreSQL URL", redacted(url)))?;
            return Self::open_postgres(options, redacted(url)).await;
        }
        if !url.starts_with("sqlite:") {
            bail!(
                "OTA_DATABASE_URL '{}': not a database this server knows; use sqlite://path/to/ota.db \
                 or postgres://user:password@host/database",
                redacted(url)
            );
        }
        let options =
            SqliteConnectOptions::from_str(url).with_context(|| format!("'{}' is not an SQLite URL", redacted(url)))?;
        Self::open(options, redacted(url)).await
    }

    async fn open_postgres(options: PgConnectOptions, description: String) -> anyhow::Result<Self> {
        let lock_timeout = format!("{}ms", LOCK_TIMEOUT.as_millis());
        let options = options.options([("lock_timeout", lock_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to the PostgreSQL database {description}"))?;
        // sqlx takes an advisory lock around the migrations: of instances
        // that start together, one migrates and the others wait for it.
        POSTGRES_MIGRATIONS
            .run(&pool)
            .await
            .context("applying database migrations")?;
        let store = Self::new(Db::Postgres(pool.clone()), description);
        follow_other_instances(pool, Arc::downgrade(&store.firmware_generation));
        Ok(store)
    }

    fn new(db: Db, description: String) -> Self {
        Self {
            db,
            description,
            firmware_generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Which backend this is.
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
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
            .busy_timeout(LOCK_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .with_context(|| format!("opening the SQLite database {description}"))?;
        SQLITE_MIGRATIONS
            .run(&pool)
            .await
            .context("applying database migrations")?;
        Ok(Self::new(Db::Sqlite(pool), description))
    }

    /// A number that changes whenever a firmware or device type record is written.
    pub fn firmware_generation(&self) -> u64 {
        self.firmware_generation.load(Ordering::Acquire)
    }

    /// Runs a write to the firmware (or device type) table to its end, even if the request
    /// that asked for it goes away, and then moves the firmware generation.
    /// (A statement handed to the database commits whether or not anyone
    /// awaits it; the generation must move after every commit, or caches
    /// keep old rows.)
    async fn write_firmware<T, F, Fut>(&self, write: F) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    {
        let generation = Arc::clone(&self.firmware_generation);
        let db = self.db.clone();
        let written = write(db.clone());
        tokio::spawn(async move {
            let result = written.await;
            generation.fetch_add(1, Ordering::AcqRel);
            if let Db::Postgres(pool) = &db {
                // The other instances' caches: they reload on this (or, if
                // it is lost, when their snapshot ages out).
                if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
                    .bind(CHANGES_CHANNEL)
                    .execute(pool)
                    .await
                {
                    tracing::warn!(error = %e, "could not tell other instances of a catalogue change");
                }
            }
            result
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "a firmware write task failed");
            sqlx::Error::WorkerCrashed
        })?
    }

    /// Holds the right to publish firmware (move a file into place and
    /// write its record) across every instance on this database: on
    /// PostgreSQL a session advisory lock, released when the guard drops
    /// (its connection is closed, not returned to the pool); on SQLite,
    /// where one process owns the file, nothing.
    pub async fn lock_publication(&self) -> Result<PublicationLock, sqlx::Error> {
        match &self.db {
            Db::Sqlite(_) => Ok(PublicationLock { _conn: None }),
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                conn.close_on_drop();
                // Another instance may be copying a large image into place:
                // wait longer than for a row lock (the connection is closed
                // afterwards, and the setting with it).
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SET lock_timeout = '{}s'",
                    PUBLICATION_WAIT.as_secs()
                )))
                .execute(&mut *conn)
                .await?;
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(PUBLICATION_LOCK)
                    .execute(&mut *conn)
                    .await?;
                Ok(PublicationLock { _conn: Some(conn) })
            }
        }
    }

    /// Which database this is, without credentials.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Whether the database answers with a read of a real table.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_db!(&self.db, pool => sqlx::query("SELECT id FROM firmware LIMIT 1")
            .execute(pool)
            .await
            .map(|_| ()))
    }

    /// Waits for running queries and closes every connection.
    pub async fn close(&self) {
        on_db!(&self.db, pool => pool.close().await)
    }
}

/// The channel on which instances announce catalogue changes.
const CHANGES_CHANNEL: &str = "ota_catalogue";
/// How long a publication waits for another instance's to end.
const PUBLICATION_WAIT: Duration = Duration::from_secs(120);
/// The advisory lock key of firmware publication ("ota-publ").
const PUBLICATION_LOCK: i64 = 0x6f74_612d_7075_626c;

/// See [`Store::lock_publication`].
#[must_use]
pub struct PublicationLock {
    _conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

/// Moves the generation whenever another instance announces a catalogue
/// change, and whenever the listening connection was lost (announcements
/// may have been missed meanwhile). Ends with the store or its pool.
fn follow_other_instances(pool: PgPool, generation: std::sync::Weak<AtomicU64>) {
    let bump = move || match generation.upgrade() {
        Some(generation) => {
            generation.fetch_add(1, Ordering::AcqRel);
            true
        }
        None => false,
    };
    tokio::spawn(async move {
        let mut listener = loop {
            match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(mut listener) => match listener.listen(CHANGES_CHANNEL).await {
                    Ok(()) => break listener,
                    Err(e) => tracing::warn!(error = %e, "could not listen for other instances' changes"),
                },
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => tracing::warn!(error = %e, "could not listen for other instances' changes"),
            }
            if !bump() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => {}
                // The connection was lost; the next call reconnects.
                Ok(None) => tracing::warn!("lost the connection that listens for other instances' changes"),
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "listening for other instances' changes");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if !bump() {
                return;
            }
        }
    });
}

/// A database URL without its credentials, for messages and logs: the
/// user and password before `@`, and a `password` (or `sslpassword`)
/// parameter of the query.
pub fn redacted(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut shown = match (base.find("://"), base.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://<credentials>{}", &base[..scheme_end], &base[at..])
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _))
                    if name.eq_ignore_ascii_case("password") || name.eq_ignore_ascii_case("sslpassword") =>
                {
                    format!("{name}=<redacted>")
                }
                _ => parameter.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&parameters.join("&"));
    }
    shown
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
        for url in ["mysql://ota:secret@db/ota", "/var/lib/ota.db", "redis://x"] {
            let error = Store::connect(url).await.unwrap_err().to_string();
            assert!(error.contains("not a database this server knows"), "{url}: {error}");
            assert!(!error.contains("secret"), "the password is shown: {error}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_postgres_is_reported_without_its_password() {
        // Port 1 on loopback: nothing listens there.
        let url = "postgres://ota:secret@127.0.0.1:1/ota";
        let error = format!("{:#}", Store::connect(url).await.unwrap_err());
        assert!(error.contains("connecting to the PostgreSQL database"), "{error}");
        assert!(!error.contains("secret"), "the password is shown: {error}");
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redacted("postgres://ota:pw@db:5432/ota"),
            "postgres://<credentials>@db:5432/ota"
        );
        assert_eq!(redacted("sqlite://./data/ota.db"), "sqlite://./data/ota.db");
        assert_eq!(
            redacted("postgres://db/ota?user=ota&password=s3cret&sslmode=require"),
            "postgres://db/ota?user=ota&password=<redacted>&sslmode=require"
        );
        assert_eq!(
            redacted("postgres://ota:pw@db/ota?options[search_path]=ota"),
            "postgres://<credentials>@db/ota?options[search_path]=ota"
        );
    }
}
