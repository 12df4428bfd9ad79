-- Firmware catalogue, update attempts and device inventory.

CREATE TABLE firmware (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    device_type        TEXT    NOT NULL,
    version            TEXT    NOT NULL,
    build_number       INTEGER,
    filename           TEXT    NOT NULL,
    binary_path        TEXT    NOT NULL UNIQUE,
    file_size          INTEGER NOT NULL CHECK (file_size > 0),
    file_hash          TEXT    NOT NULL,
    release_notes      TEXT,
    min_version        TEXT,
    is_stable          BOOLEAN NOT NULL DEFAULT FALSE,
    is_active          BOOLEAN NOT NULL DEFAULT TRUE,
    is_mandatory       BOOLEAN NOT NULL DEFAULT FALSE,
    rollout_percentage INTEGER NOT NULL DEFAULT 100 CHECK (rollout_percentage BETWEEN 0 AND 100),
    download_count     INTEGER NOT NULL DEFAULT 0,
    created_at         TEXT    NOT NULL,
    updated_at         TEXT    NOT NULL,
    UNIQUE (device_type, version)
);

CREATE INDEX firmware_by_type ON firmware (device_type, is_active);

CREATE TABLE device_ota_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id     TEXT    NOT NULL,
    firmware_id   INTEGER NOT NULL REFERENCES firmware (id),
    from_version  TEXT,
    to_version    TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'downloading', 'installing', 'success', 'failed')),
    progress      INTEGER CHECK (progress BETWEEN 0 AND 100),
    error_message TEXT,
    started_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    completed_at  TEXT
);

-- One open attempt per device and firmware, whatever races.
CREATE UNIQUE INDEX device_ota_log_one_open
    ON device_ota_log (device_id, firmware_id)
    WHERE status IN ('pending', 'downloading', 'installing');
CREATE INDEX device_ota_log_by_device ON device_ota_log (device_id, id);
CREATE INDEX device_ota_log_by_firmware ON device_ota_log (firmware_id, status);
CREATE INDEX device_ota_log_by_start ON device_ota_log (started_at);

-- Which device has downloaded which firmware: download_count counts each once.
CREATE TABLE firmware_download (
    firmware_id INTEGER NOT NULL REFERENCES firmware (id),
    device_id   TEXT    NOT NULL,
    first_at    TEXT    NOT NULL,
    PRIMARY KEY (firmware_id, device_id)
);

CREATE TABLE devices (
    device_id       TEXT PRIMARY KEY,
    device_type     TEXT NOT NULL,
    current_version TEXT,
    build_number    INTEGER,
    channel         TEXT NOT NULL DEFAULT 'stable',
    secure_version  INTEGER,
    last_status     TEXT,
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL
);
CREATE INDEX devices_by_type ON devices (device_type);
