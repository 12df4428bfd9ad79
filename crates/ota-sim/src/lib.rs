//! `ota-sim`: a fleet of virtual ESP32s that speaks the OTA server's public
//! HTTP API, for demos, load tests and benchmarks.

pub mod bench;
pub mod device;
pub mod flash;
pub mod fleet;
pub mod http;
pub mod make_image;
pub mod stats;
pub mod token;
pub use ota_core::units;
