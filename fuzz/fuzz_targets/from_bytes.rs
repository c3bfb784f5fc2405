//! Fuzz target `from_bytes`: arbitrary bytes as a model file, through `Screener::from_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpox_fuzz::fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::from_bytes(data);
});
