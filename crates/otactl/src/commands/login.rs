//! `otactl login` and `logout`: the config file's server and admin token.

use std::io::IsTerminal;

use super::Ctx;
use crate::cli::LoginArgs;
use crate::config::{self, AdminToken, ConfigFile};
use crate::failure::{Failure, Result};
use crate::output::print_json;

/// Checks the token against the server (unless `--no-verify`), then saves
/// both in the config file with mode 0600.
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
    let token = login_token(ctx, &args, &server)?;
    if !args.no_verify {
        let api = ctx.api_for(server.clone(), Ok(token.clone()))?;
        api.get("/api/ota/admin/firmware", &[("limit", "1".into())])?;
    }
    config.server = Some(server_text.trim().to_owned());
    config.admin_token = Some(token);
    config.save(&path)?;
    if ctx.json() {
        print_json(&serde_json::json!({
            "server": server_text.trim(),
            "config_file": path,
            "verified": !args.no_verify,
        }));
        return Ok(());
    }
    println!(
        "Logged in to {}{}; saved in {} (mode 0600).",
        server_text.trim(),
        if args.no_verify { " (not verified)" } else { "" },
        path.display()
    );
    Ok(())
}

/// The token to log in with, from the first of: `--token-file`,
/// `--admin-token`, stdin when it is not a terminal (and not empty),
/// `OTA_ADMIN_TOKEN`, a prompt that does not echo.
fn login_token(ctx: &Ctx, args: &LoginArgs, server: &url::Url) -> Result<AdminToken> {
    if let Some(file) = &args.token_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Failure::usage(format!("cannot read the token file {}: {e}", file.display())))?;
        return AdminToken::new(&text);
    }
    let from_env = ctx.token_from_env();
    if let Some(text) = ctx.explicit_token().filter(|_| !from_env) {
        return AdminToken::new(text);
    }
    if std::io::stdin().is_terminal() {
        if let Some(text) = ctx.explicit_token() {
            return AdminToken::new(text);
        }
        let text = rpassword::prompt_password(format!("Admin token for {}: ", config::display(server)))
            .map_err(|e| Failure::usage(format!("cannot read the token: {e}")))?;
        return AdminToken::new(&text);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::usage(format!("cannot read the token from stdin: {e}")))?;
    match ctx.explicit_token() {
        Some(text) if line.trim().is_empty() => AdminToken::new(text),
        _ => AdminToken::new(&line)
            .map_err(|_| Failure::usage("no admin token on stdin (pipe it in, or use --token-file)")),
    }
}

/// Removes the token from the config file; the server URL stays.
pub fn logout(ctx: &Ctx) -> Result<()> {
    let Some(path) = ctx.config_path() else {
        return Err(Failure::usage(
            "there is no config folder: set XDG_CONFIG_HOME or HOME, or pass --config FILE",
        ));
    };
    let mut config = ConfigFile::load(&path)?;
    let removed = config.admin_token.take().is_some();
    if removed {
        config.save(&path)?;
    }
    if ctx.json() {
        print_json(&serde_json::json!({"config_file": path, "removed": removed}));
    } else if removed {
        println!("Removed the admin token from {}.", path.display());
    } else {
        println!("No admin token is saved in {}.", path.display());
    }
    Ok(())
}
