//! Firmware bytes in an S3-compatible bucket, under
//! `<prefix>/<device_type>/<file>` (`OTA_STORAGE_URL=s3://bucket/prefix`).
//!
//! # How an upload becomes visible
//!
//! The final key depends on the version, which is known only once the whole
//! image has been parsed, so the bytes cannot stream to their final key. They
//! stream instead, in the same pass as the SHA-256 and the image parse, as a
//! multipart upload to a temporary key, `<prefix>/.incoming/<uuid>.part`,
//! in parts of exactly [`PART_SIZE`] (S3 wants at least 5 MiB for every part
//! but the last; some S3-compatible stores want them equal), at most
//! [`PARTS_IN_FLIGHT`] at a time, so an upload holds about 15 MiB of memory
//! whatever its size. An unfinished multipart upload is no object: nothing
//! lists or reads it.
//!
//! Only when the upload is accepted (form checked, holding the publication
//! lock, the target not owned by any record) is the multipart upload
//! completed, the temporary object copied to `<device_type>/v<version>.bin`
//! by the store itself (CopyObject: the final key gets the whole object at
//! once, or nothing), and the temporary deleted. An upload that is cut off,
//! refused or fails before that is aborted (from `Drop` when the request is
//! cancelled), and no object was ever completed. Spooling to a local file
//! and uploading it afterwards would keep the same guarantee, but needs a
//! disk as large as the largest upload on every instance and doubles the
//! time an upload takes.
//!
//! What can be left behind: a multipart upload whose abort did not reach the
//! store (a crash, an outage), which only a bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`) removes; and, after a crash between the
//! completion and the delete, a completed temporary under `.incoming/`. At
//! start the server deletes such temporaries once they are a day old, never
//! younger ones: other instances sharing the bucket may be publishing theirs.
//!
//! CopyObject copies at most 5 GiB, so `OTA_MAX_UPLOAD_BYTES` is held to that
//! with S3 storage (see the settings' checks).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    ClientConfigKey, ClientOptions, GetOptions, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayloadMut,
    RetryConfig,
};
use ota_core::Sha256Hex;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use super::INCOMING;

/// Every part of a multipart upload but the last.
pub(super) const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts of one upload being sent at once.
pub(super) const PARTS_IN_FLIGHT: usize = 2;
/// Completed temporaries younger than this are another instance's, or soon
/// gone: they are left alone at start.
const STALE_UPLOAD: Duration = Duration::from_secs(24 * 3600);
/// How long the readiness probe may take.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call that moves no bytes through the server (complete,
/// copy, delete, head) may take: publication holds a lock every instance
/// waits for, and a bucket that stalls must not hold it for ever.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest a server-side copy is assumed to be, on top of
/// [`CONTROL_TIMEOUT`].
const COPY_BYTES_PER_SECOND: u64 = 20 << 20;
/// The largest object S3's CopyObject copies.
pub const MAX_COPY_BYTES: u64 = 5 << 30;

/// `s3://bucket/prefix?option=value`: the bucket, the key prefix, and
/// settings of the S3 client that override the `AWS_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    prefix: String,
    options: Vec<(String, String)>,
}

impl BucketUrl {
    /// Parses `s3://bucket[/prefix][?key=value&...]`. The options are the
    /// keys `AWS_*` variables have, lower-cased, with or without `aws_`
    /// (`endpoint`, `region`, `allow_http`, `virtual_hosted_style_request`…);
    /// credentials are refused there, since the URL is shown in logs.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(raw).map_err(|e| anyhow::anyhow!("OTA_STORAGE_URL is not a URL: {e}"))?;
        if url.scheme() != "s3" {
            bail!("OTA_STORAGE_URL: expected s3://bucket/prefix");
        }
        let bucket = url.host_str().unwrap_or_default().to_owned();
        if bucket.is_empty() || url.port().is_some() || !url.username().is_empty() || url.password().is_some() {
            bail!(
                "OTA_STORAGE_URL: expected s3://bucket/prefix (credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            );
        }
        if url.fragment().is_some() {
            bail!("OTA_STORAGE_URL: a bucket URL has no #fragment");
        }
        // The URL parser resolves `.` and `..` away; refuse them instead.
        let written_path = raw.split(['?', '#']).next().unwrap_or_default();
        if written_path.split('/').any(|segment| segment == "." || segment == "..") {
            bail!("OTA_STORAGE_URL: the prefix may not have '.' or '..' segments");
        }
        let prefix = url.path().trim_matches('/').to_owned();
        let valid_segment = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !prefix.is_empty() && !prefix.split('/').all(valid_segment) {
            bail!(
                "OTA_STORAGE_URL: the prefix '{prefix}' may only have letters, digits, '.', '_' and '-' between its '/'"
            );
        }
        let mut options = Vec::new();
        for (key, value) in url.query_pairs() {
            let key = key.to_ascii_lowercase();
            let parsed: AmazonS3ConfigKey = key
                .parse()
                .map_err(|_| anyhow::anyhow!("OTA_STORAGE_URL: unknown S3 option '{key}'"))?;
            if matches!(
                parsed,
                AmazonS3ConfigKey::AccessKeyId
                    | AmazonS3ConfigKey::SecretAccessKey
                    | AmazonS3ConfigKey::Token
                    | AmazonS3ConfigKey::Bucket
            ) {
                bail!(
                    "OTA_STORAGE_URL: '{key}' cannot be given in the URL (credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                );
            }
            options.push((key, value.into_owned()));
        }
        Ok(Self {
            bucket,
            prefix,
            options,
        })
    }

    /// The key of a path under the prefix.
    fn key(&self, relative: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(relative)
        } else {
            Path::from(format!("{}/{relative}", self.prefix))
        }
    }
}

impl std::fmt::Display for BucketUrl {
    /// `s3://bucket/prefix`, without the options.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// The bucket (or the prefix of one) that holds the firmware.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    s3: Arc<AmazonS3>,
    url: BucketUrl,
}

impl Bucket {
    /// Builds the client from `AWS_*` variables (as object_store's
    /// `AmazonS3Builder::from_env` reads them) and the URL's options, and
    /// starts removing stale temporaries in the background. Nothing here
    /// needs the bucket to answer: a store that is down makes `/readyz` say
    /// so, not the server fail to start.
    pub(super) fn open(url: BucketUrl) -> anyhow::Result<Self> {
        let env =
            std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
        let s3 = client(&url, env)?;
        let bucket = Self { s3: Arc::new(s3), url };
        tokio::spawn(bucket.clone().remove_stale_uploads());
        Ok(bucket)
    }

    pub(super) fn url(&self) -> &BucketUrl {
        &self.url
    }

    async fn remove_stale_uploads(self) {
        let incoming = self.url.key(INCOMING);
        let cutoff = chrono::Utc::now() - STALE_UPLOAD;
        let mut listed = self.s3.list(Some(&incoming));
        let mut removed = 0;
        while let Some(meta) = listed.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for unfinished uploads in the bucket");
                    return;
                }
            };
            if meta.last_modified < cutoff {
                tracing::warn!(key = %meta.location, "removing an unfinished upload");
                match self.s3.delete(&meta.location).await {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(key = %meta.location, error = %e, "could not remove an unfinished upload"),
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed unfinished uploads older than a day");
        }
    }

    /// Starts a multipart upload to a temporary key.
    pub(super) async fn begin_upload(&self) -> anyhow::Result<Sink> {
        let temp = self.url.key(&format!("{INCOMING}/{}.part", uuid::Uuid::new_v4()));
        let upload = self
            .s3
            .put_multipart(&temp)
            .await
            .with_context(|| format!("starting an upload to {}", self.url))?;
        Ok(Sink {
            upload: Some(upload),
            temp,
            buffer: PutPayloadMut::new(),
            in_flight: JoinSet::new(),
            parts: 0,
        })
    }

    /// Completes a staged upload and copies it to `binary_path`, replacing
    /// any object there; the temporary is deleted either way.
    pub(super) async fn publish(&self, staged: Staged, binary_path: &str) -> anyhow::Result<()> {
        let mut sink = staged.0;
        sink.complete().await?;
        let target = self.url.key(binary_path);
        let size = (sink.parts * PART_SIZE) as u64;
        let copy_limit = CONTROL_TIMEOUT + Duration::from_secs(size / COPY_BYTES_PER_SECOND);
        let copied = bounded(
            "copying an upload into place",
            copy_limit,
            self.s3.copy(&sink.temp, &target),
        )
        .await
        .with_context(|| format!("copying the upload to {target}"));
        if let Err(e) = bounded(
            "deleting an upload's temporary",
            CONTROL_TIMEOUT,
            self.s3.delete(&sink.temp),
        )
        .await
        {
            tracing::warn!(key = %sink.temp, error = %e, "could not delete a published upload's temporary");
        }
        copied
    }

    /// The size of a stored object, or `None` when there is none.
    pub(super) async fn size_of(&self, binary_path: &str) -> anyhow::Result<Option<u64>> {
        match tokio::time::timeout(CONTROL_TIMEOUT, self.s3.head(&self.url.key(binary_path)))
            .await
            .map_err(|_| anyhow::anyhow!("the bucket did not answer within {} s", CONTROL_TIMEOUT.as_secs()))?
        {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).context("reading a firmware object's size"),
        }
    }

    /// `len` bytes from `start` of the object at `binary_path`, as a stream.
    pub(super) async fn read_range(
        &self,
        binary_path: &str,
        start: u64,
        len: u64,
    ) -> anyhow::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        let whole = start == 0 && len == u64::MAX;
        let options = GetOptions {
            range: (!whole).then(|| (start..start.saturating_add(len)).into()),
            ..GetOptions::default()
        };
        let got = self
            .s3
            .get_opts(&self.url.key(binary_path), options)
            .await
            .with_context(|| format!("reading {binary_path} from {}", self.url))?;
        Ok(got
            .into_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other))
            .boxed())
    }

    /// A whole stored object in memory, with its SHA-256.
    pub(super) async fn read_whole(&self, binary_path: &str) -> anyhow::Result<(Bytes, Sha256Hex)> {
        let bytes = self
            .s3
            .get(&self.url.key(binary_path))
            .await
            .with_context(|| format!("reading {binary_path} from {}", self.url))?
            .bytes()
            .await
            .with_context(|| format!("reading {binary_path} from {}", self.url))?;
        // Hashing megabytes would hold up an async worker.
        tokio::task::spawn_blocking(move || {
            let sha256 = Sha256Hex::from_digest(&Sha256::digest(&bytes).into());
            (bytes, sha256)
        })
        .await
        .context("hashing a firmware object")
    }

    /// Whether the bucket answers and takes writes: puts and deletes a
    /// probe object under `.incoming/`.
    pub(super) async fn check_ready(&self) -> anyhow::Result<()> {
        let probe = self
            .url
            .key(&format!("{INCOMING}/ready-{}.probe", uuid::Uuid::new_v4()));
        let put_and_delete = async {
            self.s3
                .put(&probe, Bytes::from_static(b"ok").into())
                .await
                .with_context(|| format!("writing to {}", self.url))?;
            self.s3.delete(&probe).await.context("removing the readiness probe")
        };
        tokio::time::timeout(READY_TIMEOUT, put_and_delete)
            .await
            .with_context(|| format!("{} did not answer within {READY_TIMEOUT:?}", self.url))?
    }

    /// A URL that lets its holder GET the object at `binary_path` for `ttl`
    /// without credentials.
    pub(super) async fn presigned_get(&self, binary_path: &str, ttl: Duration) -> anyhow::Result<url::Url> {
        self.s3
            .signed_url(axum::http::Method::GET, &self.url.key(binary_path), ttl)
            .await
            .context("presigning a download")
    }
}

/// The S3 client: our defaults, then every `AWS_*` variable (as
/// `AmazonS3Builder::from_env` would read them), then the URL's options.
fn client(url: &BucketUrl, env: impl Iterator<Item = (String, String)>) -> anyhow::Result<AmazonS3> {
    // No overall request timeout: a download streams from the bucket at the
    // device's pace. A connection that stalls is closed by OTA_IDLE_TIMEOUT
    // on the device's side, which drops the read.
    let mut builder = AmazonS3Builder::new()
        .with_client_options(
            ClientOptions::new()
                .with_timeout_disabled()
                .with_connect_timeout(Duration::from_secs(5)),
        )
        .with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
            ..RetryConfig::default()
        });
    for (name, value) in env {
        if name.starts_with("AWS_")
            && let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
        {
            builder = builder.with_config(key, value);
        }
    }
    for (name, value) in &url.options {
        let key = name.parse().context("an S3 option checked when parsed")?;
        builder = builder.with_config(key, value);
    }
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    let allow_http = builder
        .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if let Some(endpoint) = endpoint
        && endpoint.starts_with("http://")
        && !allow_http
    {
        bail!("the S3 endpoint {endpoint} is plain http: set AWS_ALLOW_HTTP=true to allow that");
    }
    builder
        .with_bucket_name(&url.bucket)
        .build()
        .with_context(|| format!("configuring the S3 client for {url}"))
}

/// `call`, or an error once `limit` has passed without its answer.
async fn bounded<T>(
    what: &str,
    limit: Duration,
    call: impl std::future::Future<Output = object_store::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(answer) => Ok(answer?),
        Err(_) => bail!("{what}: the bucket did not answer within {} s", limit.as_secs()),
    }
}

/// Where an upload's bytes go: a multipart upload to a temporary key,
/// aborted when dropped before it was completed.
pub(super) struct Sink {
    /// `None` once completed or aborted.
    upload: Option<Box<dyn MultipartUpload>>,
    temp: Path,
    /// The next part, up to [`PART_SIZE`].
    buffer: PutPayloadMut,
    in_flight: JoinSet<object_store::Result<()>>,
    parts: usize,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("temp", &self.temp)
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

impl Sink {
    pub(super) async fn write(&mut self, mut chunk: &[u8]) -> anyhow::Result<()> {
        while !chunk.is_empty() {
            let room = PART_SIZE - self.buffer.content_length();
            let (now, later) = chunk.split_at(room.min(chunk.len()));
            self.buffer.extend_from_slice(now);
            chunk = later;
            if self.buffer.content_length() == PART_SIZE {
                self.send_part(PARTS_IN_FLIGHT).await?;
            }
        }
        Ok(())
    }

    /// Sends the buffer as the next part, then waits until at most
    /// `in_flight` parts are on their way.
    async fn send_part(&mut self, in_flight: usize) -> anyhow::Result<()> {
        let payload = std::mem::take(&mut self.buffer).freeze();
        let upload = self.upload.as_mut().context("the upload was already completed")?;
        self.in_flight.spawn(upload.put_part(payload));
        self.parts += 1;
        while self.in_flight.len() > in_flight {
            match self.in_flight.join_next().await {
                Some(sent) => sent
                    .context("sending a part of an upload")?
                    .context("sending a part of an upload")?,
                None => break,
            }
        }
        Ok(())
    }

    /// Sends what is left: every byte is then in the bucket, in parts.
    pub(super) async fn finish(mut self) -> anyhow::Result<Staged> {
        if !self.buffer.is_empty() || self.parts == 0 {
            self.send_part(0).await?;
        } else {
            while let Some(sent) = self.in_flight.join_next().await {
                sent.context("sending a part of an upload")?
                    .context("sending a part of an upload")?;
            }
        }
        Ok(Staged(self))
    }

    /// Makes the parts one object at the temporary key.
    async fn complete(&mut self) -> anyhow::Result<()> {
        let upload = self.upload.as_mut().context("the upload was already completed")?;
        bounded("completing an upload", CONTROL_TIMEOUT, upload.complete())
            .await
            .context("completing an upload")?;
        self.upload = None;
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        self.in_flight.abort_all();
        let temp = self.temp.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(key = %temp, error = %e, "could not abort an unfinished upload");
                }
            });
        }
    }
}

/// A finished upload: all its parts are in the bucket, not yet an object.
#[derive(Debug)]
pub(super) struct Staged(Sink);

#[cfg(test)]
mod tests {

    #[tokio::test]
    async fn a_bucket_that_never_answers_is_an_error_once_the_limit_passes() {
        let never = std::future::pending::<object_store::Result<()>>();
        let started = std::time::Instant::now();
        let error = bounded("completing an upload", Duration::from_millis(50), never)
            .await
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(
            error.starts_with("completing an upload: the bucket did not answer within"),
            "{error}"
        );
        let answered = bounded("deleting", Duration::from_secs(60), async { Ok(7) })
            .await
            .unwrap();
        assert_eq!(answered, 7);
    }

    use super::*;

    #[test]
    fn a_bucket_url_has_a_bucket_a_prefix_and_options() {
        let url = BucketUrl::parse("s3://firmware/ota/prod?endpoint=http://127.0.0.1:9000&allow_http=true").unwrap();
        assert_eq!(url.bucket, "firmware");
        assert_eq!(url.key("a/v1.0.0.bin").as_ref(), "ota/prod/a/v1.0.0.bin");
        assert_eq!(url.options.len(), 2);
        assert_eq!(url.to_string(), "s3://firmware/ota/prod");
        let root = BucketUrl::parse("s3://firmware").unwrap();
        assert_eq!(root.key("a/v1.0.0.bin").as_ref(), "a/v1.0.0.bin");
    }

    #[test]
    fn credentials_and_odd_prefixes_are_refused_in_a_bucket_url() {
        for refused in [
            "s3://firmware?secret_access_key=x",
            "s3://firmware?aws_access_key_id=x",
            "s3://key:secret@firmware/x",
            "s3://firmware/a//b",
            "s3://firmware/a/../b",
            "s3://firmware/a b",
            "s3://firmware?no_such_option=1",
            "s3:///prefix",
        ] {
            assert!(BucketUrl::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_plain_http_endpoint_needs_allow_http() {
        let url = BucketUrl::parse("s3://firmware?endpoint=http://127.0.0.1:1").unwrap();
        let error = client(&url, std::iter::empty()).unwrap_err();
        assert!(error.to_string().contains("AWS_ALLOW_HTTP"), "{error}");
        let env = [("AWS_ALLOW_HTTP".to_owned(), "true".to_owned())];
        assert!(client(&url, env.into_iter()).is_ok());
    }
}
