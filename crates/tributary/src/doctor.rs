//! `tributary doctor`: everything a site needs before capture can run, checked at once, each
//! failure printed with the statement or configuration line that fixes it.

use crate::config::Config;
use anyhow::Result;
use std::fmt::Write as _;
use tributary_capture::{Check, Verdict};
use tributary_schema::{Catalog, IdentityRule, SchemaMap};

/// Runs every check; returns the report and whether nothing failed.
pub async fn run_doctor(config: &Config) -> Result<(String, bool)> {
    let mut checks = Vec::new();
    let settings = match config.capture_settings() {
        Ok(settings) => settings,
        Err(e) => {
            checks.push(fail(
                "configuration",
                &format!("{e:#}"),
                "fix the configuration file",
            ));
            return Ok(render(&checks));
        }
    };
    checks.push(match tributary_batch::SiteKey::load(&settings.key_file) {
        Ok(key) if key.site_id() == settings.site_id => ok(
            "site key",
            &format!("{} ({})", key.key_id(), settings.key_file.display()),
        ),
        Ok(key) => fail(
            "site key",
            &format!("belongs to site '{}'", key.site_id()),
            &format!(
                "generate this site's key: tributary keys generate --site {} --out-dir <dir>",
                settings.site_id
            ),
        ),
        Err(e) => fail(
            "site key",
            &e.to_string(),
            "tributary keys generate --site <id> --out-dir <dir>, then set site.key_file",
        ),
    });
    checks.push(writable("transport directory", &settings.outbox_dir));
    checks.push(writable("state directory", &settings.state_dir));

    let mut conn = match tributary_capture::connect(&settings.source).await {
        Ok(conn) => conn,
        Err(e) => {
            checks.push(fail(
                "site database connection",
                &e.to_string(),
                "check site.database.url, the password file and that the server listens there",
            ));
            return Ok(render(&checks));
        }
    };
    checks.push(ok("site database connection", &settings.database));
    checks.extend(tributary_capture::check_server(&mut conn, &settings.database).await?);
    match Catalog::introspect(&mut conn, &settings.database).await {
        Ok(catalog) => match SchemaMap::build(&catalog, &settings.policy) {
            Ok(map) => checks.extend(schema_checks(&catalog, &map)),
            Err(e) => checks.push(fail(
                "schema map",
                &e.to_string(),
                "adjust the schema map file",
            )),
        },
        Err(e) => checks.push(fail(
            "schema",
            &e.to_string(),
            "check the database name and SELECT rights",
        )),
    }
    Ok(render(&checks))
}

fn schema_checks(catalog: &Catalog, map: &SchemaMap) -> Vec<Check> {
    let synced = map.tables().count();
    let excluded = catalog.tables.len() - synced;
    let mut checks = vec![ok(
        "schema map",
        &format!("{synced} tables synced, {excluded} excluded"),
    )];
    for table in map.tables() {
        if let IdentityRule::Natural { columns } = &table.identity
            && table.primary_key.is_empty()
        {
            checks.push(Check {
                name: format!("table {}", table.name),
                actual: format!("no primary key and no uuid: rows are identified by all {} columns", columns.len()),
                verdict: Verdict::Warn,
                fix: Some("identical rows cannot be told apart; add a key or exclude the table in the schema map".into()),
            });
        }
    }
    checks
}

fn writable(name: &str, dir: &std::path::Path) -> Check {
    let probe = dir.join(".tributary-doctor-probe");
    let result = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b""))
        .and_then(|_| std::fs::remove_file(&probe));
    match result {
        Ok(()) => ok(name, &dir.display().to_string()),
        Err(e) => fail(
            name,
            &format!("{}: {e}", dir.display()),
            "create it and give the capture user write access",
        ),
    }
}

fn ok(name: &str, actual: &str) -> Check {
    Check {
        name: name.into(),
        actual: actual.into(),
        verdict: Verdict::Ok,
        fix: None,
    }
}

fn fail(name: &str, actual: &str, fix: &str) -> Check {
    Check {
        name: name.into(),
        actual: actual.into(),
        verdict: Verdict::Fail,
        fix: Some(fix.into()),
    }
}

fn render(checks: &[Check]) -> (String, bool) {
    let mut out = String::new();
    for check in checks {
        let tag = match check.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        let _ = writeln!(out, "{tag} {}: {}", check.name, check.actual);
        if let Some(fix) = &check.fix {
            let _ = writeln!(out, "     fix: {fix}");
        }
    }
    let failures = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    let warnings = checks.iter().filter(|c| c.verdict == Verdict::Warn).count();
    if failures == 0 {
        let _ = writeln!(
            out,
            "\nall required checks passed ({warnings} warnings): capture can run"
        );
    } else {
        let _ = writeln!(
            out,
            "\n{failures} checks failed, {warnings} warnings: fix the failures before starting capture"
        );
    }
    (out, failures == 0)
}
