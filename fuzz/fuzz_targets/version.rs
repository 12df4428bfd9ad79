//! Fuzzes version parsing (`Version::parse`, `Version::from_app_descriptor`)
//! and chip revision and chip names. The checks are in `fuzz/checks.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::version(data));
