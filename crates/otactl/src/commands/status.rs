//! `otactl status`: is the server up, ready, and which version is it.

use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use crate::api::{read_json, transport};
use crate::failure::{Failure, Result};
use crate::output::{self, print_json};

/// Health and readiness need no token. Exit 1 when the server is up but
/// not ready, 3 when it cannot be reached.
pub fn status(ctx: &Ctx) -> Result<()> {
    let api = ctx.api()?;
    let health = api
        .public(Method::GET, "/healthz")
        .send()
        .map_err(transport)
        .and_then(read_json)?;
    let ready = api
        .public(Method::GET, "/readyz")
        .send()
        .map_err(transport)
        .and_then(read_json);
    let (ready_text, ready_json, not_ready) = match ready {
        Ok(answer) => (output::text(&answer["status"]), answer, None),
        Err(Failure::Refused(problem)) => (
            format!("not ready: {}", problem.detail),
            serde_json::to_value(&problem).unwrap_or(Value::Null),
            Some(Failure::Refused(problem)),
        ),
        Err(other) => return Err(other),
    };
    if ctx.json() {
        print_json(&json!({
            "server": api.base().as_str().trim_end_matches('/'),
            "version": health["version"],
            "healthz": health,
            "readyz": ready_json,
            "otactl_version": env!("CARGO_PKG_VERSION"),
        }));
    } else {
        print!(
            "{}",
            output::fields(&[
                ("server", api.base().as_str().trim_end_matches('/').to_owned()),
                ("health", output::text(&health["status"])),
                ("ready", ready_text),
                ("version", output::text(&health["version"])),
                ("otactl", env!("CARGO_PKG_VERSION").to_owned()),
            ])
        );
    }
    match not_ready {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}
