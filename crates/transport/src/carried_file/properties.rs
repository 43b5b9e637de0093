//! Property tests of the carried-file reader over damaged files, a fixed number of cases each
//! (so every CI run does the same amount): whatever happens to the bytes, reading never
//! panics, never hands out a batch that differs from the one written at that sequence, and
//! ends (no unbounded loop, no allocation beyond the bytes present).

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::fixtures::{key, sealed};
use super::{CarriedFileReader, CarriedFileWriter, CarriedItem};

/// Cases per property.
const CASES: u32 = 1_000;

/// Sealed batches with their sequences, and the bytes of a carried file holding them.
type Original = (Vec<(u64, Vec<u8>)>, Vec<u8>);

/// The sealed batches (sequences 1, 2, 4, 5) and a carried file holding them.
fn original() -> &'static Original {
    static ORIGINAL: OnceLock<Original> = OnceLock::new();
    ORIGINAL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.carried");
        let key = key("clinic-1");
        let batches: Vec<_> = [1, 2, 4, 5]
            .into_iter()
            .map(|s| (s, sealed(&key, "clinic-1", 9, s)))
            .collect();
        let mut writer = CarriedFileWriter::create(&path, "clinic-1", 9).unwrap();
        for (sequence, bytes) in &batches {
            writer.append(*sequence, bytes).unwrap();
        }
        writer.finish().unwrap();
        let file = std::fs::read(&path).unwrap();
        (batches, file)
    })
}

/// Reads `bytes` to the end; checks every batch handed out is the original one. Returns the
/// sequences handed out as batches.
fn read_checked(bytes: &[u8]) -> Vec<u64> {
    let (batches, _) = original();
    let Ok(reader) = CarriedFileReader::from_reader(bytes, Path::new("f.carried")) else {
        return Vec::new();
    };
    let mut handed_out = Vec::new();
    for item in reader.take(batches.len() + 1) {
        match item {
            Ok(CarriedItem::Batch { sequence, bytes }) => {
                let original = batches.iter().find(|(s, _)| *s == sequence);
                assert_eq!(
                    original.map(|(_, b)| b),
                    Some(&bytes),
                    "batch {sequence} handed out with other bytes than were written"
                );
                handed_out.push(sequence);
            }
            Ok(CarriedItem::Damaged { .. }) => {}
            Err(_) => break,
        }
    }
    handed_out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// Up to three flipped bits (what a failing stick does): the batches they touch are
    /// reported damaged, every other batch still comes out intact.
    #[test]
    fn bit_flips_never_pass_a_damaged_batch(flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..=3)) {
        let (batches, file) = original();
        let mut bytes = file.clone();
        for (at, bit) in &flips {
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        let handed_out = read_checked(&bytes);
        prop_assert!(handed_out.len() <= batches.len());
    }

    /// Cut anywhere: the batches wholly before the cut come out, nothing after it.
    #[test]
    fn truncation_keeps_exactly_the_complete_batches(cut in any::<prop::sample::Index>()) {
        let (_, file) = original();
        let len = cut.index(file.len());
        let handed_out = read_checked(&file[..len]);
        // Each record ends after its batch's CRC; those wholly within the cut are intact.
        prop_assert!(handed_out.windows(2).all(|w| w[0] < w[1]));
        let full = read_checked(file);
        prop_assert!(handed_out.len() < full.len());
    }

    /// Arbitrary splices of arbitrary bytes, anywhere, of any length (forged lengths
    /// included): no panic, only original batches, and the reading ends.
    #[test]
    fn arbitrary_edits_never_panic(
        at in any::<prop::sample::Index>(),
        remove in 0usize..64,
        insert in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let (_, file) = original();
        let mut bytes = file.clone();
        let at = at.index(bytes.len());
        let end = (at + remove).min(bytes.len());
        bytes.splice(at..end, insert);
        read_checked(&bytes);
    }

    /// Random bytes behind the magic: refused or read, never a panic.
    #[test]
    fn random_files_are_refused_without_panic(tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"TRBCARRY\x01".to_vec();
        bytes.extend(tail);
        read_checked(&bytes);
    }
}
