//! The OTA update server: the HTTP contract of `shared/API.md` over a
//! database and a firmware folder. `main.rs` only parses the command line
//! and calls [`app::Application`].

pub mod app;
pub mod auth;
pub mod blobs;
pub mod catalogue;
pub mod config;
pub mod counted;
pub mod hot;
pub mod http;
pub mod inventory;
pub mod net;
pub mod ratelimit;
pub mod retention;
pub mod rollouts;
pub mod secrets;
pub mod serve;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tokens;
