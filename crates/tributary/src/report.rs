//! Printing status and verification for people: plain aligned tables on stdout, with
//! identities and reasons but never row values.

use crate::parked::human_age;
use crate::verify::{Findings, TableReport};
use std::fmt::Write;
use std::path::Path;
use tributary_apply::{Applier, ApplyError, ParkedAge, ParkedSummary, PassReport, SiteStatus};
use tributary_capture::{Checkpoint, ResendReport, ResumeBy};

/// One applier pass over what is waiting (`tributary apply --once`, and after an import):
/// apply, retry parked rows, and print what happened, held sites included.
pub async fn apply_once(applier: &mut Applier) -> Result<PassReport, ApplyError> {
    let mut pass = applier.apply_available().await?;
    pass.rows.released += applier.retry_parked().await?;
    println!(
        "applied {} batches ({} rows, {} parked, {} released), {} duplicates skipped, {} rejected",
        pass.batches_applied,
        pass.rows.applied,
        pass.rows.parked,
        pass.rows.released,
        pass.duplicates,
        pass.rejected
    );
    for (site, sequence) in &pass.gaps {
        println!("site {site} is held: waiting for batch {sequence}");
    }
    Ok(pass)
}

/// `tributary status` at the site: where capture's checkpoint stands, under both keys.
pub fn capture_state(
    site_id: &str,
    state_dir: &Path,
    checkpoint: Option<&Checkpoint>,
    resume_by: ResumeBy,
) -> String {
    let mut out = String::new();
    let Some(c) = checkpoint else {
        let _ = writeln!(
            out,
            "capture of site {site_id}: no checkpoint in {} yet (capture or seed has not run)",
            state_dir.display()
        );
        return out;
    };
    let _ = writeln!(out, "capture of site {site_id} ({}):", state_dir.display());
    let _ = writeln!(out, "  epoch {}, next batch {}", c.epoch, c.next_sequence);
    let gtid = if c.gtid_position.is_empty() {
        "(none: from the oldest binlog)"
    } else {
        &c.gtid_position
    };
    let _ = writeln!(out, "  GTID position         {gtid}");
    let binlog = c.binlog_position.as_ref().map_or_else(
        || "(not recorded yet: at the next transaction end)".to_owned(),
        |b| b.to_string(),
    );
    let _ = writeln!(out, "  binlog file/position  {binlog}");
    let mode = match resume_by {
        ResumeBy::Gtid => "GTID (file/position where the source has no GTIDs)",
        ResumeBy::FilePosition => "binlog file/position",
    };
    let _ = writeln!(
        out,
        "  resumes by            {mode} ([site] resume_by = \"{}\")",
        resume_by.as_str()
    );
    if let Some(partial) = &c.partial {
        let _ = writeln!(
            out,
            "  inside a source transaction sent in parts: {} parts ({} rows) published",
            partial.parts, partial.rows
        );
    }
    if c.seeding {
        let _ = writeln!(
            out,
            "  a first seed is running or was interrupted (run 'tributary seed' again if no \
             seed is running)"
        );
    }
    out
}

/// A site's state in a few words: held at a gap, or streaming (and what needs a person).
/// A site whose outbox or source lag is at least this far behind is catching up.
const CATCHING_UP_SECONDS: u64 = 300;
/// A site heard from but without new rows for this long is idle.
const IDLE_SECONDS: i64 = 3_600;

/// The site's state in words: held, failing, offline, catching up, idle or streaming (with
/// what needs a person). `silent_after_s`: `[hq] site_silent_after_s`.
pub fn site_state(s: &SiteStatus, silent_after_s: u64) -> String {
    let health = s.health.as_ref();
    if let Some(seq) = s.waiting_for_sequence {
        return format!("held: waiting for batch {seq}");
    }
    let failing = health.filter(|h| h.failing).map(|h| {
        h.last_error.as_ref().map_or_else(
            || "an error".to_owned(),
            |e| format!("{}: {}", e.class, e.message),
        )
    });
    let silent_after = i64::try_from(silent_after_s).unwrap_or(i64::MAX);
    if s.silent_seconds
        .is_some_and(|silent| silent >= silent_after)
    {
        let since = s.last_heard_at.as_deref().unwrap_or("?");
        return match failing {
            Some(error) => {
                format!("offline since {since} UTC (it last said it was failing: {error})")
            }
            None => format!("offline since {since} UTC"),
        };
    }
    if let Some(error) = failing {
        return format!("failing: {error}");
    }
    if let Some(health) = health {
        let backlog = health.spool_oldest_age_seconds.unwrap_or(0);
        let lag = health.source_lag_seconds.unwrap_or(0);
        if backlog >= CATCHING_UP_SECONDS || lag >= CATCHING_UP_SECONDS {
            return format!(
                "catching up: {} waiting at the site (oldest {} old), source lag {}",
                crate::progress::human_bytes(health.spool_bytes.unwrap_or(0)),
                human_age(backlog),
                human_age(lag)
            );
        }
    }
    if s.conflicts_open > 0 {
        return "streaming (conflicts wait: `tributary conflicts list`)".to_owned();
    }
    if s.unseeded_after_epoch.is_some() {
        return "streaming (not seeded since its state was reset: see below)".to_owned();
    }
    if s.rows_parked_now > 0 {
        return "streaming (rows parked)".to_owned();
    }
    match s.data_silent_seconds {
        // An HQ from before batches with rows were told apart knows only that rows came.
        None if s.rows_applied > 0 => "streaming".to_owned(),
        None => "idle (no data yet)".to_owned(),
        Some(quiet) if quiet >= IDLE_SECONDS => {
            format!("idle (no new data for {})", human_age(quiet.unsigned_abs()))
        }
        Some(_) => "streaming".to_owned(),
    }
}

/// What the site's last health report says, in one line: versions, last data, source lag,
/// outbox, disk, last error.
pub fn health_summary(s: &SiteStatus) -> String {
    let ago = |seconds: Option<i64>| {
        seconds.map_or_else(
            || "never".to_owned(),
            |s| format!("{} ago", human_age(s.max(0).unsigned_abs())),
        )
    };
    let mut parts = vec![format!("last data {}", ago(s.data_silent_seconds))];
    let Some(h) = &s.health else {
        parts.push("no health report yet".to_owned());
        return parts.join("; ");
    };
    let versions = [
        Some(format!("agent {}", h.agent_version)),
        h.database_version.clone(),
        h.openmrs_version.as_ref().map(|v| format!("OpenMRS {v}")),
    ];
    parts.insert(
        0,
        versions
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
    );
    if let Some(lag) = h.source_lag_seconds {
        parts.push(format!("source lag {}", human_age(lag)));
    }
    if let Some(bytes) = h.spool_bytes {
        let oldest = h.spool_oldest_age_seconds.unwrap_or(0);
        parts.push(format!(
            "outbox {} (oldest {})",
            crate::progress::human_bytes(bytes),
            human_age(oldest)
        ));
    }
    if let Some(free) = h.disk_free_bytes {
        parts.push(format!("disk free {}", crate::progress::human_bytes(free)));
    }
    if let Some(e) = &h.last_error {
        let state = if h.failing { "failing" } else { "recovered" };
        parts.push(format!("last error ({}, {state}): {}", e.class, e.message));
    }
    parts.push(format!("reported {}", ago(s.health_age_seconds)));
    parts.join("; ")
}

pub fn status_table(statuses: &[SiteStatus], silent_after_s: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>10} {:>9} {:>12} {:>7} {:>9} {:>8} {:>8} {:>11}  state",
        "site",
        "epoch",
        "sequence",
        "rows applied",
        "parked",
        "conflicts",
        "rejected",
        "lag (s)",
        "last heard"
    );
    for s in statuses {
        let state = site_state(s, silent_after_s);
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>9} {:>12} {:>7} {:>9} {:>8} {:>8} {:>11}  {}",
            s.site_id,
            s.epoch,
            s.last_sequence,
            s.rows_applied,
            s.rows_parked_now,
            s.conflicts_open,
            s.rejected_batches,
            s.lag_seconds.map_or("-".to_owned(), |l| l.to_string()),
            s.silent_seconds
                .map_or("-".to_owned(), |l| format!("{l} s ago")),
            state
        );
    }
    if statuses.is_empty() {
        out.push_str("(no site has delivered a batch yet)\n");
    }
    for s in statuses {
        let _ = writeln!(out, "site {}: {}", s.site_id, health_summary(s));
    }
    for s in statuses.iter().filter(|s| s.rows_dropped > 0) {
        let _ = writeln!(
            out,
            "site {}: {} of its changes were set aside for good (superseded by the site's own \
             deletes, or dropped by an operator); each is kept with its reason in \
             tributary_dropped_row at HQ",
            s.site_id, s.rows_dropped
        );
    }
    for s in statuses {
        if let Some(earlier) = s.unseeded_after_epoch {
            let _ = writeln!(
                out,
                "site {}: epoch {} began without a seed after epoch {earlier} (its capture \
                 state was reset or lost); what changed at the site in between may be missing \
                 at HQ: run 'tributary seed --restart-stream' at the site",
                s.site_id, s.epoch
            );
        }
    }
    out
}

/// How many parked rows are older than `[hq] parked_report_age_s`, and the oldest; nothing
/// when no row is parked.
pub fn parked_age_line(ages: &[ParkedAge], report_age_s: u64) -> String {
    let rows: u64 = ages.iter().map(|a| a.rows).sum();
    let older: u64 = ages.iter().map(|a| a.older).sum();
    let Some(oldest) = ages.iter().max_by_key(|a| a.oldest_age_seconds) else {
        return String::new();
    };
    let mut line = format!(
        "parked rows older than {} (parked_report_age_s = {report_age_s}): {older} of {rows}; \
         oldest parked {} ago (site {})",
        human_age(report_age_s),
        human_age(oldest.oldest_age_seconds),
        oldest.site_id
    );
    if older > 0 {
        line.push_str("; `tributary parked list` says what they wait for");
    }
    line.push('\n');
    line
}

pub fn parked_table(parked: &[ParkedSummary]) -> String {
    let mut out = String::new();
    for p in parked {
        let _ = writeln!(
            out,
            "{} batch {} {}[{}]: {}",
            p.site_id, p.sequence, p.table, p.identity, p.reason
        );
    }
    out
}

pub fn verification_table(reports: &[TableReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.table.len())
        .max()
        .unwrap_or(0)
        .max(20);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$} {:>9} {:>9} {:>13} {:>11} {:>9}  result",
        "table", "site rows", "matched", "missing at HQ", "extra at HQ", "different"
    );
    for r in reports {
        let mut detail = if r.ok() {
            "ok".to_owned()
        } else if r.differing_columns.is_empty() {
            "MISMATCH".to_owned()
        } else {
            let columns: Vec<String> = r
                .differing_columns
                .iter()
                .map(|(c, n)| format!("{c} ({n})"))
                .collect();
            format!("MISMATCH {}", columns.join(", "))
        };
        if r.hq_lacks_table {
            detail.push_str(" (HQ has no such table)");
        }
        if r.unidentified > 0 {
            let _ = write!(
                detail,
                " ({} rows without identity not compared)",
                r.unidentified
            );
        }
        let extra = r
            .extra_at_hq
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{:<width$} {:>9} {:>9} {:>13} {:>11} {:>9}  {}",
            r.table, r.site_rows, r.matched, r.missing_at_hq, extra, r.different, detail
        );
    }
    if reports.iter().any(|r| r.extra_at_hq.is_none()) {
        let _ = writeln!(
            out,
            "extra at HQ \"-\": not checked (HQ keeps no record of which site wrote a row; \
             --extra counts every HQ row the site lacks)"
        );
    }
    out
}

/// `verify --list`: the identities of the rows that disagree (operators need them to act;
/// never values), a bounded number per table.
pub fn findings_list(findings: &Findings) -> String {
    let mut out = String::new();
    if findings.listed().is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\nrows that disagree (table, finding, identity[, columns]):"
    );
    for listed in findings.listed() {
        let _ = write!(
            out,
            "  {} {} {}",
            listed.table,
            listed.finding.as_str(),
            listed.identity
        );
        if !listed.columns.is_empty() {
            let _ = write!(out, " [{}]", listed.columns.join(", "));
        }
        out.push('\n');
    }
    for (table, more) in findings.unlisted() {
        let _ = writeln!(
            out,
            "  {table}: {more} more not listed (raise --limit, or write them all with --out)"
        );
    }
    out
}

/// `tributary resend`: per table, rows asked for and sent, and the identities the site no
/// longer holds.
pub fn resend_table(report: &ResendReport) -> String {
    let mut out = String::new();
    let sent: u64 = report.tables.iter().map(|t| t.sent).sum();
    for t in &report.tables {
        let _ = writeln!(
            out,
            "{:<20} {:>7} requested {:>7} sent {:>7} not at the site",
            t.table,
            t.requested,
            t.sent,
            t.not_at_site.len()
        );
    }
    if report.next_sequence > report.first_sequence {
        let _ = writeln!(
            out,
            "re-sent {sent} rows as batches {}..{}",
            report.first_sequence,
            report.next_sequence - 1
        );
    } else {
        let _ = writeln!(out, "nothing to send");
    }
    for t in &report.tables {
        for identity in &t.not_at_site {
            let _ = writeln!(
                out,
                "not at the site (nothing sent; a row HQ holds is left there): {} {identity}",
                t.table
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_capture::BinlogFilePosition;
    use tributary_model::{SiteError, SiteHealth};

    fn heard(silent_seconds: i64, health: Option<SiteHealth>) -> SiteStatus {
        SiteStatus {
            site_id: "clinic-a".into(),
            epoch: 1,
            last_sequence: 10,
            rows_applied: 100,
            rows_parked_now: 0,
            rows_dropped: 0,
            conflicts_open: 0,
            rejected_batches: 0,
            last_committed_at: None,
            lag_seconds: Some(0),
            waiting_for_sequence: None,
            silent_seconds: Some(silent_seconds),
            unseeded_after_epoch: None,
            data_silent_seconds: Some(silent_seconds),
            health,
            health_age_seconds: Some(silent_seconds),
            last_heard_at: Some("2026-11-15 08:00".into()),
        }
    }

    #[test]
    fn a_site_back_from_weeks_offline_shows_its_backlog_draining_then_streams() {
        let weeks = 21 * 86_400;
        let offline = heard(weeks, None);
        assert_eq!(
            site_state(&offline, 1_800),
            "offline since 2026-11-15 08:00 UTC"
        );
        // Its first batches arrive: HQ hears from it, and its reports say what still waits.
        let draining = heard(
            0,
            Some(SiteHealth {
                spool_bytes: Some(300 << 20),
                spool_oldest_age_seconds: Some(weeks as u64),
                source_lag_seconds: Some(0),
                ..SiteHealth::default()
            }),
        );
        assert_eq!(
            site_state(&draining, 1_800),
            "catching up: 300.0 MiB waiting at the site (oldest 21 d 0 h old), source lag 0 s"
        );
        let drained = heard(
            0,
            Some(SiteHealth {
                spool_bytes: Some(0),
                spool_oldest_age_seconds: Some(0),
                ..SiteHealth::default()
            }),
        );
        assert_eq!(site_state(&drained, 1_800), "streaming");
    }

    #[test]
    fn a_failing_site_says_its_error_and_offline_comes_first() {
        let failing = SiteHealth {
            failing: true,
            last_error: Some(SiteError {
                class: "fatal".into(),
                message: "the checkpoint's binlog was purged".into(),
                at: 0,
            }),
            ..SiteHealth::default()
        };
        assert_eq!(
            site_state(&heard(5, Some(failing.clone())), 1_800),
            "failing: fatal: the checkpoint's binlog was purged"
        );
        assert!(
            site_state(&heard(7_200, Some(failing)), 1_800).starts_with(
                "offline since 2026-11-15 08:00 UTC (it last said it was failing: fatal"
            )
        );
    }

    #[test]
    fn the_site_status_shows_both_checkpoint_keys_and_the_resume_mode() {
        let dir = Path::new("/var/lib/tributary/state");
        let none = capture_state("clinic-a", dir, None, ResumeBy::Gtid);
        assert!(
            none.contains("no checkpoint in /var/lib/tributary/state"),
            "{none}"
        );

        let mut checkpoint = Checkpoint::new("clinic-a", "0-1-42".into());
        let gtid_only = capture_state("clinic-a", dir, Some(&checkpoint), ResumeBy::Gtid);
        assert!(
            gtid_only.contains("GTID position         0-1-42"),
            "{gtid_only}"
        );
        assert!(
            gtid_only.contains("binlog file/position  (not recorded yet"),
            "{gtid_only}"
        );
        assert!(gtid_only.contains("resume_by = \"gtid\""), "{gtid_only}");

        checkpoint.binlog_position = Some(BinlogFilePosition {
            file: "mariadb-bin.000003".into(),
            offset: 1_234,
        });
        let both = capture_state("clinic-a", dir, Some(&checkpoint), ResumeBy::FilePosition);
        assert!(
            both.contains("binlog file/position  mariadb-bin.000003:1234"),
            "{both}"
        );
        assert!(both.contains("resume_by = \"file_position\""), "{both}");
        // Words HQ's status uses for a site's state never appear in the site's part.
        assert!(
            !both.contains("held") && !both.contains("streaming"),
            "{both}"
        );
    }

    #[test]
    fn the_parked_age_line_counts_old_rows_and_names_the_oldest_site() {
        assert_eq!(parked_age_line(&[], 60), "", "nothing parked, nothing said");
        let ages = [
            ParkedAge {
                site_id: "a".to_owned(),
                rows: 3,
                older: 1,
                oldest_age_seconds: 120,
            },
            ParkedAge {
                site_id: "b".to_owned(),
                rows: 2,
                older: 2,
                oldest_age_seconds: 7_200,
            },
        ];
        let line = parked_age_line(&ages, 60);
        assert!(
            line.starts_with("parked rows older than 1 min (parked_report_age_s = 60): 3 of 5; oldest parked 2 h 0 min ago (site b)"),
            "{line}"
        );
    }
}
