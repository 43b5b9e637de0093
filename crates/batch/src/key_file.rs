//! Site key files: the on-disk text form of a [`SiteKey`] and the only code
//! that reads or writes it.
//!
//! ```text
//! tributary-site-key v1
//! site_id = clinic-01
//! key_id = 0123456789abcdef
//! key = <64 hex digits>
//! ```
//!
//! Blank lines and lines starting with `#` are ignored; every other line must
//! be one of the three fields, each exactly once.
//!
//! Invariants: a key file is created with mode 0600 and becomes visible only
//! when complete (written and fsynced under a temporary name, then hard-linked
//! into place, which also refuses to replace an existing file); a key file
//! readable or writable by group/others is refused on load; parse errors name
//! the file and line but never echo key material; buffers holding key text are
//! wiped on drop.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::entropy;
use crate::error::KeyError;
use crate::site_key::{KEY_LEN, KeyPartsError, SiteKey};

/// First line of every version-1 key file.
const FILE_HEADER: &str = "tributary-site-key v1";
/// Key files are tiny; anything bigger is not a key file.
const MAX_KEY_FILE_BYTES: u64 = 4096;

impl SiteKey {
    /// Writes this key to a new file at `path` with mode 0600.
    ///
    /// Fails with [`KeyError::KeyFileExists`] if anything already exists at
    /// `path`. The file is fsynced, appears atomically and its directory is
    /// fsynced before this returns.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let file_name = path.file_name().ok_or_else(|| KeyError::NotAFilePath {
            path: path.to_owned(),
        })?;
        if fs::symlink_metadata(path).is_ok() {
            return Err(KeyError::KeyFileExists {
                path: path.to_owned(),
            });
        }
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let mut suffix = [0u8; 8];
        entropy::fill(&mut suffix).map_err(|reason| KeyError::Randomness { reason })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(".tmp-{}", hex::encode(suffix)));
        let temp = dir.join(temp_name);

        let result = write_temp(&temp, &render(self)).and_then(|()| link_into_place(&temp, path));
        // The temporary name is only scaffolding; its removal is best effort.
        let _ = fs::remove_file(&temp);
        result?;
        sync_directory(dir)
    }

    /// Loads a key file, refusing files accessible by group or others.
    pub fn load(path: &Path) -> Result<SiteKey, KeyError> {
        let io_error = |operation| {
            move |source| KeyError::Io {
                operation,
                path: path.to_owned(),
                source,
            }
        };
        let file = File::open(path).map_err(io_error("open key file"))?;
        let metadata = file.metadata().map_err(io_error("inspect key file"))?;
        if !metadata.is_file() {
            return Err(KeyError::NotARegularFile {
                path: path.to_owned(),
            });
        }
        check_private(path, &metadata)?;
        if metadata.len() > MAX_KEY_FILE_BYTES {
            return Err(KeyError::KeyFileTooLarge {
                path: path.to_owned(),
                limit: MAX_KEY_FILE_BYTES,
            });
        }
        let mut raw = Zeroizing::new(Vec::new());
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(io_error("read key file"))?;
        if raw.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(KeyError::KeyFileTooLarge {
                path: path.to_owned(),
                limit: MAX_KEY_FILE_BYTES,
            });
        }
        parse(&raw, path)
    }
}

/// The text of a key file.
fn render(key: &SiteKey) -> Zeroizing<String> {
    let mut key_hex = Zeroizing::new(String::with_capacity(2 * KEY_LEN));
    for byte in key.secret_bytes() {
        key_hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        key_hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0x0f)]));
    }
    let mut text = Zeroizing::new(String::with_capacity(160));
    text.push_str(FILE_HEADER);
    text.push_str("\nsite_id = ");
    text.push_str(key.site_id());
    text.push_str("\nkey_id = ");
    text.push_str(key.key_id());
    text.push_str("\nkey = ");
    text.push_str(&key_hex);
    text.push('\n');
    text
}

/// Parses key file bytes; `path` is only used in error messages.
fn parse(raw: &[u8], path: &Path) -> Result<SiteKey, KeyError> {
    let parse_error = |line: usize, problem: String| KeyError::Parse {
        path: path.to_owned(),
        line,
        problem,
    };
    let lines = crate::versioned_text::content_lines(raw, FILE_HEADER, "site key file")
        .map_err(|(line, problem)| parse_error(line, problem))?;

    let mut site_id: Option<(usize, String)> = None;
    let mut key_id: Option<(usize, String)> = None;
    let mut key: Option<(usize, Zeroizing<[u8; KEY_LEN]>)> = None;
    for (line, content) in lines {
        let Some((name, value)) = content.split_once('=') else {
            return Err(parse_error(line, "expected `name = value`".to_owned()));
        };
        let (name, value) = (name.trim(), value.trim());
        let first_seen = match name {
            "site_id" => site_id.as_ref().map(|(l, _)| *l),
            "key_id" => key_id.as_ref().map(|(l, _)| *l),
            "key" => key.as_ref().map(|(l, _)| *l),
            _ => {
                return Err(parse_error(
                    line,
                    format!("unknown field {name:?}; expected site_id, key_id or key"),
                ));
            }
        };
        if let Some(first) = first_seen {
            return Err(parse_error(
                line,
                format!("`{name}` appears again (first on line {first})"),
            ));
        }
        match name {
            "site_id" => site_id = Some((line, value.to_owned())),
            "key_id" => key_id = Some((line, value.to_owned())),
            _ => {
                let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
                if value.len() != 2 * KEY_LEN
                    || hex::decode_to_slice(value, bytes.as_mut_slice()).is_err()
                {
                    return Err(parse_error(
                        line,
                        format!("`key` must be {} hex digits ({KEY_LEN} bytes)", 2 * KEY_LEN),
                    ));
                }
                key = Some((line, bytes));
            }
        }
    }

    let missing = |field| KeyError::MissingField {
        path: path.to_owned(),
        field,
    };
    let (site_line, site_id) = site_id.ok_or_else(|| missing("site_id"))?;
    let (key_id_line, key_id) = key_id.ok_or_else(|| missing("key_id"))?;
    let (_, bytes) = key.ok_or_else(|| missing("key"))?;
    SiteKey::from_parts(site_id, key_id, bytes).map_err(|e| match e {
        KeyPartsError::SiteId(e) => parse_error(site_line, e.to_string()),
        KeyPartsError::KeyId(e) => parse_error(key_id_line, e.to_string()),
    })
}

/// Creates `temp` (mode 0600, must not exist), writes `text`, fsyncs it.
fn write_temp(temp: &Path, text: &str) -> Result<(), KeyError> {
    let io_error = |operation| {
        move |source| KeyError::Io {
            operation,
            path: temp.to_owned(),
            source,
        }
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(temp)
        .map_err(io_error("create temporary key file"))?;
    file.write_all(text.as_bytes())
        .map_err(io_error("write temporary key file"))?;
    file.sync_all()
        .map_err(io_error("fsync temporary key file"))
}

/// Publishes the complete temporary file under its final name, never replacing.
fn link_into_place(temp: &Path, path: &Path) -> Result<(), KeyError> {
    fs::hard_link(temp, path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            KeyError::KeyFileExists {
                path: path.to_owned(),
            }
        } else {
            KeyError::Io {
                operation: "create key file",
                path: path.to_owned(),
                source,
            }
        }
    })
}

/// Makes a directory's entries durable.
fn sync_directory(dir: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| KeyError::Io {
            operation: "fsync key directory",
            path: dir.to_owned(),
            source,
        })?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: PathBuf::from(path),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn parse_text(text: &str) -> Result<SiteKey, KeyError> {
        parse(text.as_bytes(), Path::new("/keys/x.key"))
    }

    fn valid_text() -> String {
        format!("{FILE_HEADER}\nsite_id = clinic-1\nkey_id = 0123456789abcdef\nkey = {KEY_HEX}\n")
    }

    fn parse_line(result: Result<SiteKey, KeyError>) -> (usize, String) {
        match result {
            Err(KeyError::Parse { line, problem, .. }) => (line, problem),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn render_then_parse_gives_the_same_key() {
        let key = SiteKey::generate("clinic-1").unwrap();
        let parsed = parse_text(&render(&key)).unwrap();
        assert!(parsed.same_key_as(&key));
    }

    #[test]
    fn parses_fields_in_any_order_with_comments() {
        let text = format!(
            "{FILE_HEADER}\r\n# note\n\nkey = {KEY_HEX}\nkey_id=0123456789abcdef\n site_id =clinic-1 \n"
        );
        let key = parse_text(&text).unwrap();
        assert_eq!(
            (key.site_id(), key.key_id()),
            ("clinic-1", "0123456789abcdef")
        );
        assert_eq!(hex::encode(key.secret_bytes()), KEY_HEX);
    }

    #[test]
    fn parse_errors_name_the_line() {
        assert_eq!(parse_line(parse_text("hello\n")).0, 1);
        assert!(
            parse_line(parse_text("tributary-site-key v2\n"))
                .1
                .contains("unsupported")
        );
        let base = valid_text();
        let (line, problem) = parse_line(parse_text(&format!("{base}colour = blue\n")));
        assert_eq!(line, 5);
        assert!(problem.contains("colour"));
        let (line, problem) = parse_line(parse_text(&format!("{base}site_id = other\n")));
        assert_eq!(line, 5);
        assert!(problem.contains("line 2"), "{problem}");
        assert_eq!(parse_line(parse_text(&format!("{base}just words\n"))).0, 5);
        let bad_site = base.replace("site_id = clinic-1", "site_id = ../x");
        assert_eq!(parse_line(parse_text(&bad_site)).0, 2);
        let bad_id = base.replace("0123456789abcdef", "0123");
        assert_eq!(parse_line(parse_text(&bad_id)).0, 3);
        let mut not_utf8 = base.clone().into_bytes();
        not_utf8.extend_from_slice(b"\n\xff\n");
        assert!(matches!(
            parse(&not_utf8, Path::new("k")),
            Err(KeyError::Parse { line: 6, .. })
        ));
    }

    #[test]
    fn bad_key_hex_is_reported_without_echoing_it() {
        for bad in [
            &KEY_HEX[..62],
            "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ] {
            let text = valid_text().replace(KEY_HEX, bad);
            let (line, problem) = parse_line(parse_text(&text));
            assert_eq!(line, 4);
            let message = parse_text(&text).unwrap_err().to_string();
            assert!(
                !message.contains(bad) && !problem.contains(bad),
                "{message}"
            );
        }
    }

    #[test]
    fn missing_fields_are_named() {
        let text = valid_text().replace(&format!("key = {KEY_HEX}\n"), "");
        assert!(matches!(
            parse_text(&text),
            Err(KeyError::MissingField { field: "key", .. })
        ));
        let text = valid_text().replace("site_id = clinic-1\n", "");
        assert!(matches!(
            parse_text(&text),
            Err(KeyError::MissingField {
                field: "site_id",
                ..
            })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn write_new_creates_a_private_file_that_loads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = SiteKey::generate("clinic-1").unwrap();
        let path = dir.path().join(key.file_name());
        key.write_new(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(SiteKey::load(&path).unwrap().same_key_as(&key));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn write_new_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.key");
        let first = SiteKey::generate("clinic-1").unwrap();
        first.write_new(&path).unwrap();
        let second = SiteKey::generate("clinic-1").unwrap();
        let err = second.write_new(&path).unwrap_err();
        assert!(matches!(err, KeyError::KeyFileExists { .. }));
        assert!(err.to_string().contains("site.key"));
        assert!(SiteKey::load(&path).unwrap().same_key_as(&first));
    }

    #[cfg(unix)]
    #[test]
    fn load_refuses_group_or_world_accessible_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.key");
        SiteKey::generate("clinic-1")
            .unwrap()
            .write_new(&path)
            .unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = SiteKey::load(&path).unwrap_err();
            assert!(
                matches!(err, KeyError::InsecurePermissions { .. }),
                "{mode:o}"
            );
            let message = err.to_string();
            assert!(message.contains("chmod 600") && message.contains(&path.display().to_string()));
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(SiteKey::load(&path).is_ok());
    }

    #[test]
    fn load_refuses_oversized_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.key");
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&path)
            .unwrap()
            .write_all(&vec![b'#'; 5000])
            .unwrap();
        assert!(matches!(
            SiteKey::load(&path),
            Err(KeyError::KeyFileTooLarge { .. })
        ));
        assert!(matches!(
            SiteKey::load(&dir.path().join("absent.key")),
            Err(KeyError::Io {
                operation: "open key file",
                ..
            })
        ));
        assert!(matches!(
            SiteKey::load(dir.path()),
            Err(KeyError::NotARegularFile { .. })
        ));
    }
}
