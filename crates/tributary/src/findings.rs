//! The rows verification found: what is wrong with each (missing, extra, different), the
//! bounded list `verify --list` prints, and the findings file `verify --out` writes and
//! `tributary resend --from-file` reads.
//!
//! A findings file holds identities (uuids, natural keys) and column names, never values:
//! one row per line, `table<TAB>finding<TAB>identity[<TAB>col,col]`, after `#` comment
//! lines. Identities never hold a tab or a line break (uuids; natural keys are JSON arrays,
//! whose strings escape both). It is written as rows are found, so it may be as long as the
//! table without verification holding it.

use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use tributary_model::Identity;

/// What kind of disagreement a listed row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Finding {
    /// At the site, not at HQ.
    Missing,
    /// At HQ (attributed to the site, see `extra`), not at the site.
    Extra,
    /// At both, with different values in some columns.
    Different,
}

impl Finding {
    pub fn as_str(self) -> &'static str {
        match self {
            Finding::Missing => "missing",
            Finding::Extra => "extra",
            Finding::Different => "different",
        }
    }

    pub fn parse(text: &str) -> Option<Finding> {
        match text {
            "missing" => Some(Finding::Missing),
            "extra" => Some(Finding::Extra),
            "different" => Some(Finding::Different),
            _ => None,
        }
    }
}

/// One listed row: its table, what is wrong, its identity and (for a different row) the
/// columns that differ. Never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub table: String,
    pub finding: Finding,
    pub identity: Identity,
    pub columns: Vec<String>,
}

impl Listed {
    /// The line of a findings file: `table<TAB>finding<TAB>identity[<TAB>col,col]`.
    /// Identities never hold a tab or a line break (uuids; natural keys are JSON, escaped).
    pub fn line(&self) -> String {
        let mut line = format!(
            "{}\t{}\t{}",
            self.table,
            self.finding.as_str(),
            self.identity
        );
        if !self.columns.is_empty() {
            line.push('\t');
            line.push_str(&self.columns.join(","));
        }
        line
    }
}

/// Where verification puts the identities of the rows that disagree: the first `limit` per
/// table kept for printing, and every one written to a findings file when one is given
/// (streamed, so the file may be as long as the table).
pub struct Findings {
    limit_per_table: usize,
    listed: Vec<Listed>,
    unlisted: BTreeMap<String, u64>,
    per_table: HashMap<String, usize>,
    out: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
}

impl Findings {
    /// Counts only (nothing listed, no file).
    pub fn none() -> Findings {
        Findings {
            limit_per_table: 0,
            listed: Vec::new(),
            unlisted: BTreeMap::new(),
            per_table: HashMap::new(),
            out: None,
        }
    }

    /// Keeps up to `limit_per_table` rows per table for printing; writes every row to `out`.
    pub fn new(limit_per_table: usize, out: Option<&Path>, header: &str) -> Result<Findings> {
        let out = match out {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let mut writer = std::io::BufWriter::new(file);
                writeln!(writer, "# {header}")?;
                writeln!(
                    writer,
                    "# table<TAB>finding<TAB>identity[<TAB>differing columns]; \
                     'tributary resend --from-file' reads this file"
                )?;
                Some((path.to_owned(), writer))
            }
            None => None,
        };
        Ok(Findings {
            limit_per_table,
            out,
            ..Findings::none()
        })
    }

    pub(crate) fn add(&mut self, listed: Listed) -> Result<()> {
        if let Some((path, out)) = &mut self.out {
            writeln!(out, "{}", listed.line())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let count = self.per_table.entry(listed.table.clone()).or_default();
        if *count < self.limit_per_table {
            *count += 1;
            self.listed.push(listed);
        } else if self.limit_per_table > 0 {
            *self.unlisted.entry(listed.table).or_default() += 1;
        }
        Ok(())
    }

    /// The rows kept for printing, in the order found.
    pub fn listed(&self) -> &[Listed] {
        &self.listed
    }

    /// Per table, how many rows were left out of [`Findings::listed`] by the limit.
    pub fn unlisted(&self) -> &BTreeMap<String, u64> {
        &self.unlisted
    }

    /// Flushes the findings file; returns its path when there is one.
    pub fn finish(&mut self) -> Result<Option<PathBuf>> {
        match &mut self.out {
            Some((path, out)) => {
                out.flush()
                    .with_context(|| format!("writing {}", path.display()))?;
                out.get_ref()
                    .sync_all()
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(Some(path.clone()))
            }
            None => Ok(None),
        }
    }
}

/// Reads a findings file (or a hand-written list): per table, the identities to re-send.
/// Lines are `table<TAB>finding<TAB>identity[<TAB>columns]` or `table<TAB>identity`; `#`
/// comments and blank lines are skipped. `extra` rows are not at the site, so they are
/// counted and left out.
pub fn read_findings(text: &str) -> Result<(BTreeMap<String, Vec<Identity>>, u64)> {
    let mut wanted: BTreeMap<String, Vec<Identity>> = BTreeMap::new();
    let mut extra = 0;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let (table, identity) = match fields.as_slice() {
            [table, identity] => (*table, *identity),
            [table, finding, identity, ..] => match Finding::parse(finding) {
                Some(Finding::Extra) => {
                    extra += 1;
                    continue;
                }
                Some(_) => (*table, *identity),
                None => bail!(
                    "line {}: unknown finding (expected missing, different or extra)",
                    number + 1
                ),
            },
            _ => bail!(
                "line {}: expected table<TAB>finding<TAB>identity (as written by \
                 'tributary verify --out')",
                number + 1
            ),
        };
        if table.is_empty() || identity.is_empty() {
            bail!("line {}: empty table or identity", number + 1);
        }
        wanted
            .entry(table.to_owned())
            .or_default()
            .push(Identity::from_raw(identity));
    }
    Ok((wanted, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_lines_round_trip_through_the_resend_reader_without_extra_rows() {
        let natural = Identity::from_natural_key(&["a\tb".into(), "role".into()]);
        let lines = [
            Listed {
                table: "obs".into(),
                finding: Finding::Missing,
                identity: Identity::from_uuid("o1"),
                columns: vec![],
            },
            Listed {
                table: "person_name".into(),
                finding: Finding::Different,
                identity: Identity::from_uuid("n1"),
                columns: vec!["given_name".into(), "family_name".into()],
            },
            Listed {
                table: "user_role".into(),
                finding: Finding::Missing,
                identity: natural.clone(),
                columns: vec![],
            },
            Listed {
                table: "obs".into(),
                finding: Finding::Extra,
                identity: Identity::from_uuid("o2"),
                columns: vec![],
            },
        ];
        let text = format!(
            "# header\n\n{}\nobs\to3\n",
            lines
                .iter()
                .map(Listed::line)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let (wanted, extra) = read_findings(&text).unwrap();
        assert_eq!(extra, 1);
        assert_eq!(
            wanted["obs"],
            vec![Identity::from_uuid("o1"), Identity::from_raw("o3")]
        );
        assert_eq!(wanted["person_name"], vec![Identity::from_uuid("n1")]);
        assert_eq!(wanted["user_role"], vec![natural]);
        assert!(read_findings("obs\tvanished\to1\n").is_err());
        assert!(read_findings("just-one-field\n").is_err());
    }

    #[test]
    fn findings_keep_a_bounded_list_per_table_and_count_the_rest() {
        let mut findings = Findings::new(2, None, "test").unwrap();
        for n in 0..5 {
            findings
                .add(Listed {
                    table: "obs".into(),
                    finding: Finding::Missing,
                    identity: Identity::from_uuid(&format!("o{n}")),
                    columns: vec![],
                })
                .unwrap();
        }
        assert_eq!(findings.listed().len(), 2);
        assert_eq!(findings.unlisted()["obs"], 3);
    }
}
