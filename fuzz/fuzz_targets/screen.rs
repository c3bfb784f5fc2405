//! Fuzz target `screen`: arbitrary bytes as an encoded photo, through `Screener::screen`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mpox_fuzz::{fixture_screener, fuzzing};

static SCREENER: OnceLock<fuzzing::Screener> = OnceLock::new();

fuzz_target!(
    init: {
        SCREENER.get_or_init(fixture_screener);
    },
    |data: &[u8]| {
        let _ = fuzzing::screen(SCREENER.get_or_init(fixture_screener), data);
    }
);
