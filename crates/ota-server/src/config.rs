//! Settings: built-in defaults, overridden by an optional TOML file
//! (`--config ota.toml`), overridden by `OTA_*` environment variables.
//!
//! Secrets are held in [`Secret`], whose `Debug` never shows the value.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};
use serde::Deserialize;

/// A secret value: shown as `<redacted>` by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// How a download request is answered when the firmware is in a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DownloadRedirect {
    /// The server streams the bytes itself.
    #[default]
    None,
    /// A GET is answered `302 Found` with a presigned URL of the object.
    Presigned,
}

impl FromStr for DownloadRedirect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "presigned" => Ok(Self::Presigned),
            other => Err(format!(
                "'{other}' is not a download redirect: use 'none' or 'presigned'"
            )),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("'{other}' is not a log format: use 'pretty' or 'json'")),
        }
    }
}

macro_rules! settings {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)?) => {
        /// Every setting of the server. Field `x` is `x` in the TOML file and
        /// `OTA_X` in the environment.
        #[derive(Debug, Clone)]
        pub struct Settings {
            $( $(#[$doc])* pub $field: $ty, )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        /// What a TOML file may say: any subset of the settings.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Overrides {
            $( $field: Option<$ty>, )*
        }

        impl Settings {
            /// The names of all settings, as in the TOML file (`OTA_` plus the
            /// upper-cased name in the environment).
            pub const NAMES: &'static [&'static str] = &[$( stringify!($field), )*];

            fn apply(&mut self, overrides: Overrides) {
                $( if let Some(value) = overrides.$field { self.$field = value; } )*
            }

            fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
                $(
                    let name = concat!("OTA_", stringify!($field)).to_uppercase();
                    if let Some(raw) = env(&name) {
                        self.$field = parse_env_value::<$ty>(&name, &raw)?;
                    }
                )*
                Ok(())
            }
        }
    };
}

trait EnvValue: Sized {
    fn from_env(raw: &str) -> Result<Self, String>;
}

macro_rules! env_value_via_from_str {
    ($($ty:ty),*) => {$(
        impl EnvValue for $ty {
            fn from_env(raw: &str) -> Result<Self, String> {
                raw.parse::<$ty>().map_err(|e| e.to_string())
            }
        }
    )*};
}

env_value_via_from_str!(
    String,
    u64,
    u32,
    SocketAddr,
    PathBuf,
    Secret,
    LogFormat,
    DownloadRedirect
);

impl<T: EnvValue> EnvValue for Option<T> {
    fn from_env(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            Ok(None)
        } else {
            T::from_env(raw).map(Some)
        }
    }
}

fn parse_env_value<T: EnvValue>(name: &str, raw: &str) -> anyhow::Result<T> {
    T::from_env(raw).map_err(|reason| anyhow::anyhow!("{name} has an invalid value: {reason}"))
}

settings! {
    /// Address of the HTTP listener.
    listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8080)),
    /// Folder for the database, generated secrets and firmware files.
    data_dir: PathBuf = PathBuf::from("./data"),
    /// `sqlite://path` (default: `<data_dir>/ota.db`).
    database_url: Option<String> = None,
    /// Where firmware bytes live (default: the folder `<data_dir>/firmware`):
    /// `file:///path` or a plain path, or an S3-compatible bucket as
    /// `s3://bucket/prefix` (credentials and endpoint from `AWS_*`).
    storage_url: Option<String> = None,
    /// Base of the download links handed to devices, e.g.
    /// `https://ota.example.com` (default: taken from the request's `Host`).
    public_url: Option<String> = None,
    /// Administrator bearer token (default: generated into the data dir),
    /// named `admin` in the audit log.
    admin_token: Option<Secret> = None,
    /// More administrator tokens, each with its name for the audit log:
    /// `alice:<token>,ci:<token>` (names: letters, digits, `.`, `_`, `-`, `@`;
    /// tokens: at least 16 characters, no `,`).
    admin_tokens: Option<Secret> = None,
    /// Seconds between the rollout driver's looks at running rollouts (it
    /// also looks at once when one of their attempts ends).
    rollout_interval: u64 = 10,
    /// Days a finished attempt's log row is kept (0: for ever).
    log_retention_days: u64 = 0,
    /// Finished attempts kept per device, newest first (0: all).
    log_retention_per_device: u64 = 0,
    /// Seconds between the retention sweeps.
    retention_interval: u64 = 3600,
    /// HS256 secret for device tokens (default: generated into the data dir).
    device_jwt_secret: Option<Secret> = None,
    /// PEM public key (or a path to one) for RS256/ES256/EdDSA device tokens;
    /// when set, HS256 is not accepted.
    device_jwt_public_key: Option<String> = None,
    /// PEM private key (or a path to one) matching `device_jwt_public_key`,
    /// with which the server mints device tokens itself; checked against the
    /// public key at start.
    device_jwt_private_key: Option<Secret> = None,
    /// Pins the device token algorithm (HS256, HS384, HS512, RS256, RS384,
    /// RS512, PS256, ES256, ES384, EdDSA); default from the key.
    device_jwt_algorithm: Option<String> = None,
    /// Required `iss` of device tokens, when set.
    device_jwt_issuer: Option<String> = None,
    /// Required `aud` of device tokens, when set.
    device_jwt_audience: Option<String> = None,
    /// HMAC key for download links (default: generated into the data dir).
    link_signing_key: Option<Secret> = None,
    /// Seconds a download link stays valid.
    download_url_ttl: u64 = 3600,
    /// `none` (the server sends the bytes) or `presigned` (with S3 storage, a
    /// GET of a download link is answered 302 with a presigned URL).
    download_redirect: DownloadRedirect = DownloadRedirect::None,
    /// Base URL of a CDN in front of the firmware store, e.g.
    /// `https://cdn.example.com/firmware`: check answers link
    /// `<base>/<binary_path>`, unsigned, instead of the download endpoint.
    cdn_base_url: Option<String> = None,
    /// Largest firmware upload, in bytes.
    max_upload_bytes: u64 = 64 * 1024 * 1024,
    /// Bytes of firmware images kept in memory for downloads (0 = none);
    /// an image larger than half of it is streamed from disk.
    blob_cache_bytes: u64 = 64 * 1024 * 1024,
    /// Serve `/metrics` on this address instead of the main listener.
    metrics_listen: Option<SocketAddr> = None,
    /// Seconds a connection may make no progress (read or write) before it
    /// is closed. Slow transfers that keep moving are never cut off.
    idle_timeout: u64 = 60,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    shutdown_timeout: u64 = 30,
    /// Requests per minute one device may make to check and status
    /// (0 = unlimited).
    device_rate_limit: u32 = 120,
    /// `pretty` or `json`.
    log_format: LogFormat = LogFormat::Pretty,
    /// Log filter in `tracing` syntax, e.g. `info,ota_server=debug`.
    log: String = "info".to_owned(),
}

/// The longest duration any setting may have: one year.
const MAX_SECONDS: u64 = 366 * 24 * 3600;
/// The largest upload any setting may allow: 64 GiB.
const MAX_UPLOAD: u64 = 64 << 30;

impl Settings {
    /// Defaults < `config_file` < environment (read through `env`).
    pub fn load(config_file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut settings = Settings::default();
        if let Some(path) = config_file {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading the config file {}", path.display()))?;
            let overrides: Overrides =
                toml::from_str(&text).with_context(|| format!("parsing the config file {}", path.display()))?;
            settings.apply(overrides);
        }
        settings.apply_env(env)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Defaults < `config_file` < the process environment.
    pub fn from_env(config_file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load(config_file, &|name| std::env::var(name).ok())
    }

    fn validate(&self) -> anyhow::Result<()> {
        let within = |name: &str, value: u64, range: std::ops::RangeInclusive<u64>| {
            if range.contains(&value) {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{name} must be between {} and {}, got {value}",
                    range.start(),
                    range.end()
                ))
            }
        };
        within("download_url_ttl", self.download_url_ttl, 1..=MAX_SECONDS)?;
        within("idle_timeout", self.idle_timeout, 1..=MAX_SECONDS)?;
        within("shutdown_timeout", self.shutdown_timeout, 0..=MAX_SECONDS)?;
        within("rollout_interval", self.rollout_interval, 1..=MAX_SECONDS)?;
        within("retention_interval", self.retention_interval, 1..=MAX_SECONDS)?;
        within("log_retention_days", self.log_retention_days, 0..=36_500)?;
        within(
            "log_retention_per_device",
            self.log_retention_per_device,
            0..=i64::MAX as u64,
        )?;
        within("max_upload_bytes", self.max_upload_bytes, 1..=MAX_UPLOAD)?;
        within("blob_cache_bytes", self.blob_cache_bytes, 0..=MAX_UPLOAD)?;
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("public_url must start with http:// or https://, got '{url}'");
        }
        let on_s3 = self.storage_url.as_deref().is_some_and(|url| url.starts_with("s3://"));
        if self.download_redirect == DownloadRedirect::Presigned && !on_s3 {
            bail!("download_redirect 'presigned' needs firmware in a bucket: set storage_url to s3://bucket/prefix");
        }
        if on_s3 && self.max_upload_bytes > crate::blobs::s3::MAX_COPY_BYTES {
            bail!(
                "max_upload_bytes can be at most {} (5 GiB) with S3 storage, got {}",
                crate::blobs::s3::MAX_COPY_BYTES,
                self.max_upload_bytes
            );
        }
        if let Some(base) = &self.cdn_base_url {
            check_cdn_base_url(base)?;
        }
        Ok(())
    }
}

/// An absolute http(s) URL with a host and nothing after its path.
fn check_cdn_base_url(base: &str) -> anyhow::Result<()> {
    let refuse = || {
        anyhow::anyhow!(
            "cdn_base_url must be an absolute http:// or https:// URL without ?query or #fragment, got '{base}'"
        )
    };
    let url = url::Url::parse(base).map_err(|_| refuse())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(refuse());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn defaults_need_nothing() {
        let settings = Settings::load(None, &env_of(&[])).unwrap();
        assert_eq!(settings.listen.port(), 8080);
        assert_eq!(settings.data_dir, PathBuf::from("./data"));
        assert_eq!(settings.database_url, None);
        assert!(settings.admin_token.is_none());
    }

    #[test]
    fn the_environment_overrides_the_file_which_overrides_defaults() {
        let file = toml_file("listen = \"127.0.0.1:9000\"\nmax_upload_bytes = 10\ndownload_url_ttl = 60\n");
        let env = env_of(&[
            ("OTA_MAX_UPLOAD_BYTES", "20"),
            ("OTA_ADMIN_TOKEN", "0123456789abcdef0123"),
        ]);
        let settings = Settings::load(Some(file.path()), &env).unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(settings.max_upload_bytes, 20);
        assert_eq!(settings.download_url_ttl, 60);
        assert_eq!(settings.admin_token.unwrap().expose(), "0123456789abcdef0123");
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let error = Settings::load(None, &env_of(&[("OTA_LISTEN", "nowhere")])).unwrap_err();
        assert!(error.to_string().contains("OTA_LISTEN"), "{error}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let file = toml_file("lisen = \"127.0.0.1:9000\"\n");
        let error = Settings::load(Some(file.path()), &env_of(&[])).unwrap_err();
        assert!(format!("{error:#}").contains("lisen"), "{error:#}");
    }

    #[test]
    fn an_empty_variable_unsets_an_optional_setting() {
        let file = toml_file("public_url = \"https://ota.example.com\"\n");
        let settings = Settings::load(Some(file.path()), &env_of(&[("OTA_PUBLIC_URL", "")])).unwrap();
        assert_eq!(settings.public_url, None);
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let env = env_of(&[
            ("OTA_ADMIN_TOKEN", "super-secret-admin-token"),
            ("OTA_LINK_SIGNING_KEY", "link-key-value"),
            (
                "OTA_DEVICE_JWT_PRIVATE_KEY",
                "-----BEGIN PRIVATE KEY-----\nprivate-key-body",
            ),
        ]);
        let settings = Settings::load(None, &env).unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("super-secret-admin-token"));
        assert!(!shown.contains("link-key-value"));
        assert!(!shown.contains("private-key-body"));
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn every_setting_can_be_set_from_the_environment() {
        for name in Settings::NAMES {
            let variable = format!("OTA_{}", name.to_uppercase());
            let error = Settings::load(None, &env_of(&[(variable.as_str(), "\u{1}not a value")]));
            let is_free_text = matches!(
                *name,
                "database_url"
                    | "storage_url"
                    | "device_jwt_public_key"
                    | "device_jwt_private_key"
                    | "device_jwt_algorithm"
                    | "device_jwt_issuer"
                    | "device_jwt_audience"
                    | "log"
                    | "admin_token"
                    | "admin_tokens"
                    | "device_jwt_secret"
                    | "link_signing_key"
                    | "data_dir"
            );
            assert_eq!(error.is_ok(), is_free_text, "{variable} was not read");
        }
    }

    #[test]
    fn nonsense_values_are_refused() {
        assert!(Settings::load(None, &env_of(&[("OTA_DOWNLOAD_URL_TTL", "0")])).is_err());
        assert!(Settings::load(None, &env_of(&[("OTA_IDLE_TIMEOUT", "18446744073709551615")])).is_err());
        assert!(Settings::load(None, &env_of(&[("OTA_DOWNLOAD_URL_TTL", "9223372036854775807")])).is_err());
        assert!(Settings::load(None, &env_of(&[("OTA_PUBLIC_URL", "ftp://x")])).is_err());
        assert!(Settings::load(None, &env_of(&[("OTA_LOG_FORMAT", "xml")])).is_err());
        assert!(Settings::load(None, &env_of(&[("OTA_DOWNLOAD_REDIRECT", "cdn")])).is_err());
        for cdn in [
            "cdn.example.com/firmware",
            "ftp://cdn.example.com",
            "https://cdn.example.com/f?x=1",
            "https://",
        ] {
            assert!(
                Settings::load(None, &env_of(&[("OTA_CDN_BASE_URL", cdn)])).is_err(),
                "{cdn}"
            );
        }
        assert!(
            Settings::load(
                None,
                &env_of(&[("OTA_CDN_BASE_URL", "https://cdn.example.com/firmware")])
            )
            .is_ok()
        );
    }

    #[test]
    fn presigned_redirects_need_a_bucket() {
        let error = Settings::load(None, &env_of(&[("OTA_DOWNLOAD_REDIRECT", "presigned")])).unwrap_err();
        assert!(error.to_string().contains("s3://"), "{error}");
        let on_s3 = env_of(&[
            ("OTA_DOWNLOAD_REDIRECT", "presigned"),
            ("OTA_STORAGE_URL", "s3://firmware/ota"),
        ]);
        assert_eq!(
            Settings::load(None, &on_s3).unwrap().download_redirect,
            DownloadRedirect::Presigned
        );
    }

    #[test]
    fn uploads_to_s3_are_at_most_5_gib() {
        let too_large = env_of(&[
            ("OTA_STORAGE_URL", "s3://firmware"),
            ("OTA_MAX_UPLOAD_BYTES", "6000000000"),
        ]);
        assert!(Settings::load(None, &too_large).is_err());
    }
}
