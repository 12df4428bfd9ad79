//! Named static groups of devices.

use chrono::{DateTime, Utc};
use ota_core::wire::Group;
use sqlx::{FromRow, QueryBuilder};

use super::Store;
use super::devices::DeviceQuery;

#[derive(Debug, FromRow)]
struct GroupRow {
    name: String,
    description: Option<String>,
    members: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<GroupRow> for Group {
    fn from(row: GroupRow) -> Self {
        Group {
            name: row.name,
            description: row.description,
            members: row.members,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const SELECT_GROUP: &str = "SELECT g.name, g.description, g.created_at, g.updated_at, \
     (SELECT COUNT(*) FROM device_group_members m WHERE m.group_id = g.id) AS members FROM device_groups g";

/// Which devices a membership change is about.
#[derive(Debug, Clone)]
pub enum Members {
    Ids(Vec<String>),
    Matching(DeviceQuery),
}

impl Store {
    /// Creates a group; a unique violation when the name is taken.
    pub async fn create_group(&self, name: &str, description: Option<&str>) -> Result<Group, sqlx::Error> {
        on_db!(&self.db, pool => {
            let now = Utc::now();
            sqlx::query("INSERT INTO device_groups (name, description, created_at, updated_at) VALUES ($1, $2, $3, $3)")
                .bind(name)
                .bind(description)
                .bind(now)
                .execute(pool)
                .await?;
            self.group(name).await?.ok_or(sqlx::Error::RowNotFound)
        })
    }

    pub async fn group(&self, name: &str) -> Result<Option<Group>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_as::<_, GroupRow>(sqlx::AssertSqlSafe(format!("{SELECT_GROUP} WHERE g.name = $1")))
                .bind(name)
                .fetch_optional(pool)
                .await
                .map(|row| row.map(Group::from))
        })
    }

    pub async fn list_groups(&self, limit: i64, offset: i64) -> Result<(Vec<Group>, i64), sqlx::Error> {
        on_db!(&self.db, pool => {
            let total = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM device_groups")
                .fetch_one(pool)
                .await?;
            let rows = sqlx::query_as::<_, GroupRow>(sqlx::AssertSqlSafe(format!(
                "{SELECT_GROUP} ORDER BY g.name LIMIT $1 OFFSET $2"
            )))
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            Ok((rows.into_iter().map(Group::from).collect(), total))
        })
    }

    pub async fn set_group_description(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<Option<Group>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let changed = sqlx::query("UPDATE device_groups SET description = $2, updated_at = $3 WHERE name = $1")
                .bind(name)
                .bind(description)
                .bind(Utc::now())
                .execute(pool)
                .await?
                .rows_affected();
            if changed == 0 {
                return Ok(None);
            }
            self.group(name).await
        })
    }

    /// Deletes a group and its memberships.
    pub async fn delete_group(&self, name: &str) -> Result<bool, sqlx::Error> {
        let name = name.to_owned();
        self.write_firmware(move |db| async move {
            on_db!(&db, pool => {
                sqlx::query("DELETE FROM device_groups WHERE name = $1")
                    .bind(name)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected() > 0)
            })
        })
        .await
    }

    /// What targets a group, if anything: a firmware or a rollout that is not over.
    pub async fn group_in_use(&self, name: &str) -> Result<Option<String>, sqlx::Error> {
        on_db!(&self.db, pool => {
            let firmware: Vec<(i64, String, String)> =
                sqlx::query_as("SELECT id, version, target_groups FROM firmware WHERE target_groups <> '[]'")
                    .fetch_all(pool)
                    .await?;
            let targets = |json: &str| serde_json::from_str::<Vec<String>>(json).unwrap_or_default();
            if let Some((id, version, _)) = firmware
                .iter()
                .find(|(_, _, json)| targets(json).iter().any(|g| g == name))
            {
                return Ok(Some(format!("firmware {id} ({version})")));
            }
            let rollouts: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, target_groups FROM rollouts WHERE target_groups <> '[]' AND state NOT IN ('aborted', 'completed')",
            )
            .fetch_all(pool)
            .await?;
            Ok(rollouts
                .iter()
                .find(|(_, json)| targets(json).iter().any(|g| g == name))
                .map(|(id, _)| format!("rollout {id}")))
        })
    }

    /// Adds devices to a group; returns how many were not members yet.
    pub async fn add_members(&self, name: &str, members: Members) -> Result<Option<i64>, sqlx::Error> {
        self.change_members(name, members, true).await
    }

    /// Removes devices from a group; returns how many were members.
    pub async fn remove_members(&self, name: &str, members: Members) -> Result<Option<i64>, sqlx::Error> {
        self.change_members(name, members, false).await
    }

    async fn change_members(&self, name: &str, members: Members, add: bool) -> Result<Option<i64>, sqlx::Error> {
        let name = name.to_owned();
        self.write_firmware(move |db| async move { on_db!(&db, pool => {
            let mut tx = pool.begin().await?;
            let Some(group_id) = sqlx::query_scalar::<_, i64>("SELECT id FROM device_groups WHERE name = $1")
                .bind(&name)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(None);
            };
            let now = Utc::now();
            let mut changed = 0;
            match members {
                Members::Ids(ids) => {
                    for device_id in ids {
                        let sql = if add {
                            "INSERT INTO device_group_members (group_id, device_id, added_at) VALUES ($1, $2, $3) \
                             ON CONFLICT DO NOTHING"
                        } else {
                            "DELETE FROM device_group_members WHERE group_id = $1 AND device_id = $2 AND $3 IS NOT NULL"
                        };
                        changed += sqlx::query(sql)
                            .bind(group_id)
                            .bind(device_id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                    }
                }
                Members::Matching(filter) => {
                    let mut query = QueryBuilder::<DB>::new("");
                    if add {
                        query
                            .push("INSERT INTO device_group_members (group_id, device_id, added_at) SELECT ")
                            .push_bind(group_id)
                            .push(", device_id, ")
                            .push_bind(now)
                            .push(" FROM devices");
                        filter.push_where(&mut query);
                        query.push(" ON CONFLICT DO NOTHING");
                    } else {
                        query
                            .push("DELETE FROM device_group_members WHERE group_id = ")
                            .push_bind(group_id)
                            .push(" AND device_id IN (SELECT device_id FROM devices");
                        filter.push_where(&mut query);
                        query.push(")");
                    }
                    changed = query.build().execute(&mut *tx).await?.rows_affected();
                }
            }
            sqlx::query("UPDATE device_groups SET updated_at = $2 WHERE id = $1")
                .bind(group_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(changed as i64))
        }) })
        .await
    }

    /// The names of the groups a device is in.
    pub async fn groups_of(&self, device_id: &str) -> Result<Vec<String>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT g.name FROM device_groups g JOIN device_group_members m ON m.group_id = g.id \
                 WHERE m.device_id = $1 ORDER BY g.name",
            )
            .bind(device_id)
            .fetch_all(pool)
            .await
        })
    }

    /// Every group's name and id.
    pub async fn group_ids(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_as("SELECT name, id FROM device_groups")
                .fetch_all(pool)
                .await
        })
    }

    /// Every membership: device id and group id.
    pub async fn memberships(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        on_db!(&self.db, pool => {
            sqlx::query_as("SELECT device_id, group_id FROM device_group_members")
                .fetch_all(pool)
                .await
        })
    }
}
