//! Fuzzes the ESP app image parser: any bytes, fed whole and in chunks.
//! The checks are in `fuzz/checks.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::esp_image(data));
