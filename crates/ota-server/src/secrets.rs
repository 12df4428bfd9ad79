//! The server's three secrets: the admin token, the device JWT secret and
//! the download-link signing key. A configured secret is used as it is; a
//! missing one is read from, or generated into, the data dir with mode 0600.
//! Where a secret lives is logged; its value never is.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::RngCore;

use crate::config::Secret;

/// Placeholders from examples and templates that must never guard a server.
const WELL_KNOWN: &[&str] = &[
    "changemechangeme",
    "change-me-change-me",
    "replace-me-with-a-secret",
    "your-admin-token-here",
    "0123456789abcdef",
    "1234567890123456",
    "abcdefghijklmnop",
    "secretsecretsecret",
    "passwordpassword",
];
const MIN_LEN: usize = 16;
/// A value made of fewer different characters than this is not random.
const MIN_DISTINCT: usize = 6;

/// Which secret, and the file it is kept in when generated.
#[derive(Debug, Clone, Copy)]
pub enum SecretKind {
    AdminToken,
    DeviceJwtSecret,
    LinkSigningKey,
}

impl SecretKind {
    fn file_name(self) -> &'static str {
        match self {
            SecretKind::AdminToken => "admin_token",
            SecretKind::DeviceJwtSecret => "device_jwt_secret",
            SecretKind::LinkSigningKey => "link_signing_key",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            SecretKind::AdminToken => "OTA_ADMIN_TOKEN",
            SecretKind::DeviceJwtSecret => "OTA_DEVICE_JWT_SECRET",
            SecretKind::LinkSigningKey => "OTA_LINK_SIGNING_KEY",
        }
    }
}

/// Where the generated secrets are kept.
pub fn secrets_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets")
}

/// The configured value, or the one kept in the data dir, or a new one.
pub fn resolve(kind: SecretKind, configured: Option<&Secret>, data_dir: &Path) -> anyhow::Result<Secret> {
    if let Some(secret) = configured {
        check_strength(kind, secret.expose())?;
        tracing::info!(secret = kind.file_name(), "using the configured {}", kind.setting());
        return Ok(secret.clone());
    }
    let dir = secrets_dir(data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))?;
    let path = dir.join(kind.file_name());
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let value = text.trim().to_owned();
            check_strength(kind, &value).with_context(|| format!("the secret in {}", path.display()))?;
            warn_if_readable_by_others(&path);
            tracing::info!(secret = kind.file_name(), path = %path.display(), "loaded the generated secret");
            Ok(Secret::new(value))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = generate();
            write_new(&path, &value)?;
            tracing::info!(
                secret = kind.file_name(),
                path = %path.display(),
                "generated a new secret (set {} to use your own)", kind.setting()
            );
            Ok(Secret::new(value))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn check_strength(kind: SecretKind, value: &str) -> anyhow::Result<()> {
    if value.len() < MIN_LEN {
        bail!("{} must be at least {MIN_LEN} characters long", kind.setting());
    }
    let distinct: std::collections::HashSet<char> = value.chars().collect();
    if distinct.len() < MIN_DISTINCT || WELL_KNOWN.iter().any(|known| value.eq_ignore_ascii_case(known)) {
        bail!(
            "{} is a well-known or guessable value; choose a random one (e.g. openssl rand -hex 32)",
            kind.setting()
        );
    }
    Ok(())
}

fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn write_new(path: &Path, value: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(value.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "secret file is readable by group or others; chmod 600 it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_secret_is_generated_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve(SecretKind::AdminToken, None, dir.path()).unwrap();
        let second = resolve(SecretKind::AdminToken, None, dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.expose().len(), 64);
        let path = dir.path().join("secrets/admin_token");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn each_kind_gets_its_own_secret() {
        let dir = tempfile::tempdir().unwrap();
        let admin = resolve(SecretKind::AdminToken, None, dir.path()).unwrap();
        let link = resolve(SecretKind::LinkSigningKey, None, dir.path()).unwrap();
        assert_ne!(admin, link);
    }

    #[test]
    fn weak_configured_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for weak in [
            "",
            "short",
            "changeme",
            "0000000000000000000000",
            "0123456789ABCDEF",
            "abababababababababab",
        ] {
            let secret = Secret::new(weak);
            assert!(resolve(SecretKind::AdminToken, Some(&secret), dir.path()).is_err());
        }
        let strong = Secret::new("a-long-enough-random-token");
        assert_eq!(
            resolve(SecretKind::AdminToken, Some(&strong), dir.path()).unwrap(),
            strong
        );
    }
}
