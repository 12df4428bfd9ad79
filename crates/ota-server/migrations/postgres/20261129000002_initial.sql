-- The whole schema for PostgreSQL, equal to migrations/sqlite/* applied in
-- order: integers are BIGINT (every Rust field is i64), timestamps TIMESTAMPTZ,
-- JSON stays TEXT (parsed in Rust, as on SQLite).

CREATE TABLE firmware (
    id                 BIGSERIAL PRIMARY KEY,
    device_type        TEXT    NOT NULL,
    version            TEXT    NOT NULL,
    build_number       BIGINT,
    filename           TEXT    NOT NULL,
    binary_path        TEXT    NOT NULL UNIQUE,
    file_size          BIGINT  NOT NULL CHECK (file_size > 0),
    file_hash          TEXT    NOT NULL,
    release_notes      TEXT,
    min_version        TEXT,
    is_stable          BOOLEAN NOT NULL DEFAULT FALSE,
    is_active          BOOLEAN NOT NULL DEFAULT TRUE,
    is_mandatory       BOOLEAN NOT NULL DEFAULT FALSE,
    rollout_percentage BIGINT  NOT NULL DEFAULT 100 CHECK (rollout_percentage BETWEEN 0 AND 100),
    download_count     BIGINT  NOT NULL DEFAULT 0,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    image_format       TEXT    NOT NULL DEFAULT 'raw' CHECK (image_format IN ('esp-app', 'raw')),
    chip               TEXT,
    project_name       TEXT,
    idf_version        TEXT,
    secure_version     BIGINT,
    validation_hash    TEXT,
    image_info         TEXT,
    version_overridden BOOLEAN NOT NULL DEFAULT FALSE,
    app_version        TEXT,
    target_groups      TEXT    NOT NULL DEFAULT '[]',
    recalled_at        TIMESTAMPTZ,
    recall_reason      TEXT,
    UNIQUE (device_type, version)
);
CREATE INDEX firmware_by_type ON firmware (device_type, is_active);

CREATE TABLE device_types (
    name              TEXT    PRIMARY KEY,
    image_format      TEXT    NOT NULL CHECK (image_format IN ('esp-app', 'raw')),
    chip              TEXT,
    project_name      TEXT,
    min_chip_revision BIGINT  NOT NULL DEFAULT 0 CHECK (min_chip_revision BETWEEN 0 AND 65535),
    max_chip_revision BIGINT,
    description       TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    CHECK (max_chip_revision BETWEEN min_chip_revision AND 65535),
    CHECK (image_format <> 'esp-app' OR chip IS NOT NULL)
);

CREATE TABLE device_groups (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE TABLE device_group_members (
    group_id  BIGINT NOT NULL REFERENCES device_groups (id) ON DELETE CASCADE,
    device_id TEXT   NOT NULL,
    added_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX device_group_members_by_device ON device_group_members (device_id);

CREATE TABLE rollouts (
    id                  BIGSERIAL PRIMARY KEY,
    name                TEXT,
    device_type         TEXT    NOT NULL,
    firmware_id         BIGINT  NOT NULL REFERENCES firmware (id),
    variant_firmware_id BIGINT  REFERENCES firmware (id),
    variant_percent     BIGINT  NOT NULL DEFAULT 0 CHECK (variant_percent BETWEEN 0 AND 99),
    target_groups       TEXT    NOT NULL DEFAULT '[]',
    stages              TEXT    NOT NULL,
    stage               BIGINT  NOT NULL DEFAULT 0 CHECK (stage >= 0),
    state               TEXT    NOT NULL CHECK (state IN ('running', 'paused', 'halted', 'aborted', 'completed')),
    state_reason        TEXT,
    min_successes       BIGINT  NOT NULL CHECK (min_successes >= 0),
    soak_seconds        BIGINT  NOT NULL CHECK (soak_seconds >= 0),
    max_failure_rate    BIGINT  NOT NULL CHECK (max_failure_rate BETWEEN 0 AND 100),
    min_finished        BIGINT  NOT NULL CHECK (min_finished >= 0),
    stage_started_at    TIMESTAMPTZ NOT NULL,
    created_by          TEXT    NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    CHECK (variant_firmware_id IS NULL OR (variant_firmware_id <> firmware_id AND variant_percent > 0))
);
CREATE INDEX rollouts_by_firmware ON rollouts (firmware_id);

CREATE TABLE rollout_firmware (
    firmware_id BIGINT PRIMARY KEY REFERENCES firmware (id),
    rollout_id  BIGINT NOT NULL REFERENCES rollouts (id)
);

CREATE TABLE device_ota_log (
    id             BIGSERIAL PRIMARY KEY,
    device_id      TEXT    NOT NULL,
    firmware_id    BIGINT  NOT NULL REFERENCES firmware (id),
    from_version   TEXT,
    to_version     TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('pending', 'downloading', 'installing', 'success', 'failed')),
    progress       BIGINT  CHECK (progress BETWEEN 0 AND 100),
    error_message  TEXT,
    started_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    completed_at   TIMESTAMPTZ,
    failure_reason TEXT,
    rollout_id     BIGINT REFERENCES rollouts (id),
    rollout_stage  BIGINT,
    rollout_arm    TEXT CHECK (rollout_arm IN ('a', 'b'))
);
CREATE UNIQUE INDEX device_ota_log_one_open ON device_ota_log (device_id, firmware_id)
    WHERE status IN ('pending', 'downloading', 'installing');
CREATE INDEX device_ota_log_by_device ON device_ota_log (device_id, id);
CREATE INDEX device_ota_log_by_firmware ON device_ota_log (firmware_id, status);
CREATE INDEX device_ota_log_by_start ON device_ota_log (started_at);
CREATE INDEX device_ota_log_by_rollout ON device_ota_log (rollout_id, device_id, id) WHERE rollout_id IS NOT NULL;
CREATE INDEX device_ota_log_rollbacks ON device_ota_log (device_id) WHERE failure_reason = 'rollback';

CREATE TABLE firmware_download (
    firmware_id BIGINT NOT NULL REFERENCES firmware (id),
    device_id   TEXT   NOT NULL,
    first_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (firmware_id, device_id)
);

CREATE TABLE devices (
    device_id          TEXT PRIMARY KEY,
    device_type        TEXT NOT NULL,
    current_version    TEXT,
    build_number       BIGINT,
    channel            TEXT NOT NULL DEFAULT 'stable',
    secure_version     BIGINT,
    last_status        TEXT,
    first_seen         TIMESTAMPTZ NOT NULL,
    last_seen          TIMESTAMPTZ NOT NULL,
    last_error         TEXT,
    pinned_firmware_id BIGINT REFERENCES firmware (id)
);
CREATE INDEX devices_by_type ON devices (device_type);
CREATE INDEX devices_pinned ON devices (pinned_firmware_id) WHERE pinned_firmware_id IS NOT NULL;
CREATE INDEX devices_by_version ON devices (device_type, current_version);

CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT,
    before      TEXT,
    after       TEXT
);
CREATE INDEX audit_log_by_at ON audit_log (at);
CREATE INDEX audit_log_by_target ON audit_log (target_type, target_id);
