//! `tributary status`: what the configuration's parts know, gathered once, then printed for
//! people (aligned text, [`crate::report`]) or for scripts (`--json`, one object whose fields
//! are documented in README.md). Neither shows row values; the JSON leaves out the seed's
//! resume key, which is a row's primary key.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use tributary_apply::{
    DroppedColumn, ParkedAge, ParkedSummary, RejectedBatch, RejectionCount, SiteStatus,
};
use tributary_capture::{Checkpoint, ResumeBy};

use crate::config::Config;
use crate::report;

/// Recent rejected batches listed.
const RECENT_REJECTIONS: u32 = 10;

#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The `[site]` part: where capture's checkpoint stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteSide>,
    /// The `[hq]` part: each site as HQ applies it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hq: Option<HqSide>,
}

#[derive(Debug, Serialize)]
pub struct SiteSide {
    pub site_id: String,
    pub state_dir: PathBuf,
    pub resume_by: &'static str,
    /// `None` until capture or seed has run.
    pub checkpoint: Option<CaptureCheckpoint>,
    #[serde(skip)]
    resume: ResumeBy,
    #[serde(skip)]
    raw: Option<Checkpoint>,
}

/// Capture's checkpoint, as far as operators need it.
#[derive(Debug, Serialize)]
pub struct CaptureCheckpoint {
    pub epoch: u64,
    pub next_sequence: u64,
    pub gtid_position: String,
    /// `file:position`, once known.
    pub binlog_position: Option<String>,
    /// Parts of a large source transaction already published, when capture stopped inside one.
    pub parts_published: Option<u32>,
    /// A first seed is running or was interrupted.
    pub seeding: bool,
}

#[derive(Debug, Serialize)]
pub struct HqSide {
    pub sites: Vec<SiteStatus>,
    /// A site silent this long is shown offline (`[hq] site_silent_after_s`).
    pub site_silent_after_s: u64,
    pub parked_report_age_s: u64,
    pub parked_ages: Vec<ParkedAge>,
    /// Listed only when asked for (`--parked N`).
    pub parked: Vec<ParkedSummary>,
    pub dropped_columns: Vec<DroppedColumn>,
    pub rejections_by_reason: Vec<RejectionCount>,
    /// The newest rejected batches, newest first.
    pub recent_rejections: Vec<RejectedBatch>,
}

/// Reads what the configuration's parts know; `parked` rows are listed when above 0.
pub async fn gather(config: &Config, parked: u32) -> Result<StatusReport> {
    if !config.has_site() && !config.has_hq() {
        anyhow::bail!(
            "the configuration has neither a [site] nor an [hq] section; status needs one"
        );
    }
    let site = if config.has_site() {
        Some(site_side(config)?)
    } else {
        None
    };
    let hq = if config.has_hq() {
        Some(hq_side(config, parked).await?)
    } else {
        None
    };
    Ok(StatusReport { site, hq })
}

fn site_side(config: &Config) -> Result<SiteSide> {
    let state_dir = config.state_dir()?;
    let raw = tributary_capture::StateDir::peek(&state_dir)?;
    let resume = config.resume_by()?;
    Ok(SiteSide {
        site_id: config.site_id()?,
        resume_by: resume.as_str(),
        checkpoint: raw.as_ref().map(|c| CaptureCheckpoint {
            epoch: c.epoch,
            next_sequence: c.next_sequence,
            gtid_position: c.gtid_position.clone(),
            binlog_position: c.binlog_position.as_ref().map(|b| b.to_string()),
            parts_published: c.partial.as_ref().map(|p| p.parts),
            seeding: c.seeding,
        }),
        state_dir,
        resume,
        raw,
    })
}

async fn hq_side(config: &Config, parked: u32) -> Result<HqSide> {
    let (opts, _) = config.hq_database()?;
    let report_age = config.parked_report_age()?.as_secs();
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .context("connecting to HQ")?;
    let sites = tributary_apply::site_statuses(&mut conn)
        .await
        .context("reading status (has the applier run against this HQ yet?)")?;
    let side = HqSide {
        sites,
        site_silent_after_s: config.site_silent_after_s()?,
        parked_report_age_s: report_age,
        parked_ages: tributary_apply::parked_ages(&mut conn, report_age).await?,
        parked: if parked > 0 {
            tributary_apply::parked_rows(&mut conn, parked).await?
        } else {
            Vec::new()
        },
        dropped_columns: tributary_apply::dropped_columns(&mut conn).await?,
        rejections_by_reason: tributary_apply::rejection_counts(&mut conn).await?,
        recent_rejections: tributary_apply::rejected_batches(&mut conn, RECENT_REJECTIONS).await?,
    };
    conn.disconnect().await.ok();
    Ok(side)
}

/// The report for people.
pub fn render_text(status: &StatusReport) -> String {
    let mut out = String::new();
    if let Some(site) = &status.site {
        out.push_str(&report::capture_state(
            &site.site_id,
            &site.state_dir,
            site.raw.as_ref(),
            site.resume,
        ));
    }
    let Some(hq) = &status.hq else {
        return out;
    };
    out.push_str(&report::status_table(&hq.sites, hq.site_silent_after_s));
    out.push_str(&report::parked_age_line(
        &hq.parked_ages,
        hq.parked_report_age_s,
    ));
    out.push_str(&report::parked_table(&hq.parked));
    if !hq.dropped_columns.is_empty() {
        let dropped: Vec<String> = hq
            .dropped_columns
            .iter()
            .map(|d| {
                format!(
                    "{} {}.{} ({} rows)",
                    d.site_id, d.table, d.column, d.rows_written
                )
            })
            .collect();
        out.push_str(&format!(
            "columns HQ lacks, rows written without them (schema map dropped_at_hq): {}\n",
            dropped.join(", ")
        ));
    }
    if !hq.rejections_by_reason.is_empty() {
        let counts: Vec<String> = hq
            .rejections_by_reason
            .iter()
            .map(|c| format!("{} {} {}", c.site_id, c.reason_code, c.batches))
            .collect();
        out.push_str(&format!(
            "rejected batches by reason: {}\n",
            counts.join(", ")
        ));
    }
    for r in &hq.recent_rejections {
        out.push_str(&format!(
            "rejected: {} epoch {} batch {} [{}]: {}\n",
            r.site_id, r.epoch, r.sequence, r.reason_code, r.detail
        ));
    }
    out
}

/// The report for scripts: one JSON object.
pub fn render_json(status: &StatusReport) -> Result<String> {
    Ok(serde_json::to_string_pretty(status)? + "\n")
}
