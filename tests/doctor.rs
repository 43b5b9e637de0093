//! `tributary doctor` checks every server setting and privilege capture needs and prints, for
//! each one that is wrong, the statement that fixes it; capture refuses to start on such a
//! site. Running the printed statements makes the site pass.

use anyhow::Result;
use std::process::Command;
use tributary_suite::pipeline::{run_ok, run_tributary};
use tributary_suite::{MariaDb, Role, tributary_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_each_wrong_setting_and_privilege_with_its_fix() -> Result<()> {
    let site = tokio::task::spawn_blocking(|| {
        MariaDb::start_with_args(
            Role::Site,
            "doctor",
            &["--binlog-row-image=MINIMAL", "--binlog-format=MIXED"],
        )
    })
    .await??;
    let work = site.dir().join("work");
    std::fs::create_dir_all(work.join("keys"))?;
    // A capture user with SELECT only.
    site.exec("CREATE USER 'weak'@'127.0.0.1' IDENTIFIED BY 'weak-password'")
        .await?;
    site.exec("GRANT SELECT ON openmrs.* TO 'weak'@'127.0.0.1'")
        .await?;
    std::fs::write(work.join("weak.password"), "weak-password")?;
    let key = run_ok(run_tributary(&[
        "keys",
        "generate",
        "--site",
        "clinic-a",
        "--out-dir",
        &work.join("keys").display().to_string(),
    ])?)?;
    let config = work.join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"clinic-a\"\nstate_dir = \"state\"\nkey_file = \"{}\"\n\n[site.database]\nurl = \"mysql://weak@127.0.0.1:{}/openmrs\"\npassword_file = \"weak.password\"\n\n[transport]\ndirectory = \"batches\"\n",
            key.trim(),
            site.port()
        ),
    )?;

    let doctor = || {
        Command::new(tributary_bin())
            .args(["doctor", "--config"])
            .arg(&config)
            .output()
    };
    let out = doctor()?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{report}");
    for expected in [
        "FAIL binlog_row_image: MINIMAL",
        "fix: SET GLOBAL binlog_row_image = 'FULL';",
        "FAIL binlog_format: MIXED",
        "ok   binlog_row_metadata: FULL",
        "ok   binlog_checksum: CRC32",
        "FAIL privilege REPLICATION SLAVE: missing",
        "fix: GRANT REPLICATION SLAVE ON *.* TO 'weak'@'127.0.0.1';",
        "fix: GRANT REPLICATION CLIENT ON *.* TO 'weak'@'127.0.0.1';",
        "ok   privilege SELECT on openmrs: granted",
        "ok   site key",
    ] {
        assert!(
            report.contains(expected),
            "missing `{expected}` in:\n{report}"
        );
    }

    let out = Command::new(tributary_bin())
        .args(["capture", "--config"])
        .arg(&config)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("does not meet capture's requirements"),
        "{stderr}"
    );

    // The operator runs exactly the statements doctor printed.
    for line in report.lines() {
        let Some(fix) = line.trim().strip_prefix("fix: ") else {
            continue;
        };
        if fix.starts_with("SET GLOBAL") || fix.starts_with("GRANT") {
            let statement = fix.split(';').next().unwrap_or_default();
            site.exec(statement).await?;
        }
    }
    let out = doctor()?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}");
    assert!(report.contains("all required checks passed"), "{report}");
    Ok(())
}

/// `tributary schema show` prints the resolved map of a live OpenMRS database: identity rules
/// (own uuid, inherited, natural key), references including undeclared ones, what stays at
/// the site, and a flag on the tables whose rows cannot be identified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_show_prints_the_resolved_map_and_flags_unidentifiable_tables() -> Result<()> {
    let site = tokio::task::spawn_blocking(|| MariaDb::start(Role::Site, "schema-show")).await??;
    let config = site.dir().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"clinic-a\"\nstate_dir = \"state\"\nkey_file = \"none.key\"\n\n[site.database]\nurl = \"mysql://{}@127.0.0.1:{}/openmrs\"\npassword_file = \"{}\"\n",
            site.user(),
            site.port(),
            site.password_file().display()
        ),
    )?;
    let out = run_ok(run_tributary(&[
        "schema",
        "show",
        "--config",
        &config.display().to_string(),
    ])?)?;
    for expected in [
        "patient: inherited from person",
        "drug_order: inherited from orders",
        "obs: own uuid (uuid)",
        "    local key obs_id (HQ assigns its own)",
        "value_group_id -> obs",
        "encounter_id -> encounter",
        "user_role: natural key (user_id, role)",
        "concept_name_tag_map: whole row",
        "FLAG",
        "columns kept at the site: password, salt, secret_question, secret_answer, activation_key",
        "cascade: changed_by -> users ON DELETE CASCADE",
        "cascade: patient_id -> person ON UPDATE CASCADE",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        summary.contains("global_property") && summary.contains("2 flagged"),
        "{summary}"
    );
    Ok(())
}
