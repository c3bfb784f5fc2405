//! Fuzz target `screen_rgba`: a frame header (width, height, flags) and pixels, through
//! `Screener::screen_rgba`.
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
        let _ = fuzzing::screen_rgba(SCREENER.get_or_init(fixture_screener), data);
    }
);
