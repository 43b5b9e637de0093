//! The batch header: the cleartext, authenticated description of a batch
//! (which site sealed it, with which key, and where it sits in that site's
//! stream).
//!
//! Invariant: a header that passes [`BatchHeader::validate`] has format
//! version [`FORMAT_VERSION`], a valid site id and a valid key id, so its
//! encoding always fits the wire layout's one-byte length prefixes.

use serde::{Deserialize, Serialize};

use crate::error::BatchError;
use crate::identifier::{validate_key_id, validate_site_id};

/// The batch format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// The cleartext header of a batch. All fields are authenticated by the AEAD.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchHeader {
    /// Wire format version; [`FORMAT_VERSION`] for batches this build seals.
    pub format_version: u8,
    /// The capture site that sealed the batch.
    pub site_id: String,
    /// The id of the site key that sealed the batch.
    pub key_id: String,
    /// The capture epoch (bumped when a site's stream restarts).
    pub epoch: u64,
    /// Position of the batch within the epoch.
    pub sequence: u64,
    /// Number of row changes in the payload.
    pub row_count: u32,
}

impl BatchHeader {
    /// A header for the current [`FORMAT_VERSION`].
    pub fn new(
        site_id: impl Into<String>,
        key_id: impl Into<String>,
        epoch: u64,
        sequence: u64,
        row_count: u32,
    ) -> Self {
        BatchHeader {
            format_version: FORMAT_VERSION,
            site_id: site_id.into(),
            key_id: key_id.into(),
            epoch,
            sequence,
            row_count,
        }
    }

    /// Checks the header can be sealed: supported version, valid ids.
    pub(crate) fn validate(&self) -> Result<(), BatchError> {
        if self.format_version != FORMAT_VERSION {
            return Err(BatchError::UnsupportedVersion(self.format_version));
        }
        validate_site_id(&self.site_id)?;
        validate_key_id(&self.key_id)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_uses_current_version_and_validates() {
        let header = BatchHeader::new("clinic-1", "0123456789abcdef", 2, 3, 4);
        assert_eq!(header.format_version, FORMAT_VERSION);
        assert!(header.validate().is_ok());
    }

    #[test]
    fn validate_rejects_bad_fields() {
        let mut header = BatchHeader::new("clinic-1", "0123456789abcdef", 2, 3, 4);
        header.format_version = 9;
        assert!(matches!(
            header.validate(),
            Err(BatchError::UnsupportedVersion(9))
        ));
        let header = BatchHeader::new("../etc", "0123456789abcdef", 2, 3, 4);
        assert!(matches!(
            header.validate(),
            Err(BatchError::InvalidSiteId(_))
        ));
        let header = BatchHeader::new("clinic-1", "XYZ", 2, 3, 4);
        assert!(matches!(
            header.validate(),
            Err(BatchError::InvalidKeyId(_))
        ));
    }
}
