use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ota_core::esp::{Chip, ChipRevision, SignatureScheme};
use ota_sim::bench::{self, BenchOptions, Scenario};
use ota_sim::fleet::{self, DownloadMode, FleetConfig};
use ota_sim::http::Origin;
use ota_sim::make_image::{self, ImageOptions, parse_chip, parse_desc_text};
use ota_sim::token::{self, TokenMinter, Tokens};
use ota_sim::units::{parse_bytes, parse_duration, parse_percent};

/// A fleet of virtual ESP32s for the OTA server: demos, load tests and
/// benchmarks. It speaks only the server's public HTTP API.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a fleet of devices against a server until each has nothing left
    /// to do (or for --duration).
    ///
    /// Example: watch 1,000 devices update from a local server:
    ///
    ///   ota-sim run --server http://127.0.0.1:8080 --devices 1000
    ///       --jwt-secret-file data/secrets/device_jwt_secret
    ///       --drop 2 --reboot 5 --install-fail 1 --rollback 1
    Run(Box<RunArgs>),
    /// Run the benchmark scenarios, each next to a reference measured in the
    /// same run, and print (or write) a Markdown table.
    ///
    /// Example: all scenarios, table written to bench.md:
    ///
    ///   ota-sim bench --markdown bench.md
    Bench(BenchArgs),
    /// Write a valid ESP-IDF app image, to try esp-app device types
    ///
    /// No ESP-IDF needed. Prints the file's size, SHA-256 and validation hash.
    ///
    /// Example: an image for the M5Stack Tab5's ESP32-P4 with anti-rollback
    /// counter 2, then its upload (the server reads the version in the image):
    ///
    ///   ota-sim make-image -o app.bin --chip esp32p4 --version 1.2.0 \
    ///       --project scales_bridge --secure-version 2 \
    ///       --min-chip-revision v1.0 --max-chip-revision v1.99
    ///   otactl firmware upload app.bin -t scales_bridge_tab5 --register --stable
    // `--version` is the image's version here, not the simulator's.
    #[command(disable_version_flag = true, verbatim_doc_comment)]
    MakeImage(MakeImageArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Base URL of the OTA server.
    #[arg(long, env = "OTA_SERVER", default_value = "http://127.0.0.1:8080")]
    server: url::Url,
    /// How many devices.
    #[arg(long, short = 'n', default_value_t = 100)]
    devices: usize,
    #[arg(long, default_value = "scales_bridge_tab5")]
    device_type: String,
    /// The version every device runs at the start.
    #[arg(long, default_value = "1.0.0")]
    current_version: String,
    /// The channel devices ask for (the server's default is `stable`).
    #[arg(long)]
    channel: Option<String>,
    /// Device ids are this prefix and a six-digit number.
    #[arg(long, default_value = "sim-")]
    id_prefix: String,
    /// Number of the first device.
    #[arg(long, default_value_t = 1)]
    first_device: usize,
    /// The server's device JWT secret (HS256).
    #[arg(
        long,
        env = "OTA_DEVICE_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_secret_file"
    )]
    jwt_secret: Option<String>,
    /// A file holding the secret; the default is the server's generated one
    /// in ./data/secrets/device_jwt_secret.
    #[arg(long)]
    jwt_secret_file: Option<PathBuf>,
    /// Have the server mint each device's token with this admin token
    /// (POST /api/ota/admin/devices/{id}/token) instead of signing them
    /// with the secret: works with servers that use RS256, ES256 or EdDSA keys.
    #[arg(long, conflicts_with_all = ["jwt_secret", "jwt_secret_file", "admin_token_file"])]
    admin_token: Option<String>,
    /// A file holding the admin token, e.g. data/secrets/admin_token; as --admin-token.
    #[arg(long, conflicts_with_all = ["jwt_secret", "jwt_secret_file"])]
    admin_token_file: Option<PathBuf>,
    /// Time between checks; each device waits 0.5–1.5× this.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    check_interval: Duration,
    /// First checks are spread evenly over this window.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    start_spread: Duration,
    #[arg(long, value_enum, default_value_t = DownloadMode::Ranged)]
    mode: DownloadMode,
    /// Size of each Range piece in ranged mode (esp_https_ota's max_http_request_size).
    #[arg(long, default_value = "64KiB", value_parser = parse_bytes)]
    chunk_size: u64,
    /// What each device can receive per second, e.g. 20KiB (default: unlimited).
    #[arg(long, value_parser = parse_bytes)]
    link_speed: Option<u64>,
    /// Percent of download requests whose connection is cut mid-body.
    #[arg(long = "drop", default_value = "0", value_parser = parse_percent)]
    drop_chance: f64,
    /// Percent of devices that reboot once mid-download and resume.
    #[arg(long = "reboot", default_value = "0", value_parser = parse_percent)]
    reboot_chance: f64,
    /// Percent of devices whose install fails.
    #[arg(long, default_value = "0", value_parser = parse_percent)]
    install_fail: f64,
    /// Percent of devices whose new image rolls back after boot.
    #[arg(long, default_value = "0", value_parser = parse_percent)]
    rollback: f64,
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    boot_time: Duration,
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    install_time: Duration,
    /// Report download progress every this many percent (0: never).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    progress_step: u8,
    /// Give devices anti-rollback with this eFuse counter at the start: they
    /// report it in each check and raise it to each confirmed image's
    /// secure_version (default: no anti-rollback).
    #[arg(long)]
    secure_version: Option<u32>,
    /// Keep devices polling for this long instead of stopping each when it
    /// has nothing left to do.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Give up on a run that has not finished after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
    /// Attempts after the first for a failed request.
    #[arg(long, default_value_t = 8)]
    retries: u32,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Seed for the injected failures, for repeatable runs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No live view.
    #[arg(long)]
    quiet: bool,
    /// Print each device's unexpected error.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Scenarios to run (default: all).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Short runs with small fleets, to check that the scenarios work.
    #[arg(long)]
    quick: bool,
    /// Seconds each measurement runs.
    #[arg(long, value_parser = parse_duration)]
    measure: Option<Duration>,
    /// The ota-server binary (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The nginx binary used as the reference.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// Also write the Markdown table here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct MakeImageArgs {
    /// Where to write the image.
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// esptool's chip name.
    #[arg(long, default_value = "esp32p4", value_parser = parse_chip)]
    chip: Chip,
    /// esp_app_desc_t.version: what the server reads as the version.
    #[arg(long, default_value = "1.0.0", value_parser = parse_desc_text)]
    version: String,
    /// esp_app_desc_t.project_name.
    #[arg(long, default_value = "scales_bridge", value_parser = parse_desc_text)]
    project: String,
    /// esp_app_desc_t.secure_version: the anti-rollback counter it needs.
    #[arg(long, default_value_t = 0)]
    secure_version: u32,
    /// About this long (within 16 bytes; a signature sector comes on top).
    #[arg(long, default_value = "1500000", value_parser = parse_bytes)]
    size: u64,
    /// The oldest chip revision it boots on (default v0.0).
    #[arg(long, value_parser = ChipRevision::parse)]
    min_chip_revision: Option<ChipRevision>,
    /// The newest chip revision it boots on (default: no upper bound).
    #[arg(long, value_parser = ChipRevision::parse)]
    max_chip_revision: Option<ChipRevision>,
    /// Append a Secure Boot v2 signature sector (filler key and signature:
    /// well-formed, verifiable by no device).
    #[arg(long, value_enum)]
    signed: Option<Signing>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Signing {
    Rsa,
    Ecdsa,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Bench(args) => run_bench(args).await,
            Command::MakeImage(args) => write_image(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ota-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let admin_token = match (&args.admin_token, &args.admin_token_file) {
        (Some(token), _) => Some(token.trim().to_owned()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the admin token from {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let secret = match (&args.jwt_secret, &args.jwt_secret_file) {
        _ if admin_token.is_some() => String::new(),
        (Some(secret), _) => secret.clone(),
        (None, file) => {
            let path = file
                .clone()
                .unwrap_or_else(|| PathBuf::from("data/secrets/device_jwt_secret"));
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "reading the device JWT secret from {} (pass --jwt-secret or --jwt-secret-file)",
                        path.display()
                    )
                })?
                .trim()
                .to_owned()
        }
    };
    anyhow::ensure!(args.devices > 0, "--devices must be at least 1");
    anyhow::ensure!(args.chunk_size > 0, "--chunk-size must be at least 1 byte");
    bench::raise_open_files_limit();
    let origin = Origin::of(&args.server).await?;
    let until_done = args.duration.is_none();
    let config = FleetConfig {
        server: args.server,
        origin,
        devices: args.devices,
        id_prefix: args.id_prefix,
        first_index: args.first_device,
        device_type: args.device_type,
        current_version: args.current_version,
        channel: args.channel,
        check_interval: args.check_interval,
        start_spread: args.start_spread,
        mode: args.mode,
        chunk_size: args.chunk_size,
        link_speed: args.link_speed,
        drop_chance: args.drop_chance,
        reboot_chance: args.reboot_chance,
        install_fail: args.install_fail,
        rollback: args.rollback,
        boot_time: args.boot_time,
        install_time: args.install_time,
        progress_step: args.progress_step,
        secure_version: args.secure_version,
        until_done,
        max_duration: args.duration.unwrap_or(args.timeout),
        retries: args.retries,
        request_timeout: args.request_timeout,
        seed: args.seed,
        verbose: args.verbose,
    };
    const TOKEN_TTL_SECONDS: u64 = 7 * 24 * 3600;
    let tokens = match admin_token {
        Some(admin_token) => {
            let ids = (0..config.devices).map(|index| config.device_id(index));
            Tokens::Issued(
                token::issue_all(
                    &config.origin,
                    &admin_token,
                    ids,
                    &config.device_type,
                    TOKEN_TTL_SECONDS,
                )
                .await?,
            )
        }
        None => Tokens::Signed(TokenMinter::new(secret.as_bytes(), TOKEN_TTL_SECONDS as i64)),
    };
    let report = fleet::run(config, &tokens, !args.quiet && !args.json).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(if report.ok(until_done) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let server_bin = match args.server_bin {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("the simulator's folder")?
            .join("ota-server"),
    };
    let options = BenchOptions {
        quick: args.quick,
        measure: args.measure,
        server_bin,
        nginx: args.nginx,
    };
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios
    };
    let results = bench::run(&options, &scenarios).await?;
    let table = bench::markdown(&results);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{table}");
    }
    if let Some(path) = args.markdown {
        std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if results.iter().all(|r| r.passed != Some(false)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn write_image(args: MakeImageArgs) -> anyhow::Result<ExitCode> {
    let options = ImageOptions {
        chip: args.chip,
        version: args.version,
        project_name: args.project,
        secure_version: args.secure_version,
        approx_len: usize::try_from(args.size).context("--size is too large")?,
        min_chip_revision: args.min_chip_revision,
        max_chip_revision: args.max_chip_revision,
        signature: args.signed.map(|signing| match signing {
            Signing::Rsa => SignatureScheme::SecureBootV2Rsa,
            Signing::Ecdsa => SignatureScheme::SecureBootV2Ecdsa,
        }),
    };
    let made = make_image::make(&options)?;
    std::fs::write(&args.output, &made.bytes).with_context(|| format!("writing {}", args.output.display()))?;
    print!("{}", made.summary(&args.output));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
