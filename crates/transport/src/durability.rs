//! Crash-safe filesystem steps shared by the outbox and the inbox.
//!
//! Invariants: a directory this module creates has had its parent fsynced; a
//! file it writes has been fsynced before the call returns; every failure is
//! reported with the operation and path (nothing is silently ignored except
//! "already in the desired state").

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::error::TransportError;

/// Makes sure `dir` exists as a directory, creating missing components and
/// fsyncing each created component's parent.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), TransportError> {
    match fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(TransportError::NotADirectory {
                path: dir.to_owned(),
            });
        }
        // A missing component, or a file where a parent directory belongs:
        // the walk up the parents below reports which.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) => {}
        Err(e) => return Err(TransportError::io("inspect directory", dir)(e)),
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        ensure_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent.unwrap_or(Path::new("."))),
        // Someone else created it between our check and our create.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::metadata(dir) {
            Ok(metadata) if metadata.is_dir() => Ok(()),
            _ => Err(TransportError::NotADirectory {
                path: dir.to_owned(),
            }),
        },
        Err(e) => Err(TransportError::io("create directory", dir)(e)),
    }
}

/// Fsyncs a directory so renames, creations and removals in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), TransportError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(TransportError::io("fsync directory", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates or truncates `path`, writes `bytes` and fsyncs the file.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TransportError> {
    let mut file = File::create(path).map_err(TransportError::io("create file", path))?;
    file.write_all(bytes)
        .map_err(TransportError::io("write file", path))?;
    file.sync_all()
        .map_err(TransportError::io("fsync file", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_dir_creates_nested_directories_and_is_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a/b/c");
        ensure_dir(&nested).unwrap();
        assert!(nested.is_dir());
        ensure_dir(&nested).unwrap();
    }

    #[test]
    fn ensure_dir_refuses_a_file_in_the_way() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("site");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            ensure_dir(&file),
            Err(TransportError::NotADirectory { .. })
        ));
        assert!(matches!(
            ensure_dir(&file.join("below")),
            Err(TransportError::NotADirectory { .. })
        ));
    }

    #[test]
    fn write_file_replaces_content() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("f");
        write_file(&path, b"first, longer").unwrap();
        write_file(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
    }
}
