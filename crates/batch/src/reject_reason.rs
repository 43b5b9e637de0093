//! The closed vocabulary of reasons a batch is refused at HQ, each with a
//! stable short name for logs, the rejection record and metric labels.
//!
//! Invariants: the set is closed and small (it is a metric label, so it must
//! stay bounded); a name, once published, never changes meaning and is never
//! reused; every [`BatchError`](crate::BatchError) that `open` or
//! `read_header` can return maps to exactly one reason (see
//! [`BatchError::reject_reason`](crate::BatchError::reject_reason)). The
//! reasons the batch crate cannot see (sequence order, file placement, the
//! JSON payload) are listed here too so that every crate counts rejections
//! with one vocabulary.

use std::fmt;

/// Why a batch is rejected: kept aside, recorded and counted, never applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The bytes do not start with the `TRBT` magic.
    NotABatch,
    /// The bytes end inside a field (an incomplete copy).
    Truncated,
    /// A framing field holds a value no sealer writes (bad site or key id,
    /// impossible ciphertext length, trailing bytes).
    MalformedHeader,
    /// The format version is not one this build reads.
    UnsupportedVersion,
    /// The keyring knows no key at all for the site the header names.
    UnknownSite,
    /// The site is known but the keyring has no key with the header's key id.
    UnknownKey,
    /// The header's key id belongs to another site than the header names.
    KeySiteMismatch,
    /// The key was retired after a rotation; batches sealed with it are no
    /// longer accepted.
    RetiredKey,
    /// The key was revoked (compromised or withdrawn).
    RevokedKey,
    /// The AEAD tag did not verify: the batch was altered or sealed with
    /// other key bytes.
    AuthenticationFailed,
    /// The authenticated payload did not decompress or decode.
    MalformedPayload,
    /// The decompressed payload is over the size limit.
    PayloadTooLarge,
    /// The payload holds another number of rows than the header counts.
    RowCountMismatch,
    /// The authenticated header does not match where the batch was found
    /// (file name, partition key): it was renamed or copied.
    MisplacedBatch,
    /// The batch belongs to an epoch older than the one HQ applies for its
    /// site.
    StaleEpoch,
    /// The batch repeats a sequence HQ already applied with other content.
    ReplayedSequence,
}

impl RejectReason {
    /// Every reason, in declaration order (to pre-register metric labels).
    pub const ALL: [RejectReason; 16] = [
        RejectReason::NotABatch,
        RejectReason::Truncated,
        RejectReason::MalformedHeader,
        RejectReason::UnsupportedVersion,
        RejectReason::UnknownSite,
        RejectReason::UnknownKey,
        RejectReason::KeySiteMismatch,
        RejectReason::RetiredKey,
        RejectReason::RevokedKey,
        RejectReason::AuthenticationFailed,
        RejectReason::MalformedPayload,
        RejectReason::PayloadTooLarge,
        RejectReason::RowCountMismatch,
        RejectReason::MisplacedBatch,
        RejectReason::StaleEpoch,
        RejectReason::ReplayedSequence,
    ];

    /// The stable short name: lowercase snake case, safe as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotABatch => "not_a_batch",
            RejectReason::Truncated => "truncated",
            RejectReason::MalformedHeader => "malformed_header",
            RejectReason::UnsupportedVersion => "unsupported_version",
            RejectReason::UnknownSite => "unknown_site",
            RejectReason::UnknownKey => "unknown_key",
            RejectReason::KeySiteMismatch => "key_site_mismatch",
            RejectReason::RetiredKey => "retired_key",
            RejectReason::RevokedKey => "revoked_key",
            RejectReason::AuthenticationFailed => "authentication_failed",
            RejectReason::MalformedPayload => "malformed_payload",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::RowCountMismatch => "row_count_mismatch",
            RejectReason::MisplacedBatch => "misplaced_batch",
            RejectReason::StaleEpoch => "stale_epoch",
            RejectReason::ReplayedSequence => "replayed_sequence",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_snake_case_labels() {
        let names: BTreeSet<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), RejectReason::ALL.len());
        for name in names {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
        assert_eq!(RejectReason::RevokedKey.to_string(), "revoked_key");
    }

    #[test]
    fn all_lists_every_reason_once_in_order() {
        let mut sorted = RejectReason::ALL;
        sorted.sort();
        assert_eq!(sorted, RejectReason::ALL);
    }
}
