-- Fleet control (issue 7): groups, pins, rollouts, recalls, failure reasons
-- and the audit log.

-- Named static groups of devices. A member need not have checked in yet.
CREATE TABLE device_groups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);

CREATE TABLE device_group_members (
    group_id  INTEGER NOT NULL REFERENCES device_groups (id) ON DELETE CASCADE,
    device_id TEXT    NOT NULL,
    added_at  TEXT    NOT NULL,
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX device_group_members_by_device ON device_group_members (device_id);

-- A firmware for some groups only: a JSON array of group names ('[]': all).
ALTER TABLE firmware ADD COLUMN target_groups TEXT NOT NULL DEFAULT '[]';
-- A recalled firmware is never offered; its devices go back.
ALTER TABLE firmware ADD COLUMN recalled_at TEXT;
ALTER TABLE firmware ADD COLUMN recall_reason TEXT;

CREATE TABLE rollouts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT,
    device_type         TEXT    NOT NULL,
    firmware_id         INTEGER NOT NULL REFERENCES firmware (id),
    -- The B arm of an A/B rollout, and the share of the cohort it gets.
    variant_firmware_id INTEGER REFERENCES firmware (id),
    variant_percent     INTEGER NOT NULL DEFAULT 0 CHECK (variant_percent BETWEEN 0 AND 99),
    -- JSON array of group names ('[]': the whole device type).
    target_groups       TEXT    NOT NULL DEFAULT '[]',
    -- JSON array of cumulative percentages, rising to 100.
    stages              TEXT    NOT NULL,
    stage               INTEGER NOT NULL DEFAULT 0 CHECK (stage >= 0),
    state               TEXT    NOT NULL CHECK (state IN ('running', 'paused', 'halted', 'aborted', 'completed')),
    state_reason        TEXT,
    min_successes       INTEGER NOT NULL CHECK (min_successes >= 0),
    soak_seconds        INTEGER NOT NULL CHECK (soak_seconds >= 0),
    max_failure_rate    INTEGER NOT NULL CHECK (max_failure_rate BETWEEN 0 AND 100),
    min_finished        INTEGER NOT NULL CHECK (min_finished >= 0),
    stage_started_at    TEXT    NOT NULL,
    created_by          TEXT    NOT NULL,
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL,
    CHECK (variant_firmware_id IS NULL OR (variant_firmware_id <> firmware_id AND variant_percent > 0))
);
CREATE INDEX rollouts_by_firmware ON rollouts (firmware_id);

-- The firmware of every rollout that is not over: one such rollout per
-- firmware, whichever arm it is in, whatever races.
CREATE TABLE rollout_firmware (
    firmware_id INTEGER PRIMARY KEY REFERENCES firmware (id),
    rollout_id  INTEGER NOT NULL REFERENCES rollouts (id)
);

ALTER TABLE devices ADD COLUMN last_error TEXT;
ALTER TABLE devices ADD COLUMN pinned_firmware_id INTEGER REFERENCES firmware (id);
CREATE INDEX devices_pinned ON devices (pinned_firmware_id) WHERE pinned_firmware_id IS NOT NULL;
CREATE INDEX devices_by_version ON devices (device_type, current_version);

-- Why an attempt failed, read from the device's error message; and the
-- rollout, stage and arm that offered it.
ALTER TABLE device_ota_log ADD COLUMN failure_reason TEXT;
ALTER TABLE device_ota_log ADD COLUMN rollout_id INTEGER REFERENCES rollouts (id);
ALTER TABLE device_ota_log ADD COLUMN rollout_stage INTEGER;
ALTER TABLE device_ota_log ADD COLUMN rollout_arm TEXT CHECK (rollout_arm IN ('a', 'b'));
CREATE INDEX device_ota_log_by_rollout ON device_ota_log (rollout_id, device_id, id) WHERE rollout_id IS NOT NULL;
CREATE INDEX device_ota_log_rollbacks ON device_ota_log (device_id) WHERE failure_reason = 'rollback';

UPDATE device_ota_log
SET failure_reason = CASE WHEN lower(error_message) LIKE 'rollback%' THEN 'rollback' ELSE 'other' END
WHERE status = 'failed';

-- Every admin change: who (the admin token's name), what, when, and the
-- record before and after (JSON).
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target_type TEXT    NOT NULL,
    target_id   TEXT,
    before      TEXT,
    after       TEXT
);
CREATE INDEX audit_log_by_at ON audit_log (at);
CREATE INDEX audit_log_by_target ON audit_log (target_type, target_id);
