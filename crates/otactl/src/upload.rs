//! Streams a file to `POST /api/ota/admin/upload`: read in pieces, hashed
//! as it goes, never held whole in memory, with a progress bar only when
//! stderr is a terminal.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::Api;
use crate::failure::{Failure, Result};

/// What was sent: its length and SHA-256, computed while sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub size: u64,
    pub sha256: String,
}

/// Uploads `path` with the form's text `fields` first and the file last,
/// and checks the server's `file_size` and `file_hash` against what was sent.
pub fn upload(api: &Api, path: &Path, fields: &[(&'static str, String)], progress: bool) -> Result<(Value, Sent)> {
    let (file, size) = open_file(path)?;
    let counted = Arc::new(Mutex::new(Counted::default()));
    let bar = (progress && std::io::stderr().is_terminal()).then(|| progress_bar(size));
    let reader = HashingReader {
        inner: file,
        expected: size,
        counted: Arc::clone(&counted),
        bar: bar.clone(),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("firmware.bin")
        .to_owned();
    let part = Part::reader_with_length(reader, size)
        .file_name(name)
        .mime_str("application/octet-stream")
        .map_err(|e| Failure::failed(format!("cannot build the upload: {e}")))?;
    let mut form = Form::new();
    for (key, value) in fields {
        form = form.text(*key, value.clone());
    }
    let form = form.part("file", part);

    let answer = api.send(api.admin(Method::POST, "/api/ota/admin/upload")?.multipart(form));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let mut counted = counted
        .lock()
        .map_err(|_| Failure::failed("the upload's hash was lost"))?;
    // A file that changed under us breaks the request; say that, not
    // "cannot be reached".
    if let Some(change) = counted.changed {
        return Err(Failure::failed(format!(
            "{} {change} while it was uploaded ({size} bytes when it started); the server kept nothing",
            path.display()
        )));
    }
    let answer = answer?;
    let sent = counted.finish();
    if sent.size != size {
        return Err(Failure::failed(format!(
            "{} changed while it was uploaded ({size} bytes before, {} sent)",
            path.display(),
            sent.size
        )));
    }
    check_answer(&answer, &sent)?;
    Ok((answer, sent))
}

/// SHA-256 and size of a local file, read in pieces.
pub fn hash_file(path: &Path) -> Result<Sent> {
    let (mut file, _) = open_file(path)?;
    let mut counted = Counted::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| Failure::failed(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            return Ok(counted.finish());
        }
        counted.add(&buffer[..n]);
    }
}

/// A usage error unless `path` is a readable, non-empty file.
pub fn check_file(path: &Path) -> Result<()> {
    open_file(path).map(|_| ())
}

fn open_file(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(Failure::usage(format!("{} is not a file", path.display())));
    }
    if meta.len() == 0 {
        return Err(Failure::usage(format!("{} is empty", path.display())));
    }
    Ok((file, meta.len()))
}

/// The server must have stored exactly the bytes we sent.
fn check_answer(answer: &Value, sent: &Sent) -> Result<()> {
    let hash = answer["file_hash"].as_str().unwrap_or_default();
    if !hash.eq_ignore_ascii_case(&sent.sha256) {
        return Err(Failure::failed(format!(
            "the server stored a file with SHA-256 {hash}, but the file sent has {}: it was not registered",
            sent.sha256
        )));
    }
    if answer["file_size"].as_u64() != Some(sent.size) {
        return Err(Failure::failed(format!(
            "the server stored {} bytes, but {} were sent",
            answer["file_size"], sent.size
        )));
    }
    Ok(())
}

#[derive(Default)]
struct Counted {
    hasher: Sha256,
    size: u64,
    /// Set when the file grew or shrank while it was read.
    changed: Option<&'static str>,
}

impl Counted {
    fn add(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    fn finish(&mut self) -> Sent {
        Sent {
            size: self.size,
            sha256: hex::encode(std::mem::take(&mut self.hasher).finalize()),
        }
    }
}

/// Hashes and counts what the HTTP client reads from the file, and fails
/// the read when the file turns out longer or shorter than announced.
struct HashingReader<R> {
    inner: R,
    expected: u64,
    counted: Arc<Mutex<Counted>>,
    bar: Option<ProgressBar>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut counted = self
            .counted
            .lock()
            .map_err(|_| std::io::Error::other("hash state poisoned"))?;
        if n == 0 && counted.size < self.expected {
            counted.changed = Some("shrank");
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank",
            ));
        }
        if counted.size + n as u64 > self.expected {
            counted.changed = Some("grew");
            return Err(std::io::Error::other("the file grew"));
        }
        counted.add(&buf[..n]);
        drop(counted);
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
        Ok(n)
    }
}

fn progress_bar(size: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "uploading {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_in_pieces_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.bin");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let sent = hash_file(&path).unwrap();
        assert_eq!(sent.size, 200_000);
        assert_eq!(sent.sha256, hex::encode(Sha256::digest(&bytes)));
    }

    #[test]
    fn missing_and_empty_files_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(hash_file(&dir.path().join("nope.bin")).unwrap_err().exit_code(), 2);
        std::fs::write(dir.path().join("empty.bin"), b"").unwrap();
        assert_eq!(hash_file(&dir.path().join("empty.bin")).unwrap_err().exit_code(), 2);
        assert_eq!(hash_file(dir.path()).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn a_file_that_grows_or_shrinks_while_read_fails_the_read() {
        for (actual, expected, change) in [(10usize, 20u64, "shrank"), (30, 20, "grew")] {
            let counted = Arc::new(Mutex::new(Counted::default()));
            let mut reader = HashingReader {
                inner: std::io::Cursor::new(vec![7u8; actual]),
                expected,
                counted: Arc::clone(&counted),
                bar: None,
            };
            let mut sink = Vec::new();
            assert!(std::io::copy(&mut reader, &mut sink).is_err(), "{change}");
            assert_eq!(counted.lock().unwrap().changed, Some(change));
        }
        let counted = Arc::new(Mutex::new(Counted::default()));
        let mut exact = HashingReader {
            inner: std::io::Cursor::new(vec![7u8; 20]),
            expected: 20,
            counted: Arc::clone(&counted),
            bar: None,
        };
        assert_eq!(std::io::copy(&mut exact, &mut Vec::new()).unwrap(), 20);
        assert_eq!(counted.lock().unwrap().changed, None);
    }

    #[test]
    fn an_answer_with_another_hash_is_a_failure() {
        let sent = Sent {
            size: 3,
            sha256: "ab".repeat(32),
        };
        let good = serde_json::json!({"file_hash": "AB".repeat(32), "file_size": 3});
        assert!(check_answer(&good, &sent).is_ok());
        let other = serde_json::json!({"file_hash": "cd".repeat(32), "file_size": 3});
        assert_eq!(check_answer(&other, &sent).unwrap_err().exit_code(), 1);
        let short = serde_json::json!({"file_hash": "ab".repeat(32), "file_size": 2});
        assert!(check_answer(&short, &sent).is_err());
    }
}
