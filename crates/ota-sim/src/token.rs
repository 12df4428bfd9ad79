//! Device tokens: HS256 JWTs minted from the server's shared secret, with
//! the claims API.md names (`sub`, `device_type`, `exp`).

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

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
