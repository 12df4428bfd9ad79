//! `otactl device token`: mints a device JWT through the server.

use serde_json::json;

use super::{Ctx, check_device_type};
use crate::cli::TokenArgs;
use crate::failure::{Failure, Result};
use crate::output::print_json;

/// Prints the token alone on stdout (so `TOKEN=$(otactl device token …)`
/// works) and what it is for on stderr; `--json` prints the API's answer.
pub fn token(ctx: &Ctx, args: TokenArgs) -> Result<()> {
    ota_core::DeviceId::parse(&args.device_id).map_err(|e| Failure::usage(format!("DEVICE_ID: {e}")))?;
    check_device_type(&args.device_type)?;
    if matches!(args.device_id.as_str(), "." | "..") {
        // URL parsers (WHATWG) resolve `.`/`..` segments, even percent-encoded.
        return Err(Failure::usage(format!(
            "DEVICE_ID `{}` cannot be named in a URL path",
            args.device_id
        )));
    }
    let path = ota_core::wire::device_token_path(&args.device_id);
    let body = json!({"device_type": args.device_type, "ttl_seconds": args.ttl.as_secs()});
    let answer = ctx.api()?.post(&path, &body)?;
    if ctx.json() {
        print_json(&answer);
        return Ok(());
    }
    let token = answer["token"]
        .as_str()
        .ok_or_else(|| Failure::failed("the server's answer has no token"))?;
    println!("{token}");
    eprintln!(
        "Token for device {} ({}), {}, valid until {}. It is shown once: store it in the device's provisioning data.",
        args.device_id,
        args.device_type,
        answer["algorithm"].as_str().unwrap_or("JWT"),
        answer["expires_at"].as_str().unwrap_or("?"),
    );
    Ok(())
}
