//! Firmware bytes, under `<device_type>/<file>`: in a local folder by
//! default ([`local`]), or in an S3-compatible bucket when `OTA_STORAGE_URL`
//! is `s3://bucket/prefix` ([`s3`]).
//!
//! Either way an upload streams to a temporary name while its SHA-256 is
//! computed, and appears under its final name only when complete (an atomic
//! rename of an `fsync`ed file; a completed multipart upload copied into
//! place). An upload that is cut off, refused or fails leaves nothing under
//! a final name.
//!
//! The same pass parses the bytes as an ESP-IDF app image
//! ([`ota_core::esp::ImageParser`]), so checking an upload never reads the
//! file twice; the parser's running SHA-256 is the file's hash, so the bytes
//! are not hashed twice either.

mod local;
pub mod s3;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use ota_core::esp::{EspImage, ImageError, ImageParser};
use ota_core::{DeviceType, FileName, Sha256Hex};

use self::s3::BucketUrl;

/// Temporaries (uploads being written, readiness probes) live under this
/// folder or key prefix; no device type can be named so.
const INCOMING: &str = ".incoming";
const READ_CHUNK: usize = 64 * 1024;

/// Where firmware bytes live, from `OTA_STORAGE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    /// `file:///path`, a plain path, or nothing (`<data_dir>/firmware`).
    Folder(PathBuf),
    /// `s3://bucket/prefix`.
    Bucket(BucketUrl),
}

impl StorageLocation {
    pub fn parse(storage_url: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        match storage_url {
            None => Ok(Self::Folder(data_dir.join("firmware"))),
            Some(url) if url.starts_with("file://") => Ok(Self::Folder(url.trim_start_matches("file://").into())),
            Some(url) if url.starts_with("s3://") => Ok(Self::Bucket(BucketUrl::parse(url)?)),
            Some(url) if url.contains("://") => {
                anyhow::bail!(
                    "OTA_STORAGE_URL '{}': firmware is stored in a folder (file:// or a path) or an S3-compatible bucket (s3://bucket/prefix)",
                    crate::store::redacted(url)
                )
            }
            Some(path) => Ok(Self::Folder(path.into())),
        }
    }
}

/// The firmware store.
#[derive(Debug, Clone)]
pub struct Blobs {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Local(local::Folder),
    S3(s3::Bucket),
}

impl Blobs {
    /// Opens the store. A folder is created, and what a crash left in its
    /// `.incoming` removed; a bucket is not contacted (see [`s3::Bucket::open`]).
    pub async fn open(location: StorageLocation) -> anyhow::Result<Self> {
        let backend = match location {
            StorageLocation::Folder(root) => Backend::Local(local::Folder::open(root).await?),
            StorageLocation::Bucket(url) => Backend::S3(s3::Bucket::open(url)?),
        };
        Ok(Self { backend })
    }

    /// The folder or the bucket and prefix, for logs.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(folder) => folder.root().display().to_string(),
            Backend::S3(bucket) => bucket.url().to_string(),
        }
    }

    /// `<device_type>/<file>`, as stored in `binary_path`.
    pub fn relative_path(device_type: &DeviceType, file: &FileName) -> String {
        format!("{device_type}/{file}")
    }

    /// Starts writing an upload under a temporary name.
    pub async fn begin_upload(&self) -> anyhow::Result<Upload> {
        let sink = match &self.backend {
            Backend::Local(folder) => Sink::Local(folder.begin_upload().await?),
            Backend::S3(bucket) => Sink::S3(bucket.begin_upload().await?),
        };
        Ok(Upload {
            sink,
            parser: ImageParser::new(),
        })
    }

    /// Moves a finished upload to its final name, replacing any file there
    /// (the caller makes sure no record owns it).
    pub async fn publish(
        &self,
        upload: FinishedUpload,
        device_type: &DeviceType,
        file: &FileName,
    ) -> anyhow::Result<()> {
        let binary_path = Self::relative_path(device_type, file);
        match (&self.backend, upload.staged) {
            (Backend::Local(folder), Staged::Local(staged)) => folder.publish(staged, &binary_path).await,
            (Backend::S3(bucket), Staged::S3(staged)) => bucket.publish(staged, &binary_path).await,
            _ => anyhow::bail!("an upload was published to another store than it was written to"),
        }
    }

    /// The size of a stored file, or `None` when there is none.
    pub async fn size_of(&self, device_type: &DeviceType, file: &FileName) -> anyhow::Result<Option<u64>> {
        let binary_path = Self::relative_path(device_type, file);
        match &self.backend {
            Backend::Local(folder) => folder.size_of(&binary_path).await,
            Backend::S3(bucket) => bucket.size_of(&binary_path).await,
        }
    }

    /// SHA-256, size and image parse of a stored file, in one read.
    pub async fn inspect(&self, device_type: &DeviceType, file: &FileName) -> anyhow::Result<Inspected> {
        let binary_path = Self::relative_path(device_type, file);
        let mut stream = self.read_range(&binary_path, 0, u64::MAX).await?;
        let mut parser = ImageParser::new();
        while let Some(chunk) = stream.next().await {
            parser.feed(&chunk.context("reading a firmware file")?);
        }
        let size = parser.len();
        let (image, sha256) = parser.finish_with_sha256();
        Ok(Inspected {
            sha256: Sha256Hex::from_digest(&sha256),
            size,
            image,
        })
    }

    /// `len` bytes from `start` of the file at `binary_path`, as a stream
    /// (fewer when the file ends first).
    pub async fn read_range(
        &self,
        binary_path: &str,
        start: u64,
        len: u64,
    ) -> anyhow::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        let stream: BoxStream<'static, std::io::Result<Bytes>> = match &self.backend {
            Backend::Local(folder) => folder.read_range(binary_path, start, len).await?,
            Backend::S3(bucket) => bucket.read_range(binary_path, start, len).await?,
        };
        Ok(stream)
    }

    /// A whole stored file in memory, with its SHA-256.
    pub async fn read_whole(&self, binary_path: &str) -> anyhow::Result<(Bytes, Sha256Hex)> {
        match &self.backend {
            Backend::Local(folder) => folder.read_whole(binary_path).await,
            Backend::S3(bucket) => bucket.read_whole(binary_path).await,
        }
    }

    /// Whether the store is there and takes writes.
    pub async fn check_ready(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Local(folder) => folder.check_ready().await,
            Backend::S3(bucket) => bucket.check_ready().await,
        }
    }

    /// A URL that lets its holder GET `binary_path` straight from the store
    /// for `ttl`; `None` when the store is a folder.
    pub async fn presigned_get(&self, binary_path: &str, ttl: Duration) -> anyhow::Result<Option<url::Url>> {
        match &self.backend {
            Backend::Local(_) => Ok(None),
            Backend::S3(bucket) => bucket.presigned_get(binary_path, ttl).await.map(Some),
        }
    }
}

/// What a stored file is: digest, size, and what it parses as.
#[derive(Debug)]
pub struct Inspected {
    pub sha256: Sha256Hex,
    pub size: u64,
    pub image: Result<EspImage, ImageError>,
}

#[derive(Debug)]
enum Sink {
    Local(local::Sink),
    S3(s3::Sink),
}

#[derive(Debug)]
enum Staged {
    Local(local::Staged),
    S3(s3::Staged),
}

/// An upload being written. Dropping it removes what was written.
#[derive(Debug)]
pub struct Upload {
    sink: Sink,
    /// Parses the bytes and hashes them (the file's SHA-256).
    parser: ImageParser,
}

impl Upload {
    pub async fn write(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.parser.feed(chunk);
        match &mut self.sink {
            Sink::Local(sink) => sink.write(chunk).await,
            Sink::S3(sink) => sink.write(chunk).await,
        }
    }

    pub fn size(&self) -> u64 {
        self.parser.len()
    }

    /// Makes the bytes durable under the temporary name and returns the digest.
    pub async fn finish(self) -> anyhow::Result<FinishedUpload> {
        let staged = match self.sink {
            Sink::Local(sink) => Staged::Local(sink.finish().await?),
            Sink::S3(sink) => Staged::S3(sink.finish().await?),
        };
        let size = self.parser.len();
        let (image, sha256) = self.parser.finish_with_sha256();
        Ok(FinishedUpload {
            staged,
            sha256: Sha256Hex::from_digest(&sha256),
            size,
            image,
        })
    }
}

/// An upload whose bytes are stored under a temporary name. Dropping it
/// removes them.
#[derive(Debug)]
pub struct FinishedUpload {
    staged: Staged,
    pub sha256: Sha256Hex,
    pub size: u64,
    /// The file parsed as an ESP app image (whether its device type wants one or not).
    pub image: Result<EspImage, ImageError>,
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    async fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries = tokio::fs::read_dir(&dir).await.unwrap();
            while let Some(entry) = entries.next_entry().await.unwrap() {
                if entry.file_type().await.unwrap().is_dir() {
                    stack.push(entry.path());
                } else {
                    found.push(entry.path());
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn a_dropped_upload_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(StorageLocation::Folder(dir.path().to_path_buf()))
            .await
            .unwrap();
        let mut upload = blobs.begin_upload().await.unwrap();
        upload.write(b"partial").await.unwrap();
        drop(upload);
        assert!(files_under(dir.path()).await.is_empty());
    }

    #[tokio::test]
    async fn a_published_upload_is_visible_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(StorageLocation::Folder(dir.path().to_path_buf()))
            .await
            .unwrap();
        let mut upload = blobs.begin_upload().await.unwrap();
        upload.write(b"hello ").await.unwrap();
        upload.write(b"world").await.unwrap();
        let finished = upload.finish().await.unwrap();
        let device_type = DeviceType::parse("scales_bridge_tab5").unwrap();
        let file = FileName::parse("v1.0.0.bin").unwrap();
        let expected = Sha256Hex::from_digest(&Sha256::digest(b"hello world").into());
        assert_eq!(finished.sha256, expected);
        blobs.publish(finished, &device_type, &file).await.unwrap();
        let inspected = blobs.inspect(&device_type, &file).await.unwrap();
        assert_eq!((inspected.sha256, inspected.size), (expected, 11));
        assert!(inspected.image.is_err(), "'hello world' is no ESP image");
        assert_eq!(
            files_under(dir.path()).await,
            vec![dir.path().join("scales_bridge_tab5/v1.0.0.bin")]
        );
    }

    #[tokio::test]
    async fn leftovers_of_a_crash_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(INCOMING)).unwrap();
        std::fs::write(dir.path().join(INCOMING).join("x.part"), b"half").unwrap();
        Blobs::open(StorageLocation::Folder(dir.path().to_path_buf()))
            .await
            .unwrap();
        assert!(files_under(dir.path()).await.is_empty());
    }
}
