use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ota_server::app::{Application, shutdown_signal};
use ota_server::config::Settings;
use ota_server::telemetry;

/// OTA firmware update server for ESP32 fleets.
///
/// Settings come from built-in defaults, then the TOML file given with
/// --config, then OTA_* environment variables (see docs/server.md).
#[derive(Parser)]
#[command(name = "ota-server", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (by default on 0.0.0.0:8080 with SQLite and ./data).
    Serve {
        /// A TOML file of settings (keys as in docs/server.md, e.g. listen = "127.0.0.1:8080").
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the OpenAPI document and exit.
    Openapi,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { config } => {
            let settings = Settings::from_env(config.as_deref()).context("loading settings")?;
            let _log_guard = telemetry::init_logging(&settings);
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Openapi => {
            println!("{}", ota_server::http::openapi().to_pretty_json()?);
            Ok(())
        }
    }
}
