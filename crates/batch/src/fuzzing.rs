//! The decoder's robustness contract as one function, [`check_open_batch`],
//! run by both the cargo-fuzz target (`fuzz/fuzz_targets/open_batch.rs`,
//! which cargo-fuzz builds with `--cfg fuzzing`) and the property tests of
//! `decoder_properties` (a fixed number of cases on every `cargo test`).
//! Compiled only for those two: it is not part of the crate's API.
//!
//! The contract: whatever the bytes, [`read_header`] and [`open`] return
//! (never panic), an error is always a rejection with a reason, a payload is
//! never larger than the limit, only authenticated bytes reach the
//! decompressor, and anything that is not exactly a batch the key sealed is
//! refused.

use std::sync::OnceLock;

use zeroize::Zeroizing;

use crate::envelope::{encrypt, open_with_limit, read_header, seal};
use crate::error::BatchError;
use crate::header::BatchHeader;
use crate::keyring::Keyring;
use crate::site_key::SiteKey;

/// Payload bound used while fuzzing: small, so a missed bound shows as a
/// failed assertion rather than as memory exhaustion.
pub const FUZZ_PAYLOAD_LIMIT: u64 = 1 << 20;
/// The site of the fixture's keys.
pub const SITE: &str = "fuzz-site";
/// Another site, with its own active key.
pub const OTHER_SITE: &str = "fuzz-other";
/// Key ids of the fixture keyring (fixed so a fuzzer can find them).
pub const ACTIVE_KEY_ID: &str = "00000000000000a1";
/// A retired key of [`SITE`] (its bytes are in the keyring).
pub const RETIRED_KEY_ID: &str = "00000000000000b2";
/// A revoked key of [`SITE`] (only its state is in the keyring).
pub const REVOKED_KEY_ID: &str = "00000000000000c3";
/// The active key of [`OTHER_SITE`].
pub const OTHER_SITE_KEY_ID: &str = "00000000000000d4";

/// Fixed keys: the fuzzer's findings must replay.
pub struct Fixture {
    /// Opens the batches of every fixture key.
    pub keyring: Keyring,
    /// The active key of [`SITE`].
    pub active: SiteKey,
    /// The retired key of [`SITE`].
    pub retired: SiteKey,
    /// The active key of [`OTHER_SITE`].
    pub other_site: SiteKey,
}

/// The fixture, built once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = |site: &str, id: &str, fill: u8| {
            SiteKey::from_parts(site.into(), id.into(), Zeroizing::new([fill; 32]))
                .unwrap_or_else(|_| unreachable!("fixture ids are valid"))
        };
        let active = key(SITE, ACTIVE_KEY_ID, 0x11);
        let retired = key(SITE, RETIRED_KEY_ID, 0x22);
        let other_site = key(OTHER_SITE, OTHER_SITE_KEY_ID, 0x44);
        let mut keyring = Keyring::new();
        for key in [&active, &retired, &other_site] {
            let inserted = keyring.insert(key.clone());
            assert!(inserted.is_ok(), "fixture keys are distinct");
        }
        let marked = keyring
            .retire(RETIRED_KEY_ID, SITE)
            .and_then(|()| keyring.revoke(REVOKED_KEY_ID, SITE));
        assert!(marked.is_ok(), "fixture states are valid");
        Fixture {
            keyring,
            active,
            retired,
            other_site,
        }
    })
}

/// Runs one fuzz input. The first byte picks what the rest is:
/// 0 a batch to open, 1 a payload to seal and open again, 2 bytes to seal
/// as if they were compressed (fuzzing the decompressor behind a valid tag),
/// 3 edits to apply to a sealed batch (see [`apply_edits`]).
pub fn check_open_batch(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        check_arbitrary(data);
        return;
    };
    match mode % 4 {
        0 => check_arbitrary(rest),
        1 => check_round_trip(rest),
        2 => check_authenticated_bytes(rest),
        _ => check_edited(rest),
    }
}

/// Arbitrary bytes: any answer but a panic, and agreement between
/// `read_header` and `open`.
pub fn check_arbitrary(bytes: &[u8]) {
    let keyring = &fixture().keyring;
    let header = read_header(bytes);
    match open_with_limit(bytes, keyring, FUZZ_PAYLOAD_LIMIT) {
        Ok((opened, payload)) => {
            assert_eq!(header.ok().as_ref(), Some(&opened), "headers disagree");
            assert!(payload.len() as u64 <= FUZZ_PAYLOAD_LIMIT);
        }
        Err(err) => assert_rejection(&err),
    }
}

/// A payload sealed with the active key opens to itself.
pub fn check_round_trip(payload: &[u8]) {
    let fixture = fixture();
    let header = header_from(payload);
    let batch = match seal(&header, payload, &fixture.active) {
        Ok(batch) => batch,
        Err(err) => panic!("sealing a valid header failed: {err}"),
    };
    assert_eq!(read_header(&batch).ok().as_ref(), Some(&header));
    match open_with_limit(&batch, &fixture.keyring, FUZZ_PAYLOAD_LIMIT) {
        Ok((opened, back)) => {
            assert_eq!(opened, header);
            assert!(back == payload, "payload changed on the way");
        }
        Err(err) => panic!("a sealed batch did not open: {err}"),
    }
}

/// Arbitrary bytes behind a valid tag: the decompressor answers within the
/// limit or refuses, never panics.
pub fn check_authenticated_bytes(compressed: &[u8]) {
    let fixture = fixture();
    let header = header_from(compressed);
    let batch = match encrypt(&header, compressed, &fixture.active) {
        Ok(batch) => batch,
        Err(err) => panic!("encrypting failed: {err}"),
    };
    match open_with_limit(&batch, &fixture.keyring, FUZZ_PAYLOAD_LIMIT) {
        Ok((opened, payload)) => {
            assert_eq!(opened, header);
            assert!(payload.len() as u64 <= FUZZ_PAYLOAD_LIMIT);
        }
        Err(BatchError::Decompress { .. } | BatchError::PayloadTooLarge { .. }) => {}
        Err(err) => panic!("authenticated bytes gave {err}"),
    }
}

/// A sealed batch with edits applied opens only when the edits changed
/// nothing; otherwise it is refused before anything is decompressed.
pub fn check_edited(edits: &[u8]) {
    let fixture = fixture();
    let header = BatchHeader::new(SITE, ACTIVE_KEY_ID, 7, 9, 1);
    let payload = br#"{"origin":"binlog","transactions":[]}"#;
    let batch = match seal(&header, payload, &fixture.active) {
        Ok(batch) => batch,
        Err(err) => panic!("sealing failed: {err}"),
    };
    let edited = apply_edits(&batch, edits);
    let result = open_with_limit(&edited, &fixture.keyring, FUZZ_PAYLOAD_LIMIT);
    if edited == batch {
        assert!(result.is_ok(), "an unchanged batch did not open");
        return;
    }
    match result {
        Ok(_) => panic!("an edited batch opened"),
        Err(BatchError::Decompress { .. } | BatchError::PayloadTooLarge { .. }) => {
            panic!("an edited batch reached the decompressor")
        }
        Err(err) => assert_rejection(&err),
    }
}

/// Applies edits of three bytes each: `[kind, position, value]`. Kind
/// 0 xors the byte at `position` with `value` (or 1), 1 truncates to
/// `position`, 2 inserts `value` at `position`, 3 appends `value`; positions
/// wrap around the current length.
pub fn apply_edits(batch: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut bytes = batch.to_vec();
    for edit in edits.chunks_exact(3) {
        let (kind, value) = (edit[0], edit[2]);
        let position = usize::from(edit[1]);
        match kind % 4 {
            0 if !bytes.is_empty() => {
                let index = position % bytes.len();
                bytes[index] ^= value.max(1);
            }
            1 => bytes.truncate(position % (bytes.len() + 1)),
            2 => {
                let index = position % (bytes.len() + 1);
                bytes.insert(index, value);
            }
            3 => bytes.push(value),
            _ => {}
        }
    }
    bytes
}

/// A header for the active key with epoch, sequence and row count taken
/// from the input, so they vary with it.
fn header_from(input: &[u8]) -> BatchHeader {
    let mut word = [0u8; 8];
    for (slot, byte) in word.iter_mut().zip(input) {
        *slot = *byte;
    }
    let number = u64::from_le_bytes(word);
    BatchHeader::new(
        SITE,
        ACTIVE_KEY_ID,
        number,
        number.rotate_left(17),
        u32::try_from(input.len()).unwrap_or(u32::MAX),
    )
}

/// Every refusal of `open` is a definite rejection with a reason.
fn assert_rejection(err: &BatchError) {
    assert!(err.is_definite(), "{err}");
    assert!(err.reject_reason().is_some(), "no reason for {err}");
}
