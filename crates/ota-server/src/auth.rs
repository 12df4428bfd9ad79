//! Credentials: device JWTs and the admin token. Minting device tokens is
//! in [`crate::tokens`].

use anyhow::{Context, anyhow, bail};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::{Secret, Settings};

/// The claims of a device token that the server reads.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceClaims {
    pub sub: String,
    #[serde(default)]
    pub device_type: Option<String>,
}

/// Verifies device tokens with one pinned algorithm and key.
#[derive(Clone)]
pub struct DeviceTokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for DeviceTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl DeviceTokenVerifier {
    /// With a public key configured, its algorithm (RS*, PS*, ES*, EdDSA);
    /// otherwise HS256 (or HS384/HS512 if pinned) with `secret`.
    pub fn from_settings(settings: &Settings, secret: Option<&Secret>) -> anyhow::Result<Self> {
        let pinned = settings
            .device_jwt_algorithm
            .as_deref()
            .map(|name| {
                name.parse::<Algorithm>()
                    .with_context(|| format!("OTA_DEVICE_JWT_ALGORITHM '{name}' is not a JWT algorithm"))
            })
            .transpose()?;
        let (key, algorithm) = match &settings.device_jwt_public_key {
            Some(configured) => public_key(configured, pinned)?,
            None => {
                let algorithm = pinned.unwrap_or(Algorithm::HS256);
                if !matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    bail!("OTA_DEVICE_JWT_ALGORITHM {algorithm:?} needs OTA_DEVICE_JWT_PUBLIC_KEY");
                }
                let secret = secret.context("a device JWT secret is required for HS algorithms")?;
                (DecodingKey::from_secret(secret.expose().as_bytes()), algorithm)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        validation.validate_aud = false;
        if let Some(issuer) = &settings.device_jwt_issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        if let Some(audience) = &settings.device_jwt_audience {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
            validation.required_spec_claims.insert("aud".to_owned());
        }
        Ok(Self { key, validation })
    }

    pub fn verify(&self, token: &str) -> Result<DeviceClaims, jsonwebtoken::errors::Error> {
        decode::<DeviceClaims>(token, &self.key, &self.validation).map(|data| data.claims)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }
}

fn public_key(configured: &str, pinned: Option<Algorithm>) -> anyhow::Result<(DecodingKey, Algorithm)> {
    let pem = read_pem(configured, "OTA_DEVICE_JWT_PUBLIC_KEY", Disclose::Value)?;
    let pem = pem.as_bytes();
    use Algorithm::*;
    let algorithm = match pinned {
        Some(algorithm) => algorithm,
        None if DecodingKey::from_ed_pem(pem).is_ok() => EdDSA,
        None if DecodingKey::from_ec_pem(pem).is_ok() => ES256,
        None if DecodingKey::from_rsa_pem(pem).is_ok() => RS256,
        None => {
            bail!("OTA_DEVICE_JWT_PUBLIC_KEY is not an RSA, EC or Ed25519 public key in PEM form")
        }
    };
    let key = match algorithm {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem),
        ES256 | ES384 => DecodingKey::from_ec_pem(pem),
        EdDSA => DecodingKey::from_ed_pem(pem),
        HS256 | HS384 | HS512 => bail!("a public key cannot verify {algorithm:?} tokens"),
    }
    .with_context(|| format!("OTA_DEVICE_JWT_PUBLIC_KEY is not a {algorithm:?} public key"))?;
    Ok((key, algorithm))
}

/// Whether an error about a PEM setting may repeat the configured value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disclose {
    /// Always: the value is public (a public key, or its path).
    Value,
    /// Only when it names an existing file: anything else may be mangled
    /// key material.
    OnlyAnExistingPath,
}

/// The PEM text itself (it starts with `-----BEGIN`), or read from the file
/// the value names.
pub(crate) fn read_pem(configured: &str, setting: &str, disclose: Disclose) -> anyhow::Result<String> {
    if configured.trim_start().starts_with("-----BEGIN") {
        return Ok(configured.to_owned());
    }
    std::fs::read_to_string(configured).map_err(|e| {
        if disclose == Disclose::Value || std::path::Path::new(configured).exists() {
            anyhow!(e).context(format!("reading {setting} from {configured}"))
        } else {
            anyhow!(e).context(format!(
                "{setting} is neither PEM text (starting with -----BEGIN) nor the path of a readable file"
            ))
        }
    })
}

/// The admin tokens and their names: `admin` for `OTA_ADMIN_TOKEN`, then
/// those of `OTA_ADMIN_TOKENS` (`name:token,name:token`).
pub fn named_admin_tokens(main: Secret, more: Option<&Secret>) -> anyhow::Result<Vec<(String, Secret)>> {
    let mut tokens = vec![("admin".to_owned(), main)];
    let Some(more) = more else {
        return Ok(tokens);
    };
    for (index, entry) in more.expose().split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        let Some((name, token)) = entry.split_once(':') else {
            bail!("OTA_ADMIN_TOKENS entry {} is not name:token", index + 1);
        };
        let name = name.trim();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if !valid_name {
            bail!(
                "OTA_ADMIN_TOKENS entry {}: a name is 1 to 64 letters, digits, '.', '_', '-' or '@'",
                index + 1
            );
        }
        if name == crate::rollouts::SYSTEM || tokens.iter().any(|(taken, _)| taken == name) {
            bail!("OTA_ADMIN_TOKENS: the name '{name}' is taken");
        }
        if token.len() < 16 {
            bail!("OTA_ADMIN_TOKENS: the token of '{name}' is shorter than 16 characters");
        }
        if tokens.iter().any(|(_, known)| admin_token_matches(token, known)) {
            bail!("OTA_ADMIN_TOKENS: the token of '{name}' is used twice");
        }
        tokens.push((name.to_owned(), Secret::new(token)));
    }
    Ok(tokens)
}

/// The name of the admin token presented, if it is one. Every token is
/// compared, in constant time each.
pub fn admin_token_name<'t>(presented: &str, tokens: &'t [(String, Secret)]) -> Option<&'t str> {
    let mut found = None;
    for (name, token) in tokens {
        if admin_token_matches(presented, token) && found.is_none() {
            found = Some(name.as_str());
        }
    }
    found
}

/// Compares a presented admin token with the configured one in constant
/// time. Both are hashed first, so not even the length is compared early.
pub fn admin_token_matches(presented: &str, expected: &Secret) -> bool {
    use sha2::{Digest, Sha256};
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.expose().as_bytes());
    presented.ct_eq(&expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_admin_token_matches() {
        let token = Secret::new("the-admin-token-0123456789");
        assert!(admin_token_matches("the-admin-token-0123456789", &token));
        for wrong in [
            "",
            "the-admin-token-012345678",
            "the-admin-token-01234567890",
            "THE-ADMIN-TOKEN-0123456789",
        ] {
            assert!(!admin_token_matches(wrong, &token), "{wrong:?}");
        }
    }

    #[test]
    fn named_admin_tokens_are_read_and_checked() {
        let main = Secret::new("the-admin-token-0123456789");
        let more = Secret::new("alice:alice-token-0123456789, ci-bot:ci-token-0123456789abc");
        let tokens = named_admin_tokens(main.clone(), Some(&more)).unwrap();
        assert_eq!(admin_token_name("alice-token-0123456789", &tokens), Some("alice"));
        assert_eq!(admin_token_name("ci-token-0123456789abc", &tokens), Some("ci-bot"));
        assert_eq!(admin_token_name("the-admin-token-0123456789", &tokens), Some("admin"));
        assert_eq!(admin_token_name("nobody-0123456789", &tokens), None);
        for (bad, why) in [
            ("alice", "not name:token"),
            ("alice:short", "shorter"),
            ("admin:another-token-0123456789", "taken"),
            ("system:another-token-0123456789", "taken"),
            ("bad name:another-token-0123456789", "a name is"),
            ("bob:the-admin-token-0123456789", "used twice"),
        ] {
            let error = named_admin_tokens(main.clone(), Some(&Secret::new(bad)))
                .unwrap_err()
                .to_string();
            assert!(error.contains(why), "{bad}: {error}");
            assert!(!error.contains("0123456789"), "a token is shown: {error}");
        }
    }
}
