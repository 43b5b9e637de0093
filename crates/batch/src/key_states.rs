//! The key-states file: the operator's list of retired and revoked key ids,
//! kept beside the key files in HQ's key directory as `key-states`.
//!
//! ```text
//! tributary-key-states v1
//! # state   key id            site
//! retired   0123456789abcdef  clinic-1
//! revoked   fedcba9876543210  clinic-1
//! ```
//!
//! Blank lines and lines starting with `#` are ignored; every other line is
//! three whitespace-separated words: `active`, `retired` or `revoked`, a key
//! id, and the site the key belongs to. A key id appears at most once. A
//! retired or revoked key needs no key file (a revoked key's file may be
//! deleted); `active` is the state of every key the file does not list.
//!
//! Invariants: the file is optional (a key directory without it loads as
//! before, every key active); it holds no secrets; reading it is bounded in
//! size and never panics; parse errors name the file and line.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::error::KeyError;
use crate::identifier::{validate_key_id, validate_site_id};

/// Name of the key-states file inside a key directory.
pub const KEY_STATES_FILE_NAME: &str = "key-states";
/// First line of every version-1 key-states file.
const FILE_HEADER: &str = "tributary-key-states v1";
/// Far more than thousands of lines of states.
const MAX_KEY_STATES_BYTES: u64 = 1024 * 1024;

/// Whether HQ accepts batches sealed with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Batches sealed with the key are opened.
    Active,
    /// The site moved to a newer key; batches sealed with this one are
    /// rejected as `retired_key` (mark it active again to let stragglers in).
    Retired,
    /// The key must not be trusted; batches sealed with it are rejected as
    /// `revoked_key`.
    Revoked,
}

impl KeyState {
    /// The word used in the key-states file.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Revoked => "revoked",
        }
    }

    fn parse(word: &str) -> Option<KeyState> {
        match word {
            "active" => Some(KeyState::Active),
            "retired" => Some(KeyState::Retired),
            "revoked" => Some(KeyState::Revoked),
            _ => None,
        }
    }
}

/// One line of the key-states file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateLine {
    /// 1-based line number, for error messages.
    pub(crate) line: usize,
    pub(crate) state: KeyState,
    pub(crate) key_id: String,
    pub(crate) site_id: String,
}

/// Reads the key-states file at `path`; a missing file is an empty list.
pub(crate) fn read(path: &Path) -> Result<Vec<StateLine>, KeyError> {
    let io_error = |operation| {
        move |source| KeyError::Io {
            operation,
            path: path.to_owned(),
            source,
        }
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("open key-states file")(e)),
    };
    let mut raw = Vec::new();
    file.take(MAX_KEY_STATES_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io_error("read key-states file"))?;
    if raw.len() as u64 > MAX_KEY_STATES_BYTES {
        return Err(KeyError::StatesFileTooLarge {
            path: path.to_owned(),
            limit: MAX_KEY_STATES_BYTES,
        });
    }
    parse(&raw, path)
}

/// Parses key-states bytes; `path` is only used in error messages.
pub(crate) fn parse(raw: &[u8], path: &Path) -> Result<Vec<StateLine>, KeyError> {
    let parse_error = |line: usize, problem: String| KeyError::StatesParse {
        path: path.to_owned(),
        line,
        problem,
    };
    let lines = crate::versioned_text::content_lines(raw, FILE_HEADER, "key-states file")
        .map_err(|(line, problem)| parse_error(line, problem))?;

    let mut entries: Vec<StateLine> = Vec::new();
    for (line, content) in lines {
        let words: Vec<&str> = content.split_whitespace().collect();
        let [state, key_id, site_id] = words[..] else {
            return Err(parse_error(
                line,
                "expected three words: `active|retired|revoked <key id> <site id>`".to_owned(),
            ));
        };
        let state = KeyState::parse(state).ok_or_else(|| {
            parse_error(
                line,
                format!("unknown state {state:?}; expected active, retired or revoked"),
            )
        })?;
        validate_key_id(key_id).map_err(|e| parse_error(line, e.to_string()))?;
        validate_site_id(site_id).map_err(|e| parse_error(line, e.to_string()))?;
        if let Some(first) = entries.iter().find(|e| e.key_id == key_id) {
            return Err(parse_error(
                line,
                format!(
                    "key id {key_id} appears again (first on line {})",
                    first.line
                ),
            ));
        }
        entries.push(StateLine {
            line,
            state,
            key_id: key_id.to_owned(),
            site_id: site_id.to_owned(),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<StateLine>, KeyError> {
        parse(text.as_bytes(), Path::new("/keys/key-states"))
    }

    fn error_line(result: Result<Vec<StateLine>, KeyError>) -> (usize, String) {
        match result {
            Err(KeyError::StatesParse { line, problem, .. }) => (line, problem),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn parses_states_with_comments_and_spacing() {
        let text = format!(
            "{FILE_HEADER}\n# rotation of 2025-03\n\nretired 0123456789abcdef clinic-1\r\n\
             \trevoked   fedcba9876543210\tclinic-1 \nactive 00000000000000aa clinic-2\n"
        );
        let lines = parse_text(&text).unwrap();
        let summary: Vec<_> = lines
            .iter()
            .map(|l| (l.line, l.state, l.key_id.as_str(), l.site_id.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (4, KeyState::Retired, "0123456789abcdef", "clinic-1"),
                (5, KeyState::Revoked, "fedcba9876543210", "clinic-1"),
                (6, KeyState::Active, "00000000000000aa", "clinic-2"),
            ]
        );
    }

    #[test]
    fn errors_name_the_line_and_problem() {
        assert_eq!(error_line(parse_text("hello\n")).0, 1);
        assert!(
            error_line(parse_text("tributary-key-states v2\n"))
                .1
                .contains("unsupported")
        );
        let base = format!("{FILE_HEADER}\nrevoked 0123456789abcdef clinic-1\n");
        let cases = [
            ("paused 0123456789abcdef clinic-1", "unknown state"),
            ("revoked 0123456789abcdef", "three words"),
            ("revoked 0123456789abcdef clinic-1 extra", "three words"),
            ("revoked 0123456789ABCDEF clinic-1", "key id"),
            ("revoked fedcba9876543210 ../etc", "site id"),
            ("retired 0123456789abcdef clinic-1", "line 2"),
        ];
        for (line_text, expected) in cases {
            let (line, problem) = error_line(parse_text(&format!("{base}{line_text}\n")));
            assert_eq!(line, 3, "{line_text}");
            assert!(problem.contains(expected), "{line_text}: {problem}");
        }
        let mut not_utf8 = base.into_bytes();
        not_utf8.extend_from_slice(b"\xff\n");
        assert!(matches!(
            parse(&not_utf8, Path::new("k")),
            Err(KeyError::StatesParse { line: 3, .. })
        ));
    }

    #[test]
    fn a_missing_file_is_no_states_and_a_huge_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_STATES_FILE_NAME);
        assert_eq!(read(&path).unwrap(), Vec::new());
        let mut text = format!("{FILE_HEADER}\n");
        text.push_str(&"#".repeat(MAX_KEY_STATES_BYTES as usize));
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            read(&path),
            Err(KeyError::StatesFileTooLarge { .. })
        ));
    }
}
