//! `otactl login` and `logout`: the config file's server and admin token.

use std::io::IsTerminal;

use super::Ctx;
use crate::cli::LoginArgs;
use crate::config::{self, AdminToken, ConfigFile};
use crate::failure::{Failure, Result};

/// Checks the token against the server (unless `--no-verify`), then saves
/// both in the config file with mode 0600. The token comes from
/// `--token-file`, `--admin-token`/`OTA_ADMIN_TOKEN`, stdin when it is not
/// a terminal, or a prompt that does not echo.
pub fn login(ctx: &Ctx, args: LoginArgs) -> Result<()> {
    let path = ctx.config_path().ok_or_else(|| {
        Failure::usage("there is no config folder: set XDG_CONFIG_HOME or HOME, or pass --config FILE")
    })?;
    let mut config = ConfigFile::load(&path)?;
    let server_text = ctx
        .explicit_server()
        .map(str::to_owned)
        .or_else(|| config.server.clone())
        .unwrap_or_else(|| config::DEFAULT_SERVER.to_owned());
    let server = config::parse_server(&server_text)?;
    let token = match (&args.token_file, ctx.explicit_token()) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Failure::usage(format!("cannot read the token file {}: {e}", file.display())))?;
            AdminToken::new(&text)?
        }
        (None, Some(text)) => AdminToken::new(text)?,
        (None, None) if std::io::stdin().is_terminal() => {
            let text = rpassword::prompt_password(format!("Admin token for {server}: "))
                .map_err(|e| Failure::usage(format!("cannot read the token: {e}")))?;
            AdminToken::new(&text)?
        }
        (None, None) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| Failure::usage(format!("cannot read the token from stdin: {e}")))?;
            AdminToken::new(&line)?
        }
    };
    if !args.no_verify {
        let api = ctx.api_for(server.clone(), Some(token.clone()))?;
        api.get("/api/ota/admin/firmware", &[("limit", "1".into())])?;
    }
    config.server = Some(server_text.trim().to_owned());
    config.admin_token = Some(token);
    config.save(&path)?;
    println!(
        "Logged in to {}{}; saved in {} (mode 0600).",
        server_text.trim(),
        if args.no_verify { " (not verified)" } else { "" },
        path.display()
    );
    Ok(())
}

/// Removes the token from the config file; the server URL stays.
pub fn logout(ctx: &Ctx) -> Result<()> {
    let Some(path) = ctx.config_path() else {
        println!("There is no config file.");
        return Ok(());
    };
    let mut config = ConfigFile::load(&path)?;
    if config.admin_token.take().is_none() {
        println!("No admin token is saved in {}.", path.display());
        return Ok(());
    }
    config.save(&path)?;
    println!("Removed the admin token from {}.", path.display());
    Ok(())
}
