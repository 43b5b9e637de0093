//! A site key: the 32-byte XChaCha20-Poly1305 key a capture site seals its
//! batches with, together with the site id it belongs to and its key id.
//!
//! Invariants: the site id and key id are always valid; the key bytes are
//! wiped from memory when the key is dropped, never appear in `Debug` output
//! and never leave this crate except through the key file writer.

use std::fmt;

use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use zeroize::Zeroizing;

use crate::entropy;
use crate::error::KeyError;
use crate::identifier::{InvalidKeyId, validate_key_id, validate_site_id};

/// Length of the secret key in bytes.
pub(crate) const KEY_LEN: usize = 32;
/// Random bytes behind a key id (hex encoded to 16 characters).
const KEY_ID_BYTES: usize = 8;

/// A site's secret sealing key.
#[derive(Clone)]
pub struct SiteKey {
    site_id: String,
    key_id: String,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl SiteKey {
    /// Generates a fresh random key (and random key id) for `site_id`.
    pub fn generate(site_id: &str) -> Result<SiteKey, KeyError> {
        validate_site_id(site_id)?;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        let mut id = [0u8; KEY_ID_BYTES];
        entropy::fill(bytes.as_mut_slice())
            .and_then(|()| entropy::fill(&mut id))
            .map_err(|reason| KeyError::Randomness { reason })?;
        Ok(SiteKey {
            site_id: site_id.to_owned(),
            key_id: hex::encode(id),
            bytes,
        })
    }

    /// Assembles a key from parts read elsewhere (the key file parser).
    pub(crate) fn from_parts(
        site_id: String,
        key_id: String,
        bytes: Zeroizing<[u8; KEY_LEN]>,
    ) -> Result<SiteKey, KeyPartsError> {
        validate_site_id(&site_id).map_err(KeyPartsError::SiteId)?;
        validate_key_id(&key_id).map_err(KeyPartsError::KeyId)?;
        Ok(SiteKey {
            site_id,
            key_id,
            bytes,
        })
    }

    /// The site this key belongs to.
    pub fn site_id(&self) -> &str {
        &self.site_id
    }

    /// The key's id (16 lowercase hex characters), recorded in every batch header.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The conventional file name for this key: `<site_id>-<key_id>.key`.
    pub fn file_name(&self) -> String {
        format!("{}-{}.key", self.site_id, self.key_id)
    }

    /// The AEAD keyed with this key.
    pub(crate) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.as_slice().into())
    }

    /// The raw key bytes, for the key file writer only.
    pub(crate) fn secret_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Whether both keys have the same site, key id and key bytes.
    pub(crate) fn same_key_as(&self, other: &SiteKey) -> bool {
        self.site_id == other.site_id && self.key_id == other.key_id && *self.bytes == *other.bytes
    }
}

impl fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteKey")
            .field("site_id", &self.site_id)
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Which part of a key assembled by [`SiteKey::from_parts`] was invalid.
#[derive(Debug)]
pub(crate) enum KeyPartsError {
    SiteId(crate::identifier::InvalidSiteId),
    KeyId(InvalidKeyId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_gives_valid_distinct_keys() {
        let a = SiteKey::generate("clinic-1").unwrap();
        let b = SiteKey::generate("clinic-1").unwrap();
        assert_eq!(a.site_id(), "clinic-1");
        assert!(validate_key_id(a.key_id()).is_ok());
        assert_ne!(a.key_id(), b.key_id());
        assert_ne!(a.secret_bytes(), b.secret_bytes());
        assert!(!a.same_key_as(&b));
        assert!(a.same_key_as(&a.clone()));
        assert_eq!(a.file_name(), format!("clinic-1-{}.key", a.key_id()));
    }

    #[test]
    fn generate_rejects_bad_site_id() {
        assert!(matches!(
            SiteKey::generate("a/b"),
            Err(KeyError::InvalidSiteId(_))
        ));
    }

    #[test]
    fn debug_redacts_key_bytes() {
        let key = SiteKey::generate("clinic-1").unwrap();
        let debug = format!("{key:?} {key:#?}");
        let hex_lower = hex::encode(key.secret_bytes());
        assert!(!debug.contains(&hex_lower));
        assert!(!debug.contains(&hex_lower.to_uppercase()));
        assert!(!debug.contains(&format!("{:?}", key.secret_bytes())));
        assert!(debug.contains("<redacted>") && debug.contains(key.key_id()));
    }
}
