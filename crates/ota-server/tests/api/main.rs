//! Black-box tests of `ota-server` over real HTTP: each test starts its own
//! server on a random loopback port with its own temporary data dir (SQLite
//! file and firmware folder), or, with `OTA_TEST_DATABASE_URL` and
//! `OTA_TEST_STORAGE_URL`, its own PostgreSQL schema and bucket prefix.

mod admin_firmware;
mod auth;
mod check;
mod device_types;
mod devices;
mod download;
mod esp_idf_client;
mod esp_images;
mod fleet;
mod helpers;
mod idle;
mod instances;
mod logs;
mod ops;
mod outage;
mod process;
mod retention;
mod s3;
mod status;
mod storage;
mod upload;
