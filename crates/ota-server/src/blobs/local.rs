//! Firmware bytes in a local folder, under `<root>/<device_type>/<file>`.
//!
//! An upload is written to `<root>/.incoming/<random>.part`, flushed and
//! `fsync`ed, and renamed into place only when complete (same file system,
//! so the rename is atomic; the folder is `fsync`ed after it). A temporary
//! file is removed when its upload is dropped unfinished (a cut-off request
//! cancels the handler), and any left by a crash are removed at start: one
//! folder belongs to one server.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sha2::{Digest, Sha256};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use super::{INCOMING, READ_CHUNK};
use ota_core::Sha256Hex;

/// The firmware folder.
#[derive(Debug, Clone)]
pub(super) struct Folder {
    root: PathBuf,
}

impl Folder {
    /// Opens (creating) the folder and clears what a crash left in `.incoming`.
    pub(super) async fn open(root: PathBuf) -> anyhow::Result<Self> {
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

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// Starts writing an upload under a temporary name.
    pub(super) async fn begin_upload(&self) -> anyhow::Result<Sink> {
        let name = format!("{}.part", uuid::Uuid::new_v4());
        let path = self.root.join(INCOMING).join(name);
        let file = File::create_new(&path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Sink {
            temp: TempPath(Some(path)),
            writer: BufWriter::with_capacity(256 * 1024, file),
        })
    }

    /// Moves a finished upload to `binary_path`, replacing any file there.
    pub(super) async fn publish(&self, staged: Staged, binary_path: &str) -> anyhow::Result<()> {
        let target = self.root.join(binary_path);
        let dir = target.parent().context("a binary path has a folder")?.to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut temp = staged.0;
        let source = temp.0.take().context("a finished upload has its file")?;
        if let Err(e) = tokio::fs::rename(&source, &target).await {
            tokio::fs::remove_file(&source).await.ok();
            return Err(e).with_context(|| format!("moving the upload to {}", target.display()));
        }
        sync_dir(&dir).await
    }

    /// The size of a stored file, or `None` when there is none.
    pub(super) async fn size_of(&self, binary_path: &str) -> anyhow::Result<Option<u64>> {
        match tokio::fs::metadata(self.root.join(binary_path)).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("reading a firmware file's size"),
        }
    }

    /// `len` bytes from `start` of the file at `binary_path`, as a stream.
    pub(super) async fn read_range(
        &self,
        binary_path: &str,
        start: u64,
        len: u64,
    ) -> anyhow::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        let path = self.root.join(binary_path);
        let mut file = File::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .context("seeking in a firmware file")?;
        }
        Ok(ReaderStream::with_capacity(file.take(len), READ_CHUNK).boxed())
    }

    /// A whole stored file in memory, with its SHA-256.
    pub(super) async fn read_whole(&self, binary_path: &str) -> anyhow::Result<(Bytes, Sha256Hex)> {
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
    pub(super) async fn check_ready(&self) -> anyhow::Result<()> {
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

/// Where an upload's bytes go: its temporary file.
#[derive(Debug)]
pub(super) struct Sink {
    temp: TempPath,
    writer: BufWriter<File>,
}

impl Sink {
    pub(super) async fn write(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(chunk).await.context("writing an upload")
    }

    /// Flushes the bytes to disk.
    pub(super) async fn finish(mut self) -> anyhow::Result<Staged> {
        self.writer.flush().await.context("flushing an upload")?;
        self.writer.get_ref().sync_all().await.context("syncing an upload")?;
        Ok(Staged(self.temp))
    }
}

/// A finished upload's temporary file, removed when dropped unpublished.
#[derive(Debug)]
pub(super) struct Staged(TempPath);
