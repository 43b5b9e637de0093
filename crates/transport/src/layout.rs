//! Where things live under a transport root, and how big a batch file may be:
//!
//! ```text
//! <root>/<site_id>/<epoch:010>-<sequence:020>.batch          committed batches
//! <root>/<site_id>/.<name>.staged / .<name>.staging          writer's staged files
//! <root>/<site_id>/rejected/<name> + <name>.reason           rejected batches
//! ```
//!
//! Invariants: a site directory path is only ever built from a validated site
//! id, so no path computed here escapes the root; writers and readers share
//! one size limit, so nothing is published that the reader would refuse.

use std::path::{Path, PathBuf};

use tributary_batch::validate_site_id;

use crate::error::TransportError;

/// Largest batch file the transport writes or reads: 1 GiB.
pub const MAX_BATCH_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// Name of the per-site directory holding rejected batches.
pub(crate) const REJECTED_DIR: &str = "rejected";

/// `<root>/<site_id>`, after validating the site id.
pub(crate) fn site_dir(root: &Path, site_id: &str) -> Result<PathBuf, TransportError> {
    validate_site_id(site_id)?;
    Ok(root.join(site_id))
}

/// Whether a directory entry name is hidden (staged files, temporaries).
pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_dir_refuses_escaping_ids() {
        let root = Path::new("/srv/tributary");
        assert_eq!(site_dir(root, "clinic-1").unwrap(), root.join("clinic-1"));
        for bad in ["..", ".", "a/../../etc", "/etc", ""] {
            assert!(
                matches!(site_dir(root, bad), Err(TransportError::InvalidSiteId(_))),
                "{bad:?}"
            );
        }
    }
}
