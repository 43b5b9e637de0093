//! The source server requirements (DESIGN.md, "Source server requirements"), checked all at
//! once: `tributary doctor` prints every result with the statement or configuration line that
//! fixes it, and capture's preflight refuses to start on the first required one that fails.

use crate::error::CaptureError;
use mysql_async::Conn;
use mysql_async::prelude::*;
use std::collections::BTreeMap;

/// Binlogs kept for less than this limit how long a site can be offline before capture must
/// re-seed; shorter retention is reported as a warning.
pub const RECOMMENDED_RETENTION_DAYS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Capture cannot run correctly until this is fixed.
    Fail,
    /// Capture runs, but an operator should look.
    Warn,
}

/// One checked requirement.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub actual: String,
    pub verdict: Verdict,
    /// The statement or configuration line that fixes it, when it is not ok.
    pub fix: Option<String>,
}

/// Checks every server setting and privilege capture needs, on `conn` (connected as the
/// capture user) for `database`.
pub async fn check_server(conn: &mut Conn, database: &str) -> Result<Vec<Check>, CaptureError> {
    let variables: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'server_id', 'binlog_format', \
             'binlog_row_image', 'binlog_row_metadata', 'binlog_checksum', 'log_bin_compress', \
             'expire_logs_days', 'binlog_expire_logs_seconds', 'gtid_mode')",
        )
        .await?;
    let variables: BTreeMap<String, String> = variables
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let mut checks = Vec::new();
    let mut setting =
        |name: &str, accepted: &[&str], wanted: &str, dynamic: bool, otherwise: Verdict| {
            let actual = variables
                .get(name)
                .cloned()
                .unwrap_or_else(|| "(missing)".to_owned());
            let ok = accepted.iter().any(|a| a.eq_ignore_ascii_case(&actual));
            let config = format!("[mysqld] {name} = {wanted}");
            checks.push(Check {
            name: name.to_owned(),
            actual,
            verdict: if ok { Verdict::Ok } else { otherwise },
            fix: (!ok).then(|| {
                if dynamic {
                    format!(
                        "SET GLOBAL {name} = '{wanted}'; and in the server configuration: {config}"
                    )
                } else {
                    format!("in the server configuration: {config}, then restart the server")
                }
            }),
        });
        };
    setting("log_bin", &["ON", "1"], "mysql-bin", false, Verdict::Fail);
    setting("binlog_format", &["ROW"], "ROW", true, Verdict::Fail);
    setting("binlog_row_image", &["FULL"], "FULL", true, Verdict::Fail);
    // Without FULL metadata rows are read by position against the schema history: correct as
    // long as capture sees every DDL in order, but latin1 text and ENUM/SET names need FULL.
    setting(
        "binlog_row_metadata",
        &["FULL"],
        "FULL",
        true,
        Verdict::Warn,
    );
    setting("binlog_checksum", &["CRC32"], "CRC32", true, Verdict::Fail);
    if variables.contains_key("log_bin_compress") {
        setting(
            "log_bin_compress",
            &["OFF", "0"],
            "OFF",
            true,
            Verdict::Fail,
        );
    }
    if variables.contains_key("gtid_mode") {
        // MySQL: capture resumes by GTID set; without GTIDs it resumes by binlog
        // file/position, which is exact but tied to this server's binlog files (a failover
        // to a replica, or a RESET MASTER, means a re-seed).
        setting("gtid_mode", &["ON"], "ON", false, Verdict::Warn);
    }
    let server_id = variables.get("server_id").cloned().unwrap_or_default();
    let unset = server_id.is_empty() || server_id == "0";
    checks.push(Check {
        name: "server_id".into(),
        actual: server_id,
        verdict: if unset { Verdict::Fail } else { Verdict::Ok },
        fix: unset.then(|| {
            "in the server configuration: [mysqld] server_id = <a number unique among this \
             site's servers>, then restart"
                .to_owned()
        }),
    });
    checks.push(retention(&variables));
    checks.extend(privileges(conn, database).await?);
    Ok(checks)
}

fn retention(variables: &BTreeMap<String, String>) -> Check {
    let seconds = variables
        .get("binlog_expire_logs_seconds")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .or_else(|| {
            variables
                .get("expire_logs_days")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|d| *d > 0.0)
                .map(|d| (d * 86_400.0) as u64)
        });
    let recommended = RECOMMENDED_RETENTION_DAYS * 86_400;
    match seconds {
        None => Check {
            name: "binlog retention".into(),
            actual: "binlogs never expire".into(),
            verdict: Verdict::Ok,
            fix: None,
        },
        Some(s) => Check {
            name: "binlog retention".into(),
            actual: format!("{:.1} days", s as f64 / 86_400.0),
            verdict: if s >= recommended {
                Verdict::Ok
            } else {
                Verdict::Warn
            },
            fix: (s < recommended).then(|| {
                format!(
                    "capture can be offline at most this long before the site must be re-seeded; \
                     SET GLOBAL binlog_expire_logs_seconds = {recommended}; and in the server \
                     configuration: [mysqld] binlog_expire_logs_seconds = {recommended}"
                )
            }),
        },
    }
}

/// The privileges of the capture user, read from `SHOW GRANTS`.
async fn privileges(conn: &mut Conn, database: &str) -> Result<Vec<Check>, CaptureError> {
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await?;
    let user = user.unwrap_or_default();
    let grantee = match user.split_once('@') {
        Some((name, host)) => format!("'{name}'@'{host}'"),
        None => format!("'{user}'"),
    };
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    let global: Vec<String> = grants
        .iter()
        .filter(|g| g.contains(" ON *.* "))
        .map(|g| g.to_ascii_uppercase())
        .collect();
    let on_database: Vec<String> = grants
        .iter()
        .filter(|g| {
            let upper = g.to_ascii_uppercase();
            upper.contains(&format!(" ON `{}`.* ", database.to_ascii_uppercase()))
        })
        .map(|g| g.to_ascii_uppercase())
        .collect();
    let has = |set: &[String], privilege: &str| {
        set.iter()
            .any(|g| g.contains("ALL PRIVILEGES") || g.contains(privilege))
    };
    let mut checks = Vec::new();
    let mut privilege = |name: &str, ok: bool, grant: String| {
        checks.push(Check {
            name: format!("privilege {name}"),
            actual: if ok {
                "granted".into()
            } else {
                "missing".into()
            },
            verdict: if ok { Verdict::Ok } else { Verdict::Fail },
            fix: (!ok).then_some(grant),
        });
    };
    privilege(
        "REPLICATION SLAVE",
        has(&global, "REPLICATION SLAVE"),
        format!("GRANT REPLICATION SLAVE ON *.* TO {grantee};"),
    );
    privilege(
        "REPLICATION CLIENT (BINLOG MONITOR)",
        has(&global, "REPLICATION CLIENT") || has(&global, "BINLOG MONITOR"),
        format!("GRANT REPLICATION CLIENT ON *.* TO {grantee};"),
    );
    privilege(
        &format!("SELECT on {database}"),
        has(&global, "SELECT") || has(&on_database, "SELECT"),
        format!("GRANT SELECT ON `{database}`.* TO {grantee};"),
    );
    Ok(checks)
}

/// The first failed server setting as a capture error (preflight refuses to start on it).
/// Privileges are read from `SHOW GRANTS` text, which wildcard and table-level grants can
/// defeat, so they only inform `doctor`: a right that is really missing fails on its own
/// statement with the server's error.
pub fn first_failure(checks: &[Check]) -> Result<(), CaptureError> {
    match checks
        .iter()
        .find(|c| c.verdict == Verdict::Fail && !c.name.starts_with("privilege "))
    {
        None => Ok(()),
        Some(check) => Err(CaptureError::Requirement {
            name: check.name.clone(),
            actual: check.actual.clone(),
            fix: check.fix.clone().unwrap_or_default(),
        }),
    }
}
