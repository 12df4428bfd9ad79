-- Device types become first-class (issue 5): what each type's firmware
-- files are, and for ESP-IDF app images, which chip and chip revisions its
-- units have. Firmware records keep what was parsed from their image.

CREATE TABLE device_types (
    name              TEXT    PRIMARY KEY,
    image_format      TEXT    NOT NULL CHECK (image_format IN ('esp-app', 'raw')),
    -- esptool's chip name (esp32p4); documentation only for raw.
    chip              TEXT,
    project_name      TEXT,
    -- major * 100 + minor, as in the image header: v1.0 is 100.
    min_chip_revision INTEGER NOT NULL DEFAULT 0 CHECK (min_chip_revision BETWEEN 0 AND 65535),
    -- NULL: no upper bound.
    max_chip_revision INTEGER CHECK (max_chip_revision BETWEEN min_chip_revision AND 65535),
    description       TEXT,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    CHECK (image_format <> 'esp-app' OR chip IS NOT NULL)
);

-- Every device type already in use becomes a raw one, so that existing
-- deployments keep uploading and serving exactly as before. It was created
-- when it was first used.
INSERT INTO device_types (name, image_format, created_at, updated_at)
SELECT device_type, 'raw', MIN(first_used), MIN(first_used)
FROM (
    SELECT device_type, created_at AS first_used FROM firmware
    UNION ALL
    SELECT device_type, first_seen AS first_used FROM devices
)
GROUP BY device_type;

-- What was parsed from an ESP-IDF app image; NULL (and 'raw') for files
-- stored as they came. image_info is the whole parse as JSON; the other
-- columns repeat the parts that are queried.
ALTER TABLE firmware ADD COLUMN image_format TEXT NOT NULL DEFAULT 'raw' CHECK (image_format IN ('esp-app', 'raw'));
ALTER TABLE firmware ADD COLUMN chip TEXT;
ALTER TABLE firmware ADD COLUMN project_name TEXT;
ALTER TABLE firmware ADD COLUMN idf_version TEXT;
ALTER TABLE firmware ADD COLUMN secure_version INTEGER;
ALTER TABLE firmware ADD COLUMN validation_hash TEXT;
ALTER TABLE firmware ADD COLUMN image_info TEXT;
-- Whether the record's version was given by the uploader rather than
-- taken from the image's app descriptor (app_version, as found).
ALTER TABLE firmware ADD COLUMN version_overridden BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE firmware ADD COLUMN app_version TEXT;
