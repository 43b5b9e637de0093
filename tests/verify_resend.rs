//! `tributary verify --site` and `tributary resend`: rows deleted at HQ behind the applier's
//! back are reported missing and listed by identity, a row edited at HQ is reported different
//! with its column name (never its value), HQ's own rows are extra only when asked for; the
//! findings file goes to `tributary resend` at the site, whose batches HQ applies once
//! through its normal path (the row edited at HQ meets a conflict, which the operator settles
//! for the site), after which verification is clean and the stream carries on
//! with the next sequence numbers (invariant 2: the re-send is part of the site's sequence).

use anyhow::{Result, bail};
use mysql_async::prelude::*;
use std::time::Duration;
use tributary::dataset::{self, PatientShape, patient_rows};
use tributary_suite::pipeline::{CATCH_UP, CLINIC, Pipeline, PipelineOptions, run_ok};
use tributary_suite::wait_until;

/// A value written at HQ only: it must never appear in verify's output.
const EDITED_AT_HQ: &str = "Edited-At-HQ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_lost_or_changed_at_hq_are_found_by_identity_resent_and_verified() -> Result<()> {
    let p = Pipeline::start("verify-resend", PipelineOptions::default()).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 4, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    // Every synced table, not only the clinical core, agrees once HQ caught up.
    let clean = run_ok(p.run(&["verify", "--site", &p.site_id])?)?;
    for table in ["obs", "location", "concept", "users", "person_name"] {
        assert!(clean.contains(table), "{table} not compared:\n{clean}");
    }

    // The site id must be the configuration's.
    let wrong = p.run(&["verify", "--site", "clinic-b"])?;
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains("clinic-b") && said.contains("'clinic-a'") && said.contains("configuration"),
        "{said}"
    );

    // Behind the applier's back at HQ: an encounter of patient 1 with its obs deleted, the
    // name of patient 2 deleted, the name of patient 3 edited.
    let p1 = patient_rows("clinic-a", 1, shape);
    let p2 = patient_rows("clinic-a", 2, shape);
    let p3 = patient_rows("clinic-a", 3, shape);
    let mut hq = p.hq.conn().await?;
    let lost_obs: Vec<String> = hq
        .exec(
            "SELECT o.uuid FROM obs o JOIN encounter e ON e.encounter_id = o.encounter_id
             WHERE e.uuid = ? ORDER BY o.uuid",
            (&p1.encounters[0],),
        )
        .await?;
    assert!(!lost_obs.is_empty());
    hq.exec_drop(
        "DELETE o FROM obs o JOIN encounter e ON e.encounter_id = o.encounter_id WHERE e.uuid = ?",
        (&p1.encounters[0],),
    )
    .await?;
    hq.exec_drop("DELETE FROM encounter WHERE uuid = ?", (&p1.encounters[0],))
        .await?;
    hq.exec_drop("DELETE FROM person_name WHERE uuid = ?", (&p2.name,))
        .await?;
    // A row identified by its natural key (user identity, role name), with no uuid.
    let (user, role): (String, String) = hq
        .query_first(
            "SELECT u.uuid, r.role FROM user_role r JOIN users u ON u.user_id = r.user_id
             ORDER BY r.role LIMIT 1",
        )
        .await?
        .expect("HQ has user roles");
    hq.exec_drop("DELETE FROM user_role WHERE role = ?", (&role,))
        .await?;
    let user_role = serde_json::to_string(&[user.to_lowercase(), role.clone()])?;
    hq.exec_drop(
        "UPDATE person_name SET given_name = ? WHERE uuid = ?",
        (EDITED_AT_HQ, &p3.name),
    )
    .await?;

    let findings = p.work.join("findings.tsv");
    let out = p.run(&[
        "verify",
        "--site",
        &p.site_id,
        "--list",
        "--limit",
        "3",
        "--out",
        &findings.display().to_string(),
        // Pages far smaller than the tables: every table streams through several pages
        // and a last partial one.
        "--page-rows",
        "7",
    ])?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(3), "{report}");
    let line = |table: &str| -> Result<Vec<String>> {
        let Some(line) = report
            .lines()
            .find(|l| l.split_whitespace().next() == Some(table))
        else {
            bail!("no line for {table}:\n{report}");
        };
        Ok(line.split_whitespace().map(str::to_owned).collect())
    };
    // table, site rows, matched, missing at HQ, extra at HQ, different, result...
    let obs = line("obs")?;
    assert_eq!(obs[3], lost_obs.len().to_string(), "{report}");
    assert_eq!(
        obs[4], "-",
        "extra rows are not checked unless asked:\n{report}"
    );
    let encounter = line("encounter")?;
    assert_eq!(
        (encounter[3].as_str(), encounter[5].as_str()),
        ("1", "0"),
        "{report}"
    );
    let names = line("person_name")?;
    assert_eq!(
        (names[3].as_str(), names[5].as_str()),
        ("1", "1"),
        "{report}"
    );
    assert!(
        names.join(" ").contains("MISMATCH given_name (1)"),
        "{report}"
    );
    assert_eq!(line("person")?[6], "ok", "{report}");
    assert_eq!(line("user_role")?[3], "1", "{report}");
    assert!(
        report.contains(&format!("user_role missing {user_role}")),
        "{report}"
    );
    // Listed by identity, bounded by --limit, never with values.
    assert!(
        report.contains(&format!("encounter missing {}", p1.encounters[0])),
        "{report}"
    );
    assert!(
        report.contains(&format!("person_name missing {}", p2.name)),
        "{report}"
    );
    assert!(
        report.contains(&format!("person_name different {} [given_name]", p3.name)),
        "{report}"
    );
    let listed_obs = report.lines().filter(|l| l.contains("obs missing")).count();
    assert_eq!(listed_obs, 3.min(lost_obs.len()), "{report}");
    if lost_obs.len() > 3 {
        assert!(
            report.contains(&format!("obs: {} more not listed", lost_obs.len() - 3)),
            "{report}"
        );
    }
    assert!(
        !report.contains(EDITED_AT_HQ),
        "a value was printed:\n{report}"
    );
    assert!(!report.contains("Edited"), "{report}");
    // The file holds every row, whatever --limit says.
    let file = std::fs::read_to_string(&findings)?;
    for uuid in &lost_obs {
        assert!(file.contains(&format!("obs\tmissing\t{uuid}\n")), "{file}");
    }
    assert!(file.contains(&format!(
        "person_name\tdifferent\t{}\tgiven_name\n",
        p3.name
    )));
    assert!(!file.contains(EDITED_AT_HQ));

    // Extra rows, where HQ's rows are declared to be this site's: HQ's own three patients'
    // identifiers are rows the site lacks.
    let hq_own: Vec<String> = hq
        .query("SELECT uuid FROM patient_identifier WHERE identifier LIKE 'hq-local-%'")
        .await?;
    assert_eq!(hq_own.len(), 3);
    let extra = run_ok_or_3(p.run(&[
        "verify",
        "--site",
        &p.site_id,
        "--tables",
        "patient_identifier",
        "--extra",
        "--list",
    ])?)?;
    let row = extra
        .lines()
        .find(|l| l.starts_with("patient_identifier"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(row.get(4), Some(&"3"), "{extra}");
    for uuid in &hq_own {
        assert!(
            extra.contains(&format!("patient_identifier extra {}", uuid.to_lowercase())),
            "{extra}"
        );
    }

    // At the site: capture stops (it holds the state directory), the rows are re-sent.
    let applied_before: u64 =
        p.hq.scalar("SELECT last_sequence FROM tributary_site_progress")
            .await?;
    capture.signal("TERM")?;
    assert!(
        capture.wait_exit(Duration::from_secs(30)).await?.success(),
        "{}",
        capture.logs()
    );
    let resent = run_ok(p.run(&["resend", "--from-file", &findings.display().to_string()])?)?;
    let expected = lost_obs.len() + 4;
    assert!(
        resent.contains(&format!("re-sent {expected} rows as batches")),
        "{resent}"
    );
    // A row the site does not hold is reported, and nothing is sent for it.
    let absent = "0000dead-0000-4000-8000-000000000000";
    let nothing = run_ok(p.run(&["resend", "--table", "person", "--identity", absent])?)?;
    assert!(
        nothing.contains(&format!(
            "not at the site (nothing sent; a row HQ holds is left there): person {absent}"
        )) && nothing.contains("nothing to send"),
        "{nothing}"
    );

    // HQ applies the re-sent batches through its normal path. The row edited at HQ is not
    // overwritten silently (invariant 5): the re-sent version meets a conflict, and the
    // operator takes the site's version; then verification is clean again.
    let hq_db = &p.hq;
    wait_until(
        "the re-sent name to meet HQ's edit",
        CATCH_UP,
        || async move {
            let open: Option<u64> = hq_db
                .conn()
                .await?
                .query_first(
                    "SELECT COUNT(*) FROM tributary_conflict
                 WHERE status = 'open' AND table_name = 'person_name'",
                )
                .await?;
            Ok(open == Some(1))
        },
    )
    .await
    .map_err(|e| e.context(apply.logs()))?;
    let given: Option<String> = hq
        .exec_first(
            "SELECT given_name FROM person_name WHERE uuid = ?",
            (&p3.name,),
        )
        .await?;
    assert_eq!(
        given.as_deref(),
        Some(EDITED_AT_HQ),
        "HQ's edit waits for a person"
    );
    let conflict: u64 =
        p.hq.scalar("SELECT conflict_id FROM tributary_conflict")
            .await?;
    run_ok(p.run(&[
        "conflicts",
        "resolve",
        &conflict.to_string(),
        "--take-site",
        "--by",
        "records-officer",
    ])?)?;
    let pipeline = &p;
    wait_until("HQ to apply the re-sent rows", CATCH_UP, || async move {
        let out = pipeline.run(&["verify", "--site", &pipeline.site_id])?;
        Ok(out.status.success())
    })
    .await
    .map_err(|e| e.context(apply.logs()))?;
    let applied_after: u64 =
        p.hq.scalar("SELECT last_sequence FROM tributary_site_progress")
            .await?;
    assert!(applied_after > applied_before);
    let given: Option<String> = hq
        .exec_first(
            "SELECT given_name FROM person_name WHERE uuid = ?",
            (&p3.name,),
        )
        .await?;
    assert_ne!(given.as_deref(), Some(EDITED_AT_HQ));
    let roles: Option<u64> = hq
        .exec_first("SELECT COUNT(*) FROM user_role WHERE role = ?", (&role,))
        .await?;
    assert_eq!(roles, Some(1), "the user role was not re-sent");

    // The stream carries on after the re-sent batches, with no gap.
    let mut capture = p.spawn("capture", "capture-2")?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 4, 1, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    run_ok(p.run(&["verify", "--site", &p.site_id])?)?;
    Ok(())
}

/// The stdout of a verify that may report differences (exit 3), failing on any other error.
fn run_ok_or_3(out: std::process::Output) -> Result<String> {
    match out.status.code() {
        Some(0) | Some(3) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        _ => bail!(
            "verify failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
