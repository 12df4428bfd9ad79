//! Black-box tests of `ota-server` over real HTTP: each test starts its own
//! server on a random loopback port with its own temporary data dir (SQLite
//! file and firmware folder).

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
mod status;
mod upload;
