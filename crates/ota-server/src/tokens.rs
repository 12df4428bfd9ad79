//! Minting device tokens for administrators: signed with the key and the
//! algorithm that [`DeviceTokenVerifier`] checks, so that what this server
//! issues, it accepts.

use anyhow::{Context, bail};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use ota_core::{DeviceId, DeviceType};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::{DeviceTokenVerifier, Disclose, read_pem};
use crate::config::{Secret, Settings};

/// The claims of a token this server mints.
#[derive(Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    device_type: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// A device token just minted.
pub struct IssuedToken {
    pub token: String,
    pub jti: Uuid,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("jti", &self.jti)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Signs device tokens that [`DeviceTokenVerifier`] accepts: its algorithm,
/// the matching key, and the configured `iss` and `aud`.
#[derive(Clone)]
pub struct DeviceTokenIssuer {
    key: EncodingKey,
    algorithm: Algorithm,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for DeviceTokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTokenIssuer")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl DeviceTokenIssuer {
    /// With HS algorithms, the device JWT `secret`; with a public key, the
    /// configured private key, which must sign tokens the public key
    /// verifies. `None` when a public key is configured without a private
    /// key: this server then only verifies.
    pub fn from_settings(
        settings: &Settings,
        secret: Option<&Secret>,
        verifier: &DeviceTokenVerifier,
    ) -> anyhow::Result<Option<Self>> {
        let algorithm = verifier.algorithm();
        let key = match (&settings.device_jwt_public_key, &settings.device_jwt_private_key) {
            (None, Some(_)) => bail!(
                "OTA_DEVICE_JWT_PRIVATE_KEY is set without OTA_DEVICE_JWT_PUBLIC_KEY: \
                 configure the matching public key as well, or remove the private key"
            ),
            (Some(_), None) => return Ok(None),
            (Some(_), Some(private)) => private_key(private, algorithm)?,
            (None, None) => {
                let secret = secret.context("a device JWT secret is required for HS algorithms")?;
                EncodingKey::from_secret(secret.expose().as_bytes())
            }
        };
        let issuer = Self {
            key,
            algorithm,
            issuer: settings.device_jwt_issuer.clone(),
            audience: settings.device_jwt_audience.clone(),
        };
        issuer
            .probe(verifier)
            .with_context(|| match settings.device_jwt_private_key {
                Some(_) => {
                    "OTA_DEVICE_JWT_PRIVATE_KEY does not match OTA_DEVICE_JWT_PUBLIC_KEY: \
                        a token signed with it does not verify"
                }
                None => "the device JWT secret does not verify the tokens it signs",
            })?;
        Ok(Some(issuer))
    }

    /// Signs a short-lived token and has `verifier` check it.
    fn probe(&self, verifier: &DeviceTokenVerifier) -> anyhow::Result<()> {
        let device_id = DeviceId::parse("ota-server-start-probe")?;
        let device_type = DeviceType::parse("ota-server-probe")?;
        let probe = self.issue(&device_id, &device_type, TimeDelta::minutes(1))?;
        let claims = verifier.verify(&probe.token)?;
        if claims.sub != device_id.as_str() {
            bail!("the probe token came back with another subject");
        }
        Ok(())
    }

    /// A token for `device_id` of `device_type`, valid for `ttl` from now.
    pub fn issue(&self, device_id: &DeviceId, device_type: &DeviceType, ttl: TimeDelta) -> anyhow::Result<IssuedToken> {
        let issued_at = Utc::now().trunc_subsecs(0);
        let expires_at = issued_at
            .checked_add_signed(ttl)
            .context("the token's expiry is out of range")?;
        let jti = Uuid::new_v4();
        let claims = IssuedClaims {
            sub: device_id.as_str(),
            device_type: device_type.as_str(),
            iat: issued_at.timestamp(),
            exp: expires_at.timestamp(),
            jti: jti.to_string(),
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        let token = encode(&Header::new(self.algorithm), &claims, &self.key).context("signing a device token")?;
        Ok(IssuedToken {
            token,
            jti,
            issued_at,
            expires_at,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn private_key(configured: &Secret, algorithm: Algorithm) -> anyhow::Result<EncodingKey> {
    let pem = read_pem(
        configured.expose(),
        "OTA_DEVICE_JWT_PRIVATE_KEY",
        Disclose::OnlyAnExistingPath,
    )?;
    let pem = pem.as_bytes();
    use Algorithm::*;
    match algorithm {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => EncodingKey::from_rsa_pem(pem),
        ES256 | ES384 => EncodingKey::from_ec_pem(pem),
        EdDSA => EncodingKey::from_ed_pem(pem),
        HS256 | HS384 | HS512 => bail!("a private key cannot sign {algorithm:?} tokens"),
    }
    .with_context(|| {
        format!(
            "OTA_DEVICE_JWT_PRIVATE_KEY is not a {algorithm:?} private key in PEM form (the public key's algorithm)"
        )
    })
}

/// The name of an algorithm as a JWT's `alg` header spells it.
pub fn jwt_algorithm_name(algorithm: Algorithm) -> &'static str {
    use Algorithm::*;
    match algorithm {
        HS256 => "HS256",
        HS384 => "HS384",
        HS512 => "HS512",
        ES256 => "ES256",
        ES384 => "ES384",
        RS256 => "RS256",
        RS384 => "RS384",
        RS512 => "RS512",
        PS256 => "PS256",
        PS384 => "PS384",
        PS512 => "PS512",
        EdDSA => "EdDSA",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs_settings() -> (Settings, Secret) {
        let settings = Settings {
            device_jwt_issuer: Some("factory".into()),
            device_jwt_audience: Some("ota".into()),
            ..Settings::default()
        };
        (settings, Secret::new("unit-test-device-jwt-secret-0123"))
    }

    #[test]
    fn an_issued_token_passes_the_verifier_of_the_same_settings() {
        let (settings, secret) = hs_settings();
        let verifier = DeviceTokenVerifier::from_settings(&settings, Some(&secret)).unwrap();
        let issuer = DeviceTokenIssuer::from_settings(&settings, Some(&secret), &verifier)
            .unwrap()
            .unwrap();
        let device_id = DeviceId::parse("tab5-0001").unwrap();
        let device_type = DeviceType::parse("scales_bridge_tab5").unwrap();

        let issued = issuer.issue(&device_id, &device_type, TimeDelta::days(1)).unwrap();

        let claims = verifier.verify(&issued.token).unwrap();
        assert_eq!(claims.sub, "tab5-0001");
        assert_eq!(claims.device_type.as_deref(), Some("scales_bridge_tab5"));
        assert_eq!(issued.expires_at - issued.issued_at, TimeDelta::days(1));
    }

    #[test]
    fn an_issued_token_never_shows_in_debug_output() {
        let (settings, secret) = hs_settings();
        let verifier = DeviceTokenVerifier::from_settings(&settings, Some(&secret)).unwrap();
        let issuer = DeviceTokenIssuer::from_settings(&settings, Some(&secret), &verifier)
            .unwrap()
            .unwrap();
        let issued = issuer
            .issue(
                &DeviceId::parse("d").unwrap(),
                &DeviceType::parse("t").unwrap(),
                TimeDelta::minutes(5),
            )
            .unwrap();

        assert!(!format!("{issued:?}").contains(&issued.token));
        assert!(!format!("{issuer:?}").contains(secret.expose()));
    }

    #[test]
    fn a_private_key_that_is_no_pem_and_no_file_is_not_repeated_in_the_error() {
        let settings = Settings {
            device_jwt_public_key: Some(include_str!("../tests/fixtures/ec_public.pem").to_owned()),
            device_jwt_private_key: Some(Secret::new("MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg")),
            ..Settings::default()
        };
        let verifier = DeviceTokenVerifier::from_settings(&settings, None).unwrap();

        let error = DeviceTokenIssuer::from_settings(&settings, None, &verifier).unwrap_err();

        let shown = format!("{error:#}");
        assert!(shown.contains("OTA_DEVICE_JWT_PRIVATE_KEY"), "{shown}");
        assert!(!shown.contains("MIGHAgEAMBMG"), "{shown}");
    }
}
