//! Fuzz target `signed_model`: arbitrary bytes as a model file, through `Screener::from_bytes`
//! with one trusted signing key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpox_fuzz::fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::signed_model(data);
});
