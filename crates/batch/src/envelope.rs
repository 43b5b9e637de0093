//! Sealing and opening batches: compress, then encrypt with
//! XChaCha20-Poly1305 under the site key, authenticating the header; and the
//! reverse.
//!
//! Invariants: a batch is only sealed with the key its header names; a fresh
//! random nonce is drawn for every batch; `open` returns a payload only after
//! the key id is known, belongs to the site the header claims, is neither
//! retired nor revoked, and the AEAD tag verifies over the exact header bytes
//! and ciphertext; decompressed payloads never exceed the caller's limit, and
//! memory spent opening a batch is bounded by its length plus that limit.

use chacha20poly1305::XNonce;
use chacha20poly1305::aead::{Aead, Payload};

use crate::entropy;
use crate::error::BatchError;
use crate::frame::{self, NONCE_LEN};
use crate::header::BatchHeader;
use crate::keyring::{Keyring, Standing};
use crate::payload::{self, DecompressFailure};
use crate::site_key::SiteKey;

/// Default bound on a batch's decompressed payload: 512 MiB.
pub const MAX_PAYLOAD_BYTES: u64 = 512 * 1024 * 1024;

/// Seals `payload` (JSON bytes) into a batch described by `header`.
///
/// The header's site id and key id must be the sealing key's; payloads over
/// [`MAX_PAYLOAD_BYTES`] are refused since no applier would open them.
pub fn seal(header: &BatchHeader, payload: &[u8], key: &SiteKey) -> Result<Vec<u8>, BatchError> {
    header.validate()?;
    if header.site_id != key.site_id() || header.key_id != key.key_id() {
        return Err(BatchError::HeaderKeyMismatch {
            header_site: header.site_id.clone(),
            header_key_id: header.key_id.clone(),
            key_site: key.site_id().to_owned(),
            key_id: key.key_id().to_owned(),
        });
    }
    if payload.len() as u64 > MAX_PAYLOAD_BYTES {
        return Err(BatchError::PayloadTooLarge {
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    let compressed =
        payload::compress(payload).map_err(|source| BatchError::Compress { source })?;
    encrypt(header, &compressed, key)
}

/// Encrypts already-compressed bytes; the header must be validated.
pub(crate) fn encrypt(
    header: &BatchHeader,
    compressed: &[u8],
    key: &SiteKey,
) -> Result<Vec<u8>, BatchError> {
    let mut nonce = [0u8; NONCE_LEN];
    entropy::fill(&mut nonce).map_err(|reason| BatchError::Randomness { reason })?;
    let associated_data = frame::encode_associated_data(header, &nonce);
    let ciphertext = key
        .cipher()
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: compressed,
                aad: &associated_data,
            },
        )
        .map_err(|_| BatchError::Encrypt)?;
    Ok(frame::assemble(associated_data, &ciphertext))
}

/// The key that may open a batch with this header: the key id is known,
/// belongs to the site the header names, and is active.
fn usable_key<'k>(header: &BatchHeader, keyring: &'k Keyring) -> Result<&'k SiteKey, BatchError> {
    let Some(entry) = keyring.entry(&header.key_id) else {
        return Err(if keyring.knows_site(&header.site_id) {
            BatchError::UnknownKey {
                site_id: header.site_id.clone(),
                key_id: header.key_id.clone(),
            }
        } else {
            BatchError::UnknownSite {
                site_id: header.site_id.clone(),
                key_id: header.key_id.clone(),
            }
        });
    };
    if entry.site_id != header.site_id {
        return Err(BatchError::KeySiteMismatch {
            key_id: header.key_id.clone(),
            key_site: entry.site_id.to_owned(),
            claimed_site: header.site_id.clone(),
        });
    }
    match entry.standing {
        Standing::Active(key) => Ok(key),
        Standing::Retired => Err(BatchError::RetiredKey {
            site_id: header.site_id.clone(),
            key_id: header.key_id.clone(),
            epoch: header.epoch,
            sequence: header.sequence,
        }),
        Standing::Revoked => Err(BatchError::RevokedKey {
            site_id: header.site_id.clone(),
            key_id: header.key_id.clone(),
            epoch: header.epoch,
            sequence: header.sequence,
        }),
    }
}

/// Reads a batch's header without authenticating it.
///
/// The result is for ordering and routing only: nothing in it is trustworthy
/// until [`open`] succeeds. The whole framing is checked, so truncated or
/// padded batches are already refused here.
pub fn read_header(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    Ok(frame::parse(batch)?.header)
}

/// Verifies, decrypts and decompresses a batch, returning its authenticated
/// header and JSON payload. Payloads are bounded by [`MAX_PAYLOAD_BYTES`].
///
/// Any error means the batch must not be applied.
pub fn open(batch: &[u8], keyring: &Keyring) -> Result<(BatchHeader, Vec<u8>), BatchError> {
    open_with_limit(batch, keyring, MAX_PAYLOAD_BYTES)
}

/// [`open`] with a caller-chosen bound on the decompressed payload size.
pub fn open_with_limit(
    batch: &[u8],
    keyring: &Keyring,
    max_payload_bytes: u64,
) -> Result<(BatchHeader, Vec<u8>), BatchError> {
    let frame = frame::parse(batch)?;
    let header = frame.header;
    let key = usable_key(&header, keyring)?;
    let compressed = key
        .cipher()
        .decrypt(
            XNonce::from_slice(&frame.nonce),
            Payload {
                msg: frame.ciphertext,
                aad: frame.associated_data,
            },
        )
        .map_err(|_| BatchError::AuthenticationFailed {
            site_id: header.site_id.clone(),
            key_id: header.key_id.clone(),
            epoch: header.epoch,
            sequence: header.sequence,
        })?;
    match payload::decompress_bounded(&compressed, max_payload_bytes) {
        Ok(payload) => Ok((header, payload)),
        Err(DecompressFailure::TooLarge) => Err(BatchError::PayloadTooLarge {
            limit: max_payload_bytes,
        }),
        Err(DecompressFailure::Corrupt(source)) => Err(BatchError::Decompress {
            site_id: header.site_id,
            epoch: header.epoch,
            sequence: header.sequence,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8] = br#"{"rows":[{"table":"obs","op":"insert","values":[1,"x"]}]}"#;

    fn site(id: &str) -> (SiteKey, Keyring) {
        let key = SiteKey::generate(id).unwrap();
        let mut keyring = Keyring::new();
        keyring.insert(key.clone()).unwrap();
        (key, keyring)
    }

    fn header_for(key: &SiteKey) -> BatchHeader {
        BatchHeader::new(key.site_id(), key.key_id(), 3, 41, 1)
    }

    #[test]
    fn round_trip_returns_header_and_payload() {
        let (key, keyring) = site("clinic-1");
        let header = header_for(&key);
        let batch = seal(&header, PAYLOAD, &key).unwrap();
        assert_eq!(read_header(&batch).unwrap(), header);
        assert_eq!(open(&batch, &keyring).unwrap(), (header, PAYLOAD.to_vec()));
    }

    #[test]
    fn payload_is_not_visible_in_the_batch() {
        let (key, _) = site("clinic-1");
        let batch = seal(&header_for(&key), PAYLOAD, &key).unwrap();
        assert!(!batch.windows(5).any(|w| w == b"table"));
    }

    #[test]
    fn nonces_differ_between_seals() {
        let (key, _) = site("clinic-1");
        let a = seal(&header_for(&key), PAYLOAD, &key).unwrap();
        let b = seal(&header_for(&key), PAYLOAD, &key).unwrap();
        let nonce_a = frame::parse(&a).unwrap().nonce;
        assert_ne!(nonce_a, frame::parse(&b).unwrap().nonce);
    }

    #[test]
    fn any_single_byte_change_is_rejected() {
        let (key, keyring) = site("clinic-1");
        let batch = seal(&header_for(&key), PAYLOAD, &key).unwrap();
        for index in 0..batch.len() {
            for flip in [0x01u8, 0x80] {
                let mut tampered = batch.clone();
                tampered[index] ^= flip;
                let err = open(&tampered, &keyring).expect_err("tampered batch opened");
                assert!(err.is_definite());
                assert!(
                    !matches!(err, BatchError::Decompress { .. }),
                    "byte {index}: {err}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let (key, keyring) = site("clinic-1");
        let batch = seal(&header_for(&key), PAYLOAD, &key).unwrap();
        for len in 0..batch.len() {
            assert!(
                open(&batch[..len], &keyring).is_err(),
                "prefix {len} opened"
            );
            assert!(read_header(&batch[..len]).is_err(), "prefix {len} parsed");
        }
    }

    #[test]
    fn seal_refuses_a_header_for_another_key() {
        let (key_a, _) = site("clinic-a");
        let (key_b, _) = site("clinic-b");
        let header = BatchHeader::new("clinic-a", key_b.key_id(), 1, 1, 1);
        assert!(matches!(
            seal(&header, PAYLOAD, &key_a),
            Err(BatchError::HeaderKeyMismatch { .. })
        ));
        assert!(matches!(
            seal(&header, PAYLOAD, &key_b),
            Err(BatchError::HeaderKeyMismatch { .. })
        ));
    }

    #[test]
    fn site_b_cannot_publish_as_site_a() {
        let (key_a, mut keyring) = site("clinic-a");
        let (key_b, _) = site("clinic-b");
        keyring.insert(key_b.clone()).unwrap();
        // Site B forges a header naming site A but must use its own key id.
        let forged_header = BatchHeader::new("clinic-a", key_b.key_id(), 1, 1, 1);
        let compressed = payload::compress(PAYLOAD).unwrap();
        let forged = encrypt(&forged_header, &compressed, &key_b).unwrap();
        match open(&forged, &keyring) {
            Err(BatchError::KeySiteMismatch {
                key_id,
                key_site,
                claimed_site,
            }) => {
                assert_eq!(key_id, key_b.key_id());
                assert_eq!(key_site, "clinic-b");
                assert_eq!(claimed_site, "clinic-a");
            }
            other => panic!("forged batch gave {other:?}"),
        }
        // Claiming A's key id with B's key bytes fails authentication.
        let forged_header = header_for(&key_a);
        let forged = encrypt(&forged_header, &compressed, &key_b).unwrap();
        assert!(matches!(
            open(&forged, &keyring),
            Err(BatchError::AuthenticationFailed { .. })
        ));
    }

    #[test]
    fn unknown_key_names_site_and_key_id() {
        let (key, _) = site("clinic-1");
        let (_, other_keyring) = site("clinic-2");
        let batch = seal(&header_for(&key), PAYLOAD, &key).unwrap();
        let err = open(&batch, &other_keyring).unwrap_err();
        assert!(err.is_missing_key());
        let message = err.to_string();
        assert!(
            message.contains("clinic-1") && message.contains(key.key_id()),
            "{message}"
        );
    }

    #[test]
    fn decompressed_size_is_bounded() {
        let (key, keyring) = site("clinic-1");
        let payload = vec![b' '; 100_000];
        let batch = seal(&header_for(&key), &payload, &key).unwrap();
        assert!(batch.len() < 1_000);
        assert!(matches!(
            open_with_limit(&batch, &keyring, 99_999),
            Err(BatchError::PayloadTooLarge { limit: 99_999 })
        ));
        assert_eq!(
            open_with_limit(&batch, &keyring, 100_000).unwrap().1,
            payload
        );
    }

    #[test]
    fn authenticated_garbage_is_a_decompress_error() {
        let (key, keyring) = site("clinic-1");
        let batch = encrypt(&header_for(&key), b"not zstd at all", &key).unwrap();
        assert!(matches!(
            open(&batch, &keyring),
            Err(BatchError::Decompress { .. })
        ));
    }

    #[test]
    fn empty_payload_round_trips() {
        let (key, keyring) = site("clinic-1");
        let batch = seal(&header_for(&key), b"", &key).unwrap();
        assert_eq!(open(&batch, &keyring).unwrap().1, b"");
    }

    fn reason(result: Result<(BatchHeader, Vec<u8>), BatchError>) -> &'static str {
        let err = result.expect_err("batch opened");
        assert!(err.is_definite());
        err.reject_reason()
            .expect("open errors are rejections")
            .as_str()
    }

    #[test]
    fn rotation_accepts_both_keys_until_the_old_one_is_retired() {
        let (old, mut keyring) = site("clinic-1");
        let new = SiteKey::generate("clinic-1").unwrap();
        keyring.insert(new.clone()).unwrap();
        let sealed_old = seal(&header_for(&old), PAYLOAD, &old).unwrap();
        let sealed_new = seal(&header_for(&new), PAYLOAD, &new).unwrap();
        assert!(open(&sealed_old, &keyring).is_ok());
        assert!(open(&sealed_new, &keyring).is_ok());

        keyring.retire(old.key_id(), "clinic-1").unwrap();
        let err = open(&sealed_old, &keyring).unwrap_err();
        assert!(matches!(&err, BatchError::RetiredKey { .. }), "{err}");
        assert!(err.to_string().contains(old.key_id()) && err.to_string().contains("key-states"));
        assert_eq!(reason(open(&sealed_old, &keyring)), "retired_key");
        assert_eq!(open(&sealed_new, &keyring).unwrap().1, PAYLOAD);
    }

    #[test]
    fn a_revoked_key_is_refused_with_or_without_its_bytes() {
        let (key, mut keyring) = site("clinic-1");
        let batch = seal(&header_for(&key), PAYLOAD, &key).unwrap();
        keyring.revoke(key.key_id(), "clinic-1").unwrap();
        assert_eq!(reason(open(&batch, &keyring)), "revoked_key");

        let mut states_only = Keyring::new();
        states_only.revoke(key.key_id(), "clinic-1").unwrap();
        let err = open(&batch, &states_only).unwrap_err();
        assert!(matches!(err, BatchError::RevokedKey { .. }), "{err}");
        assert!(!err.is_missing_key());
    }

    #[test]
    fn a_revoked_key_claimed_for_another_site_is_a_site_mismatch() {
        let (key, mut keyring) = site("clinic-1");
        keyring.revoke(key.key_id(), "clinic-1").unwrap();
        let (_, _) = site("clinic-2");
        let forged = BatchHeader::new("clinic-2", key.key_id(), 1, 1, 1);
        let compressed = payload::compress(PAYLOAD).unwrap();
        let batch = encrypt(&forged, &compressed, &key).unwrap();
        assert_eq!(reason(open(&batch, &keyring)), "key_site_mismatch");
    }

    #[test]
    fn unknown_site_and_unknown_key_are_told_apart() {
        let (key, _) = site("clinic-1");
        let batch = seal(&header_for(&key), PAYLOAD, &key).unwrap();
        let (_, other_site) = site("clinic-2");
        assert_eq!(reason(open(&batch, &other_site)), "unknown_site");
        let (_, same_site_other_key) = site("clinic-1");
        assert_eq!(reason(open(&batch, &same_site_other_key)), "unknown_key");
        let mut retired_only = Keyring::new();
        retired_only
            .retire(&"e".repeat(crate::KEY_ID_LEN), "clinic-1")
            .unwrap();
        assert_eq!(reason(open(&batch, &retired_only)), "unknown_key");
    }

    #[test]
    fn every_open_failure_has_its_reason() {
        let (key, keyring) = site("clinic-1");
        let batch = seal(&header_for(&key), PAYLOAD, &key).unwrap();
        assert_eq!(reason(open(b"PK\x03\x04", &keyring)), "not_a_batch");
        assert_eq!(
            reason(open(&batch[..batch.len() - 1], &keyring)),
            "truncated"
        );
        let mut padded = batch.clone();
        padded.push(0);
        assert_eq!(reason(open(&padded, &keyring)), "malformed_header");
        let mut newer = batch.clone();
        newer[4] = 2;
        assert_eq!(reason(open(&newer, &keyring)), "unsupported_version");
        let mut flipped = batch.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(reason(open(&flipped, &keyring)), "authentication_failed");
        let garbage = encrypt(&header_for(&key), b"not zstd", &key).unwrap();
        assert_eq!(reason(open(&garbage, &keyring)), "malformed_payload");
        assert_eq!(
            reason(open_with_limit(&batch, &keyring, 3)),
            "payload_too_large"
        );
        let mismatch = seal(
            &BatchHeader::new("clinic-9", key.key_id(), 1, 1, 1),
            PAYLOAD,
            &key,
        )
        .unwrap_err();
        assert_eq!(
            mismatch.reject_reason(),
            None,
            "sealing errors reject nothing"
        );
    }
}
