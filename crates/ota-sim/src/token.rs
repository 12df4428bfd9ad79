//! Device tokens: HS256 JWTs minted from the server's shared secret, with
//! the claims API.md names (`sub`, `device_type`, `exp`), or minted by the
//! server itself through its admin API.

use std::collections::HashMap;

use anyhow::Context;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::http::{Conn, Origin, Request};

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    device_type: &'a str,
    iat: i64,
    exp: i64,
}

/// Mints device tokens valid for `ttl_seconds` from now.
pub struct TokenMinter {
    key: EncodingKey,
    ttl_seconds: i64,
}

impl TokenMinter {
    pub fn new(secret: &[u8], ttl_seconds: i64) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            ttl_seconds,
        }
    }

    pub fn mint(&self, device_id: &str, device_type: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: device_id,
            device_type,
            iat: now,
            exp: now + self.ttl_seconds,
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.key).expect("HS256 signing cannot fail")
    }
}

/// Where the devices' tokens come from.
pub enum Tokens {
    /// Signed here with the server's HS256 secret.
    Signed(TokenMinter),
    /// Minted by the server, by device id.
    Issued(HashMap<String, String>),
}

impl Tokens {
    pub fn for_device(&self, device_id: &str, device_type: &str) -> String {
        match self {
            Tokens::Signed(minter) => minter.mint(device_id, device_type),
            // `issue_all` minted one for every device of the run.
            Tokens::Issued(tokens) => tokens.get(device_id).cloned().unwrap_or_default(),
        }
    }
}

/// Has the server mint a token for each device
/// (`POST /api/ota/admin/devices/{id}/token`), over one kept-alive
/// connection. Works whatever key the server verifies tokens with, as long
/// as it can sign them.
pub async fn issue_all(
    origin: &Origin,
    admin_token: &str,
    device_ids: impl IntoIterator<Item = String>,
    device_type: &str,
    ttl_seconds: u64,
) -> anyhow::Result<HashMap<String, String>> {
    let mut conn = Conn::connect(origin.addr, None)
        .await
        .with_context(|| format!("connecting to {} to mint device tokens", origin.host))?;
    let body = serde_json::to_vec(&serde_json::json!({"device_type": device_type, "ttl_seconds": ttl_seconds}))?;
    let mut tokens = HashMap::new();
    for device_id in device_ids {
        let path = ota_core::wire::device_token_path(&device_id);
        let request = Request {
            method: "POST",
            path: &path,
            headers: vec![format!("Authorization: Bearer {admin_token}")],
            body: Some(&body),
            content_type: Some("application/json"),
        }
        .encode(&origin.host);
        let head = conn.send(&request).await?;
        let answer = conn.body().await?;
        anyhow::ensure!(
            head.status == 201,
            "the server did not mint a token for {device_id}: HTTP {}: {}",
            head.status,
            String::from_utf8_lossy(&answer)
        );
        let minted: serde_json::Value = serde_json::from_slice(&answer).context("the token answer is not JSON")?;
        let token = minted["token"].as_str().context("the token answer has no token")?;
        tokens.insert(device_id, token.to_owned());
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    #[test]
    fn tokens_carry_the_device_and_verify_with_the_secret() {
        let token = TokenMinter::new(b"a-shared-secret-for-tests", 3600).mint("sim-000001", "scales_bridge_tab5");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(b"a-shared-secret-for-tests"),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims["sub"], "sim-000001");
        assert_eq!(decoded.claims["device_type"], "scales_bridge_tab5");
        let wrong = jsonwebtoken::decode::<serde_json::Value>(&token, &DecodingKey::from_secret(b"other"), &validation);
        assert!(wrong.is_err());
    }
}
