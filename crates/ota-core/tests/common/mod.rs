//! esptool, the reference our ESP image parser is held against: running it,
//! reading its reports, comparing them with our parser's answers.

mod compare;
mod esptool;
mod image_info;

use std::path::{Path, PathBuf};

pub use compare::{Diffs, compare};
pub use esptool::{Esptool, text};
pub use image_info::ImageInfo;

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write image");
    path
}

/// Runs `f` on every item, each on its own thread: esptool starts slowly.
pub fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(|| f(item))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

pub fn assert_no_mismatch(mismatches: Vec<String>) {
    assert!(
        mismatches.is_empty(),
        "{} disagreement(s):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
