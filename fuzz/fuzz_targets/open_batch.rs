//! Fuzz target for the batch decoder: `cargo +nightly fuzz run open_batch`.
//!
//! The whole check lives in `tributary_batch::fuzzing::check_open_batch` (compiled under the
//! `fuzzing` cfg that cargo-fuzz sets), so the property tests of `cargo test -p
//! tributary-batch` run exactly what this target runs: no panic, no payload over the limit,
//! nothing unauthenticated decompressed, nothing but an untouched sealed batch opened.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tributary_batch::fuzzing::check_open_batch(data);
});
