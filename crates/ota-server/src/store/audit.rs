//! The audit log: every admin change, who made it, and the record before
//! and after.

use chrono::{DateTime, Utc};
use ota_core::wire::AuditEntry;
use serde_json::Value;
use sqlx::{FromRow, QueryBuilder};

use super::Store;

#[derive(Debug, FromRow)]
struct AuditRow {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    target_type: String,
    target_id: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

fn json(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        AuditEntry {
            id: row.id,
            at: row.at,
            actor: row.actor,
            action: row.action,
            target_type: row.target_type,
            target_id: row.target_id,
            before: json(row.before),
            after: json(row.after),
        }
    }
}

/// One change to record.
#[derive(Debug, Clone)]
pub struct Change {
    pub actor: String,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Filters of the audit query.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

impl AuditFilter {
    fn push_where<DB>(&self, query: &mut QueryBuilder<DB>)
    where
        DB: sqlx::Database,
        String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        DateTime<Utc>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query.push(" WHERE TRUE");
        for (column, value) in [
            ("actor", &self.actor),
            ("action", &self.action),
            ("target_type", &self.target_type),
            ("target_id", &self.target_id),
        ] {
            if let Some(value) = value {
                query.push(format!(" AND {column} = ")).push_bind(value.clone());
            }
        }
        if let Some(since) = self.since {
            query.push(" AND at >= ").push_bind(since);
        }
    }
}

pub(super) async fn record(conn: impl Into<super::Conn<'_>>, change: &Change) -> Result<(), sqlx::Error> {
    let text = |value: &Option<Value>| value.as_ref().map(Value::to_string);
    on_conn!(conn.into(), db =>     sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target_type, target_id, before, after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Utc::now())
    .bind(&change.actor)
    .bind(change.action)
    .bind(change.target_type)
    .bind(&change.target_id)
    .bind(text(&change.before))
    .bind(text(&change.after))
    .execute(db)
    .await
    .map(|_| ()))
}

impl Store {
    /// Records a change. The write runs to its end even if the request
    /// that made the change goes away.
    pub async fn record_change(&self, change: Change) -> Result<(), sqlx::Error> {
        on_db!(&self.db, pool => {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await?;
                record(&mut *conn, &change).await
            })
                .await
                .map_err(|_| sqlx::Error::WorkerCrashed)?
        })
    }

    /// A page of the audit log, newest first, and how many entries match.
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AuditEntry>, i64), sqlx::Error> {
        on_db!(&self.db, pool => {
            let mut count = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM audit_log");
            filter.push_where(&mut count);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
            let mut page = QueryBuilder::<DB>::new("SELECT * FROM audit_log");
            filter.push_where(&mut page);
            page.push(" ORDER BY id DESC LIMIT ")
                .push_bind(limit)
                .push(" OFFSET ")
                .push_bind(offset);
            let rows = page.build_query_as::<AuditRow>().fetch_all(pool).await?;
            Ok((rows.into_iter().map(AuditEntry::from).collect(), total))
        })
    }
}
