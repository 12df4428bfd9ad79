//! Firmware bytes on the local file system, under `<root>/<device_type>/<file>`.
//!
//! An upload is written to `<root>/.incoming/<random>.part` while its SHA-256
//! is computed, flushed to disk, and renamed into place only when complete.
//! A temporary file is removed when its upload is dropped unfinished (a
//! cut-off request cancels the handler), and any left by a crash are removed
//! at start. Nothing half-written is ever visible under its final name.
//!
//! The same pass parses the bytes as an ESP-IDF app image
//! ([`ota_core::esp::ImageParser`]), so checking an upload never reads the
//! file twice; the parser's running SHA-256 is the file's hash, so the bytes
//! are not hashed twice either.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use futures_util::Stream;
use ota_core::esp::{EspImage, ImageError, ImageParser};
use ota_core::{DeviceType, FileName, Sha256Hex};
use sha2::{Digest, Sha256};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

const INCOMING: &str = ".incoming";
const READ_CHUNK: usize = 64 * 1024;

/// The firmware folder.
#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    /// Opens (creating) the folder and clears what a crash left in `.incoming`.
    pub async fn open(root: PathBuf) -> anyhow::Result<Self> {
        let incoming = root.join(INCOMING);
        tokio::fs::create_dir_all(&incoming)
            .await
            .with_context(|| format!("creating {}", incoming.display()))?;
        let mut leftovers = tokio::fs::read_dir(&incoming).await?;
        while let Some(entry) = leftovers.next_entry().await? {
            tracing::warn!(path = %entry.path().display(), "removing an unfinished upload");
            tokio::fs::remove_file(entry.path()).await.ok();
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<device_type>/<file>`, as stored in `binary_path`.
    pub fn relative_path(device_type: &DeviceType, file: &FileName) -> String {
        format!("{device_type}/{file}")
    }

    fn path_of(&self, device_type: &DeviceType, file: &FileName) -> PathBuf {
        self.root.join(device_type.as_str()).join(file.as_str())
    }

    /// Starts writing an upload under a temporary name.
    pub async fn begin_upload(&self) -> anyhow::Result<Upload> {
        let name = format!("{}.part", uuid::Uuid::new_v4());
        let path = self.root.join(INCOMING).join(name);
        let file = File::create_new(&path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Upload {
            temp: TempPath(Some(path)),
            writer: BufWriter::with_capacity(256 * 1024, file),
            parser: ImageParser::new(),
        })
    }

    /// Moves a finished upload to its final name, replacing any file there.
    pub async fn publish(
        &self,
        upload: FinishedUpload,
        device_type: &DeviceType,
        file: &FileName,
    ) -> anyhow::Result<()> {
        let dir = self.root.join(device_type.as_str());
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        let target = self.path_of(device_type, file);
        let mut temp = upload.temp;
        let source = temp.0.take().expect("a finished upload has its file");
        if let Err(e) = tokio::fs::rename(&source, &target).await {
            tokio::fs::remove_file(&source).await.ok();
            return Err(e).with_context(|| format!("moving the upload to {}", target.display()));
        }
        sync_dir(&dir).await
    }

    /// The size of a stored file, or `None` when there is none.
    pub async fn size_of(&self, device_type: &DeviceType, file: &FileName) -> anyhow::Result<Option<u64>> {
        match tokio::fs::metadata(self.path_of(device_type, file)).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("reading a firmware file's size"),
        }
    }

    /// SHA-256, size and image parse of a stored file, in one read.
    pub async fn inspect(&self, device_type: &DeviceType, file: &FileName) -> anyhow::Result<Inspected> {
        let path = self.path_of(device_type, file);
        let mut reader = File::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let mut parser = ImageParser::new();
        let mut buffer = vec![0u8; READ_CHUNK];
        loop {
            let n = reader.read(&mut buffer).await.context("reading a firmware file")?;
            if n == 0 {
                break;
            }
            parser.feed(&buffer[..n]);
        }
        let size = parser.len();
        let (image, sha256) = parser.finish_with_sha256();
        Ok(Inspected {
            sha256: Sha256Hex::from_digest(&sha256),
            size,
            image,
        })
    }

    /// `len` bytes from `start` of the file at `binary_path`, as a stream.
    pub async fn read_range(
        &self,
        binary_path: &str,
        start: u64,
        len: u64,
    ) -> anyhow::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        let path = self.root.join(binary_path);
        let mut file = File::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .context("seeking in a firmware file")?;
        }
        Ok(ReaderStream::with_capacity(file.take(len), READ_CHUNK))
    }

    /// A whole stored file in memory, with its SHA-256.
    pub async fn read_whole(&self, binary_path: &str) -> anyhow::Result<(Bytes, Sha256Hex)> {
        let path = self.root.join(binary_path);
        // Reading and hashing megabytes would hold up an async worker.
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let sha256 = Sha256Hex::from_digest(&Sha256::digest(&bytes).into());
            Ok((Bytes::from(bytes), sha256))
        })
        .await
        .context("reading a firmware file")?
    }

    /// Whether the folder is there and writable.
    pub async fn check_ready(&self) -> anyhow::Result<()> {
        let probe = self
            .root
            .join(INCOMING)
            .join(format!("ready-{}.probe", uuid::Uuid::new_v4()));
        tokio::fs::write(&probe, b"ok")
            .await
            .with_context(|| format!("writing to {}", self.root.display()))?;
        tokio::fs::remove_file(&probe)
            .await
            .context("removing the readiness probe")?;
        Ok(())
    }
}

async fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    let handle = File::open(dir)
        .await
        .with_context(|| format!("opening {}", dir.display()))?;
    handle
        .sync_all()
        .await
        .with_context(|| format!("syncing {}", dir.display()))
}

/// A temporary file that is removed when dropped, unless it was published.
#[derive(Debug)]
struct TempPath(Option<PathBuf>);

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove an unfinished upload");
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

/// An upload being written. Dropping it removes the temporary file.
#[derive(Debug)]
pub struct Upload {
    temp: TempPath,
    writer: BufWriter<File>,
    /// Parses the bytes and hashes them (the file's SHA-256).
    parser: ImageParser,
}

impl Upload {
    pub async fn write(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.parser.feed(chunk);
        self.writer.write_all(chunk).await.context("writing an upload")
    }

    pub fn size(&self) -> u64 {
        self.parser.len()
    }

    /// Flushes the bytes to disk and returns the digest.
    pub async fn finish(mut self) -> anyhow::Result<FinishedUpload> {
        self.writer.flush().await.context("flushing an upload")?;
        self.writer.get_ref().sync_all().await.context("syncing an upload")?;
        let size = self.parser.len();
        let (image, sha256) = self.parser.finish_with_sha256();
        Ok(FinishedUpload {
            temp: self.temp,
            sha256: Sha256Hex::from_digest(&sha256),
            size,
            image,
        })
    }
}

/// An upload whose bytes are on disk under a temporary name.
#[derive(Debug)]
pub struct FinishedUpload {
    temp: TempPath,
    pub sha256: Sha256Hex,
    pub size: u64,
    /// The file parsed as an ESP app image (whether its device type wants one or not).
    pub image: Result<EspImage, ImageError>,
}

#[cfg(test)]
mod tests {
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
        let blobs = Blobs::open(dir.path().to_path_buf()).await.unwrap();
        let mut upload = blobs.begin_upload().await.unwrap();
        upload.write(b"partial").await.unwrap();
        drop(upload);
        assert!(files_under(dir.path()).await.is_empty());
    }

    #[tokio::test]
    async fn a_published_upload_is_visible_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path().to_path_buf()).await.unwrap();
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
        Blobs::open(dir.path().to_path_buf()).await.unwrap();
        assert!(files_under(dir.path()).await.is_empty());
    }
}
