//! The shape shared by tributary's small text files (site key files, the key-states file):
//! UTF-8, a first line naming the format and its version, then `#` comments, blank lines and
//! content lines, all numbered from 1 for error messages.

/// Content lines of `raw` (1-based line number, trimmed text), after checking the header
/// line is exactly `header`. A header with the same format name but another version, and a
/// file that is not this format at all, are told apart. Errors are `(line, problem)`.
pub(crate) fn content_lines<'a>(
    raw: &'a [u8],
    header: &str,
    what: &str,
) -> Result<impl Iterator<Item = (usize, &'a str)>, (usize, String)> {
    let text = std::str::from_utf8(raw).map_err(|e| {
        let line = 1 + raw[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        (line, "is not UTF-8 text".to_owned())
    })?;
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()));
    let format_name = header.split_whitespace().next().unwrap_or(header);
    match lines.next() {
        Some((_, first)) if first == header => {}
        Some((line, first)) if first.starts_with(&format!("{format_name} ")) => {
            return Err((
                line,
                format!("unsupported {what} version {first:?}; this build reads {header:?}"),
            ));
        }
        _ => {
            return Err((
                1,
                format!("expected {header:?}; this is not a tributary {what}"),
            ));
        }
    }
    Ok(lines.filter(|(_, content)| !content.is_empty() && !content.starts_with('#')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_versions_and_comments() {
        let lines: Vec<_> = content_lines(b"fmt v1\n# note\n\n a = 1 \n", "fmt v1", "thing")
            .unwrap()
            .collect();
        assert_eq!(lines, vec![(4, "a = 1")]);
        let (line, problem) = content_lines(b"fmt v9\n", "fmt v1", "thing").err().unwrap();
        assert_eq!(line, 1);
        assert!(problem.contains("unsupported thing version"), "{problem}");
        let (_, problem) = content_lines(b"other\n", "fmt v1", "thing").err().unwrap();
        assert!(problem.contains("not a tributary thing"), "{problem}");
        let (line, _) = content_lines(b"fmt v1\n\xff\n", "fmt v1", "thing")
            .err()
            .unwrap();
        assert_eq!(line, 2);
    }
}
