//! Where the server URL and the admin token come from: `--server` /
//! `--admin-token`, then `OTA_SERVER` / `OTA_ADMIN_TOKEN` (both resolved by
//! clap), then the config file that `otactl login` writes.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::failure::{Failure, Result};

/// The server a fresh `ota-server serve` listens on.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// An admin token. It is never printed: not by `Debug`, not in errors.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AdminToken(String);

impl TryFrom<String> for AdminToken {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, String> {
        AdminToken::new(&text).map_err(|failure| failure.message().to_owned())
    }
}

impl From<AdminToken> for String {
    fn from(token: AdminToken) -> String {
        token.0
    }
}

impl AdminToken {
    /// A token as typed or read from a file, trimmed; empty is refused.
    pub fn new(text: &str) -> Result<Self> {
        let token = text.trim();
        if token.is_empty() {
            return Err(Failure::usage("the admin token is empty"));
        }
        if token.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err(Failure::usage(
                "the admin token contains characters that cannot be sent in an HTTP header",
            ));
        }
        Ok(Self(token.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// `config.toml`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<AdminToken>,
}

/// `$XDG_CONFIG_HOME/otactl/config.toml`, or `~/.config/otactl/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("otactl").join("config.toml"))
}

impl ConfigFile {
    /// Reads the file; a missing one is an empty configuration.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Failure::usage(format!("cannot read {}: {e}", path.display()))),
        };
        // toml's messages quote the offending line, which may hold the token.
        let config: Self = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            let at = line.map(|line| format!(" at line {line}")).unwrap_or_default();
            Failure::usage(format!(
                "{} is not a valid otactl config{at} (expected `server = \"…\"` and a non-empty `admin_token = \"…\"`)",
                path.display()
            ))
        })?;
        if config.admin_token.is_some() {
            warn_if_readable_by_others(path);
        }
        Ok(config)
    }

    /// Writes the file with mode 0600 (its folder 0700), atomically: a
    /// crash leaves the old file or the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let fail = |what: &str, e: std::io::Error| Failure::failed(format!("{what} {}: {e}", path.display()));
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(|e| fail("cannot create the folder of", e))?;
        let text = toml::to_string(self).map_err(|e| Failure::failed(format!("cannot encode the config: {e}")))?;
        let temp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("config"),
            std::process::id()
        ));
        let result = (|| {
            let mut file = private_file(&temp)?;
            file.write_all(b"# Written by `otactl login`. Keep this file private (mode 0600).\n")?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(fail("cannot write", e));
        }
        Ok(())
    }
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} holds an admin token but other users may read it (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Parses a server URL: http or https, with a host.
pub fn parse_server(text: &str) -> Result<Url> {
    let url = Url::parse(text.trim()).map_err(|e| {
        Failure::usage(format!(
            "`{text}` is not a server URL like https://ota.example.com ({e})"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Failure::usage(format!(
            "`{text}` is not an http:// or https:// server URL"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Failure::usage(
            "put credentials in --admin-token or OTA_ADMIN_TOKEN, not in the server URL",
        ));
    }
    Ok(url)
}

/// Whether two server URLs name the same server (and path prefix).
pub fn same_server(a: &Url, b: &Url) -> bool {
    a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

/// A server URL as a human wrote it, without the trailing `/`.
pub fn display(url: &Url) -> &str {
    url.as_str().trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_never_in_debug_output() {
        let config = ConfigFile {
            server: Some("http://x".into()),
            admin_token: Some(AdminToken::new("s3cret-token-value").unwrap()),
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    #[cfg(unix)]
    fn a_saved_config_is_private_and_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otactl").join("config.toml");
        let config = ConfigFile {
            server: Some("https://ota.example.com".into()),
            admin_token: Some(AdminToken::new("abc123").unwrap()),
        };
        config.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let back = ConfigFile::load(&path).unwrap();
        assert_eq!(back.server.as_deref(), Some("https://ota.example.com"));
        assert_eq!(back.admin_token.unwrap().expose(), "abc123");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn a_broken_config_names_the_line_but_not_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "server = \"http://x\"\nadmin_token = s3cret-unquoted\n").unwrap();
        let message = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn server_urls_are_checked() {
        assert!(parse_server("https://ota.example.com/base/").is_ok());
        assert!(parse_server("ftp://ota.example.com").is_err());
        assert!(parse_server("ota.example.com").is_err());
        assert!(parse_server("https://admin:pw@ota.example.com").is_err());
    }
}
