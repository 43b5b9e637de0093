//! The crate's error vocabulary: [`BatchError`] for sealing and opening
//! batches, [`KeyError`] for generating, storing and loading site keys.
//!
//! Invariants: every message names the object it is about (site, key id,
//! epoch/sequence or file) and what the operator can do about it, and no
//! message ever contains key bytes or payload contents.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::identifier::{InvalidKeyId, InvalidSiteId};
use crate::reject_reason::RejectReason;

/// Why a batch could not be sealed or opened.
///
/// Every failure of [`open`](crate::open) or [`read_header`](crate::read_header)
/// means "do not apply this batch": see [`BatchError::is_definite`].
#[derive(Debug, Error)]
pub enum BatchError {
    /// The bytes end before a field is complete.
    #[error(
        "batch is truncated: it ends inside the {field}; the file was cut short \
         (incomplete copy or crash) — reject it and have the capture site re-publish it"
    )]
    Truncated {
        /// The field that was cut short.
        field: &'static str,
    },

    /// A field holds a value no tributary sealer writes.
    #[error(
        "batch is malformed: the {field} {problem}; it was not written by a tributary sealer — reject it"
    )]
    Malformed {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// The bytes do not start with the `TRBT` magic.
    #[error("not a tributary batch: it does not start with the \"TRBT\" magic bytes — reject it")]
    BadMagic,

    /// The batch uses a format version this build cannot read.
    #[error("{}", unsupported_version_message(*.0))]
    UnsupportedVersion(u8),

    /// The keyring holds no key at all for the site the header names.
    #[error(
        "site {site_id} is unknown: the keyring holds no key for it (the batch names key id \
         {key_id}); if the site is genuine, copy its key file into the applier's key directory"
    )]
    UnknownSite {
        /// Site named by the header.
        site_id: String,
        /// Key id named by the header.
        key_id: String,
    },

    /// The site is known but the keyring has no key with the header's key id.
    #[error(
        "no key for site {site_id} key id {key_id} in the keyring; copy the site's key \
         file into the applier's key directory"
    )]
    UnknownKey {
        /// Site named by the header.
        site_id: String,
        /// Key id named by the header.
        key_id: String,
    },

    /// The key was retired after a rotation.
    #[error(
        "batch epoch {epoch} sequence {sequence} is sealed with site {site_id}'s retired key \
         {key_id}; if the site still had batches sealed with it, mark the key active again in \
         the key-states file until they are applied"
    )]
    RetiredKey {
        /// Site the key belongs to (also the site the header names).
        site_id: String,
        /// The retired key id.
        key_id: String,
        /// Epoch named by the header.
        epoch: u64,
        /// Sequence named by the header.
        sequence: u64,
    },

    /// The key was revoked.
    #[error(
        "batch epoch {epoch} sequence {sequence} is sealed with site {site_id}'s revoked key \
         {key_id}; nothing of it is applied — find out who still holds that key"
    )]
    RevokedKey {
        /// Site the key belongs to (also the site the header names).
        site_id: String,
        /// The revoked key id.
        key_id: String,
        /// Epoch named by the header.
        epoch: u64,
        /// Sequence named by the header.
        sequence: u64,
    },

    /// The header's key id belongs to a different site than the header names.
    #[error(
        "batch claims site {claimed_site} but key id {key_id} belongs to site {key_site}; \
         a site may only publish batches for itself — reject it and investigate site {key_site}"
    )]
    KeySiteMismatch {
        /// Key id named by the header.
        key_id: String,
        /// The site that key id belongs to.
        key_site: String,
        /// The site the header claims.
        claimed_site: String,
    },

    /// Decryption failed: the batch was altered or sealed with another key.
    #[error(
        "batch epoch {epoch} sequence {sequence} failed authentication: it was altered, \
         or sealed with a key other than site {site_id}'s key {key_id} — reject it"
    )]
    AuthenticationFailed {
        /// Site named by the header.
        site_id: String,
        /// Key id named by the header.
        key_id: String,
        /// Epoch named by the header.
        epoch: u64,
        /// Sequence named by the header.
        sequence: u64,
    },

    /// The authenticated payload is not a valid zstd stream.
    #[error(
        "batch from site {site_id} epoch {epoch} sequence {sequence} authenticated but its \
         payload does not decompress; the capture agent that sealed it is faulty — reject it"
    )]
    Decompress {
        /// Site named by the header.
        site_id: String,
        /// Epoch named by the header.
        epoch: u64,
        /// Sequence named by the header.
        sequence: u64,
        /// The decoder's complaint.
        #[source]
        source: io::Error,
    },

    /// The (decompressed) payload is bigger than allowed.
    #[error("batch payload exceeds the {limit}-byte limit; capture smaller batches")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },

    /// The header's site or key id does not match the key used to seal it.
    #[error(
        "cannot seal: the header names site {header_site} key id {header_key_id} but the key \
         is site {key_site} key id {key_id}; build the header from the sealing key"
    )]
    HeaderKeyMismatch {
        /// Site in the header.
        header_site: String,
        /// Key id in the header.
        header_key_id: String,
        /// Site of the sealing key.
        key_site: String,
        /// Key id of the sealing key.
        key_id: String,
    },

    /// The header to seal has a bad site id.
    #[error("cannot seal: {0}")]
    InvalidSiteId(#[from] InvalidSiteId),

    /// The header to seal has a bad key id.
    #[error("cannot seal: {0}")]
    InvalidKeyId(#[from] InvalidKeyId),

    /// zstd refused to compress the payload.
    #[error("cannot seal: compressing the payload failed")]
    Compress {
        /// The encoder's complaint.
        #[source]
        source: io::Error,
    },

    /// The AEAD refused to encrypt the payload.
    #[error("cannot seal: encrypting the payload failed")]
    Encrypt,

    /// The OS random number generator failed while drawing a nonce.
    #[error(
        "cannot seal: the operating system random number generator failed ({reason}); check the host's entropy source"
    )]
    Randomness {
        /// The RNG's complaint.
        reason: String,
    },
}

impl BatchError {
    /// Whether the batch this error is about must be rejected rather than
    /// retried.
    ///
    /// Always `true`: sealing and opening are pure functions of their inputs,
    /// so retrying the same bytes with the same keys fails the same way.
    /// In particular every [`open`](crate::open) failure means "reject this
    /// batch, never apply it". [`UnknownKey`](BatchError::UnknownKey) is
    /// definite for the current keyring; see [`BatchError::is_missing_key`].
    pub fn is_definite(&self) -> bool {
        match self {
            BatchError::Truncated { .. }
            | BatchError::Malformed { .. }
            | BatchError::BadMagic
            | BatchError::UnsupportedVersion(_)
            | BatchError::UnknownSite { .. }
            | BatchError::UnknownKey { .. }
            | BatchError::RetiredKey { .. }
            | BatchError::RevokedKey { .. }
            | BatchError::KeySiteMismatch { .. }
            | BatchError::AuthenticationFailed { .. }
            | BatchError::Decompress { .. }
            | BatchError::PayloadTooLarge { .. }
            | BatchError::HeaderKeyMismatch { .. }
            | BatchError::InvalidSiteId(_)
            | BatchError::InvalidKeyId(_)
            | BatchError::Compress { .. }
            | BatchError::Encrypt
            | BatchError::Randomness { .. } => true,
        }
    }

    /// Whether the batch might open once the operator installs another key
    /// file: the batch is not known to be bad, the keyring is incomplete.
    pub fn is_missing_key(&self) -> bool {
        matches!(
            self,
            BatchError::UnknownSite { .. } | BatchError::UnknownKey { .. }
        )
    }

    /// Why a batch failing with this error is rejected, as one of the stable
    /// reasons counted and recorded at HQ; `None` for errors of sealing,
    /// which never reject a batch.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        Some(match self {
            BatchError::BadMagic => RejectReason::NotABatch,
            BatchError::Truncated { .. } => RejectReason::Truncated,
            BatchError::Malformed { .. } => RejectReason::MalformedHeader,
            BatchError::UnsupportedVersion(_) => RejectReason::UnsupportedVersion,
            BatchError::UnknownSite { .. } => RejectReason::UnknownSite,
            BatchError::UnknownKey { .. } => RejectReason::UnknownKey,
            BatchError::KeySiteMismatch { .. } => RejectReason::KeySiteMismatch,
            BatchError::RetiredKey { .. } => RejectReason::RetiredKey,
            BatchError::RevokedKey { .. } => RejectReason::RevokedKey,
            BatchError::AuthenticationFailed { .. } => RejectReason::AuthenticationFailed,
            BatchError::Decompress { .. } => RejectReason::MalformedPayload,
            BatchError::PayloadTooLarge { .. } => RejectReason::PayloadTooLarge,
            BatchError::HeaderKeyMismatch { .. }
            | BatchError::InvalidSiteId(_)
            | BatchError::InvalidKeyId(_)
            | BatchError::Compress { .. }
            | BatchError::Encrypt
            | BatchError::Randomness { .. } => return None,
        })
    }
}

/// The operator's remedy depends on whether the version is newer than this
/// build (upgrade) or one no release ever wrote (not a tributary batch).
fn unsupported_version_message(version: u8) -> String {
    let supported = crate::header::FORMAT_VERSION;
    if version > supported {
        format!(
            "batch format version {version} is newer than this build reads (version \
             {supported}); upgrade the applier to a release that reads it"
        )
    } else {
        format!(
            "batch format version {version} was never written by a tributary release (this \
             build reads version {supported}); the file is not a tributary batch — reject it"
        )
    }
}

/// Why a site key could not be generated, stored, loaded or added to a keyring.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The site id for a key is invalid.
    #[error(transparent)]
    InvalidSiteId(#[from] InvalidSiteId),

    /// The OS random number generator failed while generating a key.
    #[error(
        "cannot generate a site key: the operating system random number generator failed ({reason}); check the host's entropy source"
    )]
    Randomness {
        /// The RNG's complaint.
        reason: String,
    },

    /// `write_new` found a file already at the destination.
    #[error(
        "key file {} already exists; refusing to overwrite a site key — move it aside first \
         if you really mean to replace it (batches sealed with it can then no longer be opened)",
        path.display()
    )]
    KeyFileExists {
        /// The existing file.
        path: PathBuf,
    },

    /// The destination path has no file name.
    #[error("key file path {} does not name a file; pass a path like /etc/tributary/<site>.key", path.display())]
    NotAFilePath {
        /// The rejected path.
        path: PathBuf,
    },

    /// A key file is accessible to group or others.
    #[error(
        "key file {} is accessible by group or others (mode {mode:03o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A key file is not a regular file.
    #[error("key file {} is not a regular file; point at the key file itself", path.display())]
    NotARegularFile {
        /// The offending path.
        path: PathBuf,
    },

    /// A key file is far bigger than any key file tributary writes.
    #[error("key file {} is larger than {limit} bytes, so it is not a tributary site key; check the path", path.display())]
    KeyFileTooLarge {
        /// The key file.
        path: PathBuf,
        /// The size limit in bytes.
        limit: u64,
    },

    /// A line of a key file is not valid.
    #[error("key file {} line {line}: {problem}", path.display())]
    Parse {
        /// The key file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        problem: String,
    },

    /// A key file lacks a required field.
    #[error("key file {} has no `{field}` line; restore the complete file from the capture site", path.display())]
    MissingField {
        /// The key file.
        path: PathBuf,
        /// The missing field.
        field: &'static str,
    },

    /// A key id for a key is invalid.
    #[error(transparent)]
    InvalidKeyId(#[from] InvalidKeyId),

    /// A key id is marked retired or revoked for another site than the key
    /// with that id belongs to.
    #[error(
        "key id {key_id} belongs to site {key_site}, not to site {state_site}; a key state \
         names the site the key belongs to — correct the site"
    )]
    StateSiteMismatch {
        /// The key id.
        key_id: String,
        /// The site of the key (or of its earlier state).
        key_site: String,
        /// The site the new state names.
        state_site: String,
    },

    /// A line of the key-states file is not valid.
    #[error("key-states file {} line {line}: {problem}", path.display())]
    StatesParse {
        /// The key-states file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        problem: String,
    },

    /// The key-states file is far bigger than any real one.
    #[error("key-states file {} is larger than {limit} bytes; check the path", path.display())]
    StatesFileTooLarge {
        /// The key-states file.
        path: PathBuf,
        /// The size limit in bytes.
        limit: u64,
    },

    /// Two keys with the same key id but different sites or bytes.
    #[error(
        "key id {key_id} is already in the keyring for site {existing_site} with different key \
         material (new key claims site {new_site}); remove the wrong key file"
    )]
    DuplicateKeyId {
        /// The clashing key id.
        key_id: String,
        /// The site of the key already in the keyring.
        existing_site: String,
        /// The site of the key being added.
        new_site: String,
    },

    /// A key file clashes with an earlier one while loading a keyring.
    #[error(
        "key file {} reuses key id {key_id} with different key material than an earlier key \
         file; remove the wrong one",
        path.display()
    )]
    ConflictingKeyFile {
        /// The later key file.
        path: PathBuf,
        /// The clashing key id.
        key_id: String,
    },

    /// A filesystem operation on a key file or directory failed.
    #[error("could not {operation} {}", path.display())]
    Io {
        /// What was being done, e.g. "read key file".
        operation: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_batch_error_is_definite_and_only_unknown_key_is_missing_key() {
        let unknown = BatchError::UnknownKey {
            site_id: "a".into(),
            key_id: "0011223344556677".into(),
        };
        let forged = BatchError::KeySiteMismatch {
            key_id: "0011223344556677".into(),
            key_site: "b".into(),
            claimed_site: "a".into(),
        };
        assert!(
            unknown.is_definite() && forged.is_definite() && BatchError::BadMagic.is_definite()
        );
        assert!(unknown.is_missing_key());
        assert!(!forged.is_missing_key());
        let unknown_site = BatchError::UnknownSite {
            site_id: "z".into(),
            key_id: "0011223344556677".into(),
        };
        assert!(unknown_site.is_missing_key() && unknown_site.is_definite());
    }

    #[test]
    fn messages_name_the_object_and_remedy() {
        let unknown = BatchError::UnknownKey {
            site_id: "clinic-7".into(),
            key_id: "0011223344556677".into(),
        }
        .to_string();
        assert!(unknown.contains("clinic-7") && unknown.contains("0011223344556677"));
        assert!(unknown.contains("key directory"));

        let perms = KeyError::InsecurePermissions {
            path: "/k/site.key".into(),
            mode: 0o644,
        }
        .to_string();
        assert!(perms.contains("chmod 600 /k/site.key"), "{perms}");
        assert!(perms.contains("644"), "{perms}");
    }

    #[test]
    fn unsupported_versions_get_the_remedy_that_fits() {
        let newer = BatchError::UnsupportedVersion(2).to_string();
        assert!(newer.contains("upgrade the applier"), "{newer}");
        let never = BatchError::UnsupportedVersion(0).to_string();
        assert!(never.contains("not a tributary batch"), "{never}");
        assert!(!never.contains("upgrade"), "{never}");
    }
}
