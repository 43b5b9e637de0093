//! Property tests of the batch decoder: the fuzz target's contract
//! ([`crate::fuzzing`]) run for a fixed number of cases on every test run,
//! with inputs shaped to reach each stage of `open` (random bytes, valid
//! headers in front of random bytes, edited sealed batches, header fields
//! changed one at a time, arbitrary bytes behind a valid tag).

use proptest::prelude::*;

use crate::envelope::{open_with_limit, seal};
use crate::frame;
use crate::fuzzing::{self, ACTIVE_KEY_ID, FUZZ_PAYLOAD_LIMIT, fixture};
use crate::header::BatchHeader;
use crate::payload;

/// Cases per property: fixed, so a test run costs the same every time.
const CASES: u32 = 2000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // Failures print the minimal input; nothing is written to the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn sealed(payload: &[u8]) -> (BatchHeader, Vec<u8>) {
    let header = BatchHeader::new(fuzzing::SITE, ACTIVE_KEY_ID, 3, 41, 2);
    let batch = seal(&header, payload, &fixture().active).expect("fixture seals");
    (header, batch)
}

/// The fixed part of a sealed batch's header: where each field sits.
struct Layout {
    key_id: std::ops::Range<usize>,
    epoch: std::ops::Range<usize>,
    sequence: std::ops::Range<usize>,
    row_count: std::ops::Range<usize>,
    nonce: std::ops::Range<usize>,
    ciphertext_length: std::ops::Range<usize>,
}

fn layout(batch: &[u8]) -> Layout {
    let site_end = 6 + usize::from(batch[5]);
    let key_id = site_end + 1..site_end + 1 + usize::from(batch[site_end]);
    let epoch = key_id.end..key_id.end + 8;
    let sequence = epoch.end..epoch.end + 8;
    let row_count = sequence.end..sequence.end + 4;
    let nonce = row_count.end..row_count.end + frame::NONCE_LEN;
    let ciphertext_length = nonce.end..nonce.end + 8;
    Layout {
        key_id,
        epoch,
        sequence,
        row_count,
        nonce,
        ciphertext_length,
    }
}

/// One change to one header field, and the rejection reason it must cause.
#[derive(Debug, Clone)]
enum FieldChange {
    Version(u8),
    KeyId(&'static str, &'static str),
    Epoch(u64),
    Sequence(u64),
    RowCount(u32),
    Nonce(usize, u8),
    CiphertextLength(u64),
    SiteLength(u8),
}

fn field_change() -> impl Strategy<Value = FieldChange> {
    prop_oneof![
        (0u8..=255)
            .prop_filter("a change", |v| *v != 1)
            .prop_map(FieldChange::Version),
        prop_oneof![
            Just((fuzzing::RETIRED_KEY_ID, "retired_key")),
            Just((fuzzing::REVOKED_KEY_ID, "revoked_key")),
            Just((fuzzing::OTHER_SITE_KEY_ID, "key_site_mismatch")),
            Just(("00000000000000ff", "unknown_key")),
            Just(("0000000000000XYZ", "malformed_header")),
        ]
        .prop_map(|(id, reason)| FieldChange::KeyId(id, reason)),
        any::<u64>()
            .prop_filter("a change", |v| *v != 3)
            .prop_map(FieldChange::Epoch),
        any::<u64>()
            .prop_filter("a change", |v| *v != 41)
            .prop_map(FieldChange::Sequence),
        any::<u32>()
            .prop_filter("a change", |v| *v != 2)
            .prop_map(FieldChange::RowCount),
        (0..frame::NONCE_LEN, 1u8..=255).prop_map(|(i, x)| FieldChange::Nonce(i, x)),
        any::<u64>().prop_map(FieldChange::CiphertextLength),
        any::<u8>().prop_map(FieldChange::SiteLength),
    ]
}

/// Applies `change`; returns the reasons the result may be rejected with
/// (empty when it must open).
fn apply_change(batch: &mut [u8], change: &FieldChange) -> Vec<&'static str> {
    let at = layout(batch);
    match change {
        FieldChange::Version(v) => {
            batch[4] = *v;
            vec!["unsupported_version"]
        }
        FieldChange::KeyId(id, reason) => {
            batch[at.key_id].copy_from_slice(id.as_bytes());
            vec![*reason]
        }
        FieldChange::Epoch(v) => {
            batch[at.epoch].copy_from_slice(&v.to_be_bytes());
            vec!["authentication_failed"]
        }
        FieldChange::Sequence(v) => {
            batch[at.sequence].copy_from_slice(&v.to_be_bytes());
            vec!["authentication_failed"]
        }
        FieldChange::RowCount(v) => {
            batch[at.row_count].copy_from_slice(&v.to_be_bytes());
            vec!["authentication_failed"]
        }
        FieldChange::Nonce(i, x) => {
            batch[at.nonce.start + i] ^= x;
            vec!["authentication_failed"]
        }
        FieldChange::CiphertextLength(v) => {
            let actual = (batch.len() - at.ciphertext_length.end) as u64;
            batch[at.ciphertext_length].copy_from_slice(&v.to_be_bytes());
            if *v == actual {
                vec![]
            } else {
                vec!["truncated", "malformed_header"]
            }
        }
        FieldChange::SiteLength(v) => {
            let same = *v == batch[5];
            batch[5] = *v;
            if same {
                vec![]
            } else {
                vec!["truncated", "malformed_header"]
            }
        }
    }
}

/// A valid header of the active key followed by arbitrary bytes.
fn valid_header_then(tail: &[u8]) -> Vec<u8> {
    let (_, batch) = sealed(b"{}");
    let mut bytes = batch[..layout(&batch).ciphertext_length.start].to_vec();
    bytes.extend_from_slice(tail);
    bytes
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_input_in_every_mode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::check_open_batch(&data);
    }

    #[test]
    fn random_bytes_behind_the_magic_are_refused(
        version in prop_oneof![Just(1u8), any::<u8>()],
        tail in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = b"TRBT".to_vec();
        bytes.push(version);
        bytes.extend_from_slice(&tail);
        fuzzing::check_arbitrary(&bytes);
        prop_assert!(open_with_limit(&bytes, &fixture().keyring, FUZZ_PAYLOAD_LIMIT).is_err());
    }

    #[test]
    fn random_bytes_behind_a_valid_header_are_refused(
        tail in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let bytes = valid_header_then(&tail);
        fuzzing::check_arbitrary(&bytes);
        prop_assert!(open_with_limit(&bytes, &fixture().keyring, FUZZ_PAYLOAD_LIMIT).is_err());
    }

    #[test]
    fn unmodified_batches_open_to_their_payload(payload in proptest::collection::vec(any::<u8>(), 0..4096)) {
        fuzzing::check_round_trip(&payload);
    }

    #[test]
    fn edited_batches_are_refused_before_decompression(
        edits in proptest::collection::vec(any::<u8>(), 3..30),
    ) {
        fuzzing::check_edited(&edits);
    }

    #[test]
    fn bit_flips_anywhere_fail(index in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (_, batch) = sealed(br#"{"origin":"binlog","transactions":[]}"#);
        let mut flipped = batch.clone();
        let at = index.index(flipped.len());
        flipped[at] ^= 1 << bit;
        let err = open_with_limit(&flipped, &fixture().keyring, FUZZ_PAYLOAD_LIMIT)
            .expect_err("a flipped batch opened");
        prop_assert!(err.reject_reason().is_some());
        let decompressed = matches!(err, crate::BatchError::Decompress { .. });
        prop_assert!(!decompressed, "a flipped batch reached the decompressor");
    }

    #[test]
    fn truncation_and_extension_fail(
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let (_, batch) = sealed(b"[1,2,3]");
        let keyring = &fixture().keyring;
        let short = &batch[..cut.index(batch.len())];
        let err = open_with_limit(short, keyring, FUZZ_PAYLOAD_LIMIT).expect_err("prefix opened");
        prop_assert_eq!(err.reject_reason().map(|r| r.as_str()), Some("truncated"));
        let mut long = batch.clone();
        long.extend_from_slice(&extra);
        let err = open_with_limit(&long, keyring, FUZZ_PAYLOAD_LIMIT).expect_err("extension opened");
        prop_assert_eq!(err.reject_reason().map(|r| r.as_str()), Some("malformed_header"));
    }

    #[test]
    fn each_header_field_change_has_its_reason(change in field_change()) {
        let (_, mut batch) = sealed(b"[1,2,3]");
        let allowed = apply_change(&mut batch, &change);
        let result = open_with_limit(&batch, &fixture().keyring, FUZZ_PAYLOAD_LIMIT);
        match result {
            Ok(_) => prop_assert!(allowed.is_empty(), "{:?} opened", change),
            Err(err) => {
                let reason = err.reject_reason().map(|r| r.as_str()).unwrap_or("none");
                prop_assert!(allowed.contains(&reason), "{:?} gave {}: {}", change, reason, err);
            }
        }
    }

    #[test]
    fn arbitrary_authenticated_bytes_stay_within_the_limit(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            // A zstd frame magic, then noise: reaches the frame decoder.
            proptest::collection::vec(any::<u8>(), 0..600).prop_map(|mut tail| {
                let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd];
                frame.append(&mut tail);
                frame
            }),
        ],
    ) {
        fuzzing::check_authenticated_bytes(&bytes);
    }

    #[test]
    fn edited_zstd_frames_decompress_within_the_limit(
        size in 0usize..600_000,
        edits in prop_oneof![Just(Vec::new()), proptest::collection::vec(any::<u8>(), 3..24)],
        limit in 0u64..700_000,
    ) {
        let text: Vec<u8> = (0..size).map(|i| b"obs,encounter;"[i % 14]).collect();
        let compressed = fuzzing::apply_edits(&payload::compress(&text).unwrap(), &edits);
        if let Ok(out) = payload::decompress_bounded(&compressed, limit) {
            prop_assert!(out.len() as u64 <= limit);
            prop_assert!(out.capacity() as u64 <= limit);
        }
    }
}
