//! Fuzz target for the binlog event decoder, seeded with the binlog recorded from MariaDB 10.11
//! that the property tests replay:
//!
//! ```sh
//! mkdir -p corpus/binlog_events && cp ../crates/capture/src/fixtures/*.binlog corpus/binlog_events/
//! cargo +nightly fuzz run binlog_events
//! ```
//!
//! The input is read as a binlog file; the whole check lives in
//! `tributary_capture::event_fuzzing::check_binlog` (compiled under the `fuzzing` cfg that
//! cargo-fuzz sets), so the property tests of `cargo test -p tributary-capture` run exactly
//! what this target runs: the event reader, the transaction assembler, annotation and the
//! payload's JSON, with no panic in Tributary's code and no event with a stale checksum
//! decoded.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tributary_capture::event_fuzzing::check_binlog(data);
});
