//! Batch file names: `<epoch:010>-<sequence:020>.batch` for committed
//! batches, `.<name>.staged` for staged ones and `.<name>.staging` while a
//! staged file is still being written.
//!
//! Invariants: names are canonical — parsing accepts exactly the strings
//! rendering produces (no sign, no extra or missing zero padding), so every
//! (epoch, sequence) has one name and every accepted name one position.
//! Ordering is always by the parsed numbers, never by the name text.

use crate::error::TransportError;

/// Extension of committed batch files.
const BATCH_SUFFIX: &str = ".batch";
/// Suffix of staged (complete, not yet committed) batch files.
const STAGED_SUFFIX: &str = ".staged";
/// Suffix of staged files still being written.
const STAGING_SUFFIX: &str = ".staging";

/// Description of the committed name pattern, for error messages.
const BATCH_PATTERN: &str = "batch (<epoch:010>-<sequence:020>.batch)";
/// Description of the staged name pattern, for error messages.
const STAGED_PATTERN: &str = "staged batch (.<epoch:010>-<sequence:020>.batch.staged)";

/// A batch's position in its site's stream, as encoded in file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct BatchName {
    pub(crate) epoch: u64,
    pub(crate) sequence: u64,
}

impl BatchName {
    /// The committed file name.
    pub(crate) fn file_name(self) -> String {
        format!("{:010}-{:020}{BATCH_SUFFIX}", self.epoch, self.sequence)
    }

    /// The hidden name of the complete staged file.
    pub(crate) fn staged_file_name(self) -> String {
        format!(".{}{STAGED_SUFFIX}", self.file_name())
    }

    /// The hidden name used while the staged file is being written.
    pub(crate) fn staging_file_name(self) -> String {
        format!(".{}{STAGING_SUFFIX}", self.file_name())
    }

    /// Parses a committed file name.
    pub(crate) fn parse(name: &str) -> Result<BatchName, TransportError> {
        parse_with(name, name, BATCH_PATTERN)
    }

    /// Parses a staged file name.
    pub(crate) fn parse_staged(name: &str) -> Result<BatchName, TransportError> {
        let inner = name
            .strip_prefix('.')
            .and_then(|rest| rest.strip_suffix(STAGED_SUFFIX))
            .ok_or_else(|| {
                invalid(
                    name,
                    STAGED_PATTERN,
                    "it does not start with '.' and end in \".staged\"",
                )
            })?;
        parse_with(name, inner, STAGED_PATTERN)
    }
}

/// Parses `inner` (a committed name), reporting errors against `name`.
fn parse_with(
    name: &str,
    inner: &str,
    expected: &'static str,
) -> Result<BatchName, TransportError> {
    let stem = inner
        .strip_suffix(BATCH_SUFFIX)
        .ok_or_else(|| invalid(name, expected, "it does not end in \".batch\""))?;
    let (epoch, sequence) = stem
        .split_once('-')
        .ok_or_else(|| invalid(name, expected, "it has no '-' between epoch and sequence"))?;
    let parsed = BatchName {
        epoch: number(name, expected, "epoch", epoch)?,
        sequence: number(name, expected, "sequence", sequence)?,
    };
    if parsed.file_name() != inner {
        return Err(invalid(
            name,
            expected,
            "it is not zero-padded to 10 epoch and 20 sequence digits",
        ));
    }
    Ok(parsed)
}

fn number(
    name: &str,
    expected: &'static str,
    field: &str,
    digits: &str,
) -> Result<u64, TransportError> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            name,
            expected,
            &format!("the {field} is not a decimal number"),
        ));
    }
    digits.parse().map_err(|_| {
        invalid(
            name,
            expected,
            &format!("the {field} does not fit in 64 bits"),
        )
    })
}

fn invalid(name: &str, expected: &'static str, problem: &str) -> TransportError {
    TransportError::InvalidBatchName {
        name: name.to_owned(),
        expected,
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_zero_padded() {
        let name = BatchName {
            epoch: 1,
            sequence: 42,
        };
        assert_eq!(name.file_name(), "0000000001-00000000000000000042.batch");
        assert_eq!(
            name.staged_file_name(),
            ".0000000001-00000000000000000042.batch.staged"
        );
        assert_eq!(
            name.staging_file_name(),
            ".0000000001-00000000000000000042.batch.staging"
        );
    }

    #[test]
    fn parse_inverts_rendering_across_the_range() {
        for (epoch, sequence) in [
            (0, 0),
            (1, 42),
            (9_999_999_999, 7),
            (10_000_000_000, 8),
            (u64::MAX, u64::MAX),
        ] {
            let name = BatchName { epoch, sequence };
            assert_eq!(BatchName::parse(&name.file_name()).unwrap(), name);
            assert_eq!(
                BatchName::parse_staged(&name.staged_file_name()).unwrap(),
                name
            );
        }
    }

    #[test]
    fn parse_rejects_non_canonical_and_foreign_names() {
        for bad in [
            "",
            "README",
            "0000000001-00000000000000000042.bat",
            "0000000001_00000000000000000042.batch",
            "1-42.batch",
            "00000000001-00000000000000000042.batch",
            "+000000001-00000000000000000042.batch",
            "0000000001-+0000000000000000042.batch",
            "0000000001--0000000000000000042.batch",
            "0000000001-99999999999999999999.batch",
            "0000000001-00000000000000000042.batch.staged",
            ".0000000001-00000000000000000042.batch",
        ] {
            assert!(
                matches!(
                    BatchName::parse(bad),
                    Err(TransportError::InvalidBatchName { .. })
                ),
                "{bad:?} parsed"
            );
        }
        for bad in [
            "0000000001-00000000000000000042.batch",
            ".0000000001-00000000000000000042.batch.staging",
        ] {
            assert!(
                BatchName::parse_staged(bad).is_err(),
                "{bad:?} parsed as staged"
            );
        }
    }

    #[test]
    fn errors_name_the_file_and_pattern() {
        let message = BatchName::parse("notes.txt").unwrap_err().to_string();
        assert!(
            message.contains("\"notes.txt\"") && message.contains("<epoch:010>"),
            "{message}"
        );
    }
}
