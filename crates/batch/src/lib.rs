//! Batch format v1 for Tributary: how a capture site seals a batch of row
//! changes and how the applier opens it. This is the only crate that touches
//! key bytes.
//!
//! A batch is a binary header followed by ciphertext. The payload (JSON bytes
//! supplied by the caller) is compressed with zstd and encrypted with
//! XChaCha20-Poly1305 under the site's key; the encoded header, including the
//! random nonce, is the AEAD associated data, so site, key id, epoch, sequence
//! and row count are all authenticated.
//!
//! Invariant kept across the crate: no function panics on malformed input and
//! no error or `Debug` output contains key bytes or payload contents.

#[cfg(test)]
mod decoder_properties;
mod entropy;
pub use entropy::random_hex;
mod envelope;
mod error;
mod frame;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;
mod header;
mod identifier;
mod key_file;
mod key_states;
mod keyring;
mod payload;
mod reject_reason;
mod site_key;
mod versioned_text;

pub use envelope::{MAX_PAYLOAD_BYTES, open, open_with_limit, read_header, seal};
pub use error::{BatchError, KeyError};
pub use header::{BatchHeader, FORMAT_VERSION};
pub use identifier::{
    InvalidKeyId, InvalidSiteId, KEY_ID_LEN, MAX_SITE_ID_LEN, validate_key_id, validate_site_id,
};
pub use key_states::{KEY_STATES_FILE_NAME, KeyState};
pub use keyring::Keyring;
pub use reject_reason::RejectReason;
pub use site_key::SiteKey;
