//! Fuzz target `metadata`: `key=value` lines as a model's `metadata_props`, through
//! `ModelMeta::from_props` (and back through `to_props`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpox_fuzz::fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::metadata(data);
});
