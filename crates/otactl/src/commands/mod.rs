//! One module per noun; each command calls the API and prints a table or,
//! with `--json`, the API's answer.

mod audit;
mod device;
mod device_type;
mod firmware;
mod group;
mod image;
mod login;
mod logs;
mod publish;
mod rollout;
mod status;

use std::path::PathBuf;

use clap::CommandFactory;
use url::Url;

use crate::api::Api;
use crate::cli::{
    Cli, Command, DeviceCommand, DeviceTypeCommand, FirmwareCommand, Global, GroupCommand, ImageCommand, RolloutCommand,
};
use crate::config::{self, AdminToken, ConfigFile};
use crate::failure::{Failure, Result};

pub fn dispatch(cli: Cli) -> Result<()> {
    let ctx = Ctx { global: cli.global };
    match cli.command {
        Command::Firmware(FirmwareCommand::Upload(args)) | Command::Upload(args) => publish::upload(&ctx, args),
        Command::Firmware(FirmwareCommand::Register(args)) | Command::Register(args) => publish::register(&ctx, args),
        Command::Firmware(FirmwareCommand::List(args)) | Command::List(args) => firmware::list(&ctx, args),
        Command::Firmware(FirmwareCommand::Show(args)) => firmware::show(&ctx, args.id),
        Command::Firmware(FirmwareCommand::Promote(args)) => firmware::promote(&ctx, args.id),
        Command::Firmware(FirmwareCommand::Set(args)) => firmware::set(&ctx, args),
        Command::Firmware(FirmwareCommand::Deactivate(args)) => firmware::deactivate(&ctx, args.id),
        Command::Firmware(FirmwareCommand::Activate(args)) => firmware::activate(&ctx, args.id),
        Command::Firmware(FirmwareCommand::Recall(args)) => firmware::recall(&ctx, args),
        Command::Logs(args) => logs::logs(&ctx, args),
        Command::DeviceType(DeviceTypeCommand::Create(args)) => device_type::create(&ctx, args),
        Command::DeviceType(DeviceTypeCommand::List(args)) => device_type::list(&ctx, args),
        Command::DeviceType(DeviceTypeCommand::Show(args)) => device_type::show(&ctx, &args.name),
        Command::DeviceType(DeviceTypeCommand::Set(args)) => device_type::set(&ctx, args),
        Command::Device(DeviceCommand::List(args)) => device::list(&ctx, args),
        Command::Device(DeviceCommand::Show(args)) => device::show(&ctx, &args.device_id),
        Command::Device(DeviceCommand::Pin(args)) => device::pin(&ctx, args),
        Command::Device(DeviceCommand::Unpin(args)) => device::unpin(&ctx, &args.device_id),
        Command::Device(DeviceCommand::Summary(args)) => device::summary(&ctx, args),
        Command::Device(DeviceCommand::Token(args)) => device::token(&ctx, args),
        Command::Groups(GroupCommand::Create(args)) => group::create(&ctx, args),
        Command::Groups(GroupCommand::List(args)) => group::list(&ctx, args),
        Command::Groups(GroupCommand::Show(args)) => group::show(&ctx, &args.name),
        Command::Groups(GroupCommand::Set(args)) => group::set(&ctx, args),
        Command::Groups(GroupCommand::Delete(args)) => group::delete(&ctx, &args.name),
        Command::Groups(GroupCommand::Members(args)) => group::members(&ctx, args),
        Command::Groups(GroupCommand::Add(args)) => group::change_members(&ctx, args, group::Change::Add),
        Command::Groups(GroupCommand::Remove(args)) => group::change_members(&ctx, args, group::Change::Remove),
        Command::Rollout(RolloutCommand::Create(args)) => rollout::create(&ctx, args),
        Command::Rollout(RolloutCommand::List(args)) => rollout::list(&ctx, args),
        Command::Rollout(RolloutCommand::Status(args)) => rollout::status(&ctx, args),
        Command::Rollout(RolloutCommand::Pause(args)) => rollout::act(&ctx, args, rollout::Action::Pause),
        Command::Rollout(RolloutCommand::Resume(args)) => rollout::act(&ctx, args, rollout::Action::Resume),
        Command::Rollout(RolloutCommand::Abort(args)) => rollout::act(&ctx, args, rollout::Action::Abort),
        Command::Rollout(RolloutCommand::Advance(args)) => rollout::act(&ctx, args, rollout::Action::Advance),
        Command::Audit(args) => audit::audit(&ctx, args),
        Command::Image(ImageCommand::Inspect(args)) => image::inspect(&ctx, args),
        Command::Status => status::status(&ctx),
        Command::Login(args) => login::login(&ctx, args),
        Command::Logout => login::logout(&ctx),
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "otactl", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The global options, and what they resolve to.
pub struct Ctx {
    global: Global,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.global.json
    }

    pub fn config_path(&self) -> Option<PathBuf> {
        self.global.config.clone().or_else(config::default_path)
    }

    pub fn config_file(&self) -> Result<ConfigFile> {
        match self.config_path() {
            Some(path) => ConfigFile::load(&path),
            None => Ok(ConfigFile::default()),
        }
    }

    /// `--server`, `OTA_SERVER`, the config file, then the default.
    pub fn server(&self, config: &ConfigFile) -> Result<Url> {
        let text = self
            .global
            .server
            .clone()
            .or_else(|| config.server.clone())
            .unwrap_or_else(|| config::DEFAULT_SERVER.to_owned());
        config::parse_server(&text)
    }

    /// `--admin-token`, `OTA_ADMIN_TOKEN` (an empty value counts as unset),
    /// then the config file's token, but only for the server it was saved
    /// for: a token must never be sent to another server. `Err` says why
    /// there is no token; only admin requests need one.
    pub fn token(&self, config: &ConfigFile, server: &Url) -> Result<AdminToken, String> {
        if let Some(text) = self.explicit_token() {
            return AdminToken::new(text).map_err(|failure| failure.message().to_owned());
        }
        let Some(saved) = &config.admin_token else {
            return Err(NO_TOKEN.to_owned());
        };
        let saved_for = config::parse_server(config.server.as_deref().unwrap_or(config::DEFAULT_SERVER))
            .map_err(|failure| failure.message().to_owned())?;
        if config::same_server(&saved_for, server) {
            Ok(saved.clone())
        } else {
            Err(format!(
                "the saved admin token is for {}, not {}: pass --admin-token or OTA_ADMIN_TOKEN, \
                 or run `otactl login --server {}`",
                config::display(&saved_for),
                config::display(server),
                config::display(server)
            ))
        }
    }

    /// A client for the resolved server and token.
    pub fn api(&self) -> Result<Api> {
        let config = self.config_file()?;
        let server = self.server(&config)?;
        let token = self.token(&config, &server);
        self.api_for(server, token)
    }

    pub fn api_for(&self, server: Url, token: std::result::Result<AdminToken, String>) -> Result<Api> {
        Api::new(server, token, self.global.timeout, self.global.ca_cert.as_deref())
    }

    /// The non-empty text given to `--admin-token` or `OTA_ADMIN_TOKEN`.
    pub fn explicit_token(&self) -> Option<&str> {
        self.global
            .admin_token
            .as_ref()
            .map(|token| token.0.as_str())
            .filter(|text| !text.trim().is_empty())
    }

    /// Whether the explicit token came from OTA_ADMIN_TOKEN.
    pub fn token_from_env(&self) -> bool {
        self.global.admin_token_from_env
    }

    pub fn explicit_server(&self) -> Option<&str> {
        self.global.server.as_deref()
    }
}

const NO_TOKEN: &str = "no admin token: pass --admin-token, set OTA_ADMIN_TOKEN, or run `otactl login` \
    (a server started with `ota-server serve` keeps it in <data dir>/secrets/admin_token)";

/// Release notes from `--notes` or `--notes-file` (`-` reads stdin).
pub fn read_notes(notes: &crate::cli::Notes) -> Result<Option<String>> {
    if let Some(text) = &notes.notes {
        return Ok(Some(text.clone()));
    }
    let Some(path) = &notes.notes_file else {
        return Ok(None);
    };
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Failure::usage(format!("cannot read the notes from stdin: {e}")))?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("cannot read the notes file {}: {e}", path.display())))?
    };
    Ok(Some(text.trim_end().to_owned()))
}

/// A version argument, checked here so a typo is a usage error before
/// anything is sent.
pub fn check_version(flag: &str, text: &str) -> Result<()> {
    ota_core::Version::parse(text)
        .map(|_| ())
        .map_err(|e| Failure::usage(format!("{flag} `{text}`: {e}")))
}

pub fn check_device_type(text: &str) -> Result<()> {
    ota_core::DeviceType::parse(text)
        .map(|_| ())
        .map_err(|e| Failure::usage(format!("--device-type `{text}`: {e}")))
}

/// A request body from one of the API's request types.
pub fn body_of(request: &impl serde::Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(request).map_err(|e| Failure::failed(format!("cannot write the request: {e}")))
}

/// An answer read as one of the API's types, for commands that print more
/// than its fields; `--json` still prints the answer as it came.
pub fn decode<T: serde::de::DeserializeOwned>(answer: &serde_json::Value, what: &str) -> Result<T> {
    T::deserialize(answer).map_err(|e| {
        Failure::failed(format!(
            "the server's answer is not {what} ({e}): is otactl as new as the server?"
        ))
    })
}
