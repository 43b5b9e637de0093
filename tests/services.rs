//! Smoke test of the local services: `deploy/mariadb.sh` and the harness in
//! `tests/support` give a site and an HQ instance that the replicator can use.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use mysql_async::Row;
use mysql_async::prelude::*;
use tributary_suite::{ChildGuard, MariaDb, Role, pid_alive, wait_until};

#[tokio::test]
async fn site_and_hq_start_ready_for_replication_and_stop_on_drop() -> anyhow::Result<()> {
    let (site, hq) =
        tokio::task::spawn_blocking(|| MariaDb::start_site_and_hq("services")).await??;
    assert_eq!(site.role(), Role::Site);
    assert_eq!(hq.role(), Role::Hq);
    assert_ne!(site.server_id(), hq.server_id(), "server ids must differ");
    assert_ne!(site.port(), hq.port());

    // The binlog settings the replicator requires, at the site.
    let mut conn = site.conn().await?;
    let settings: (i64, String, String, String, String, i64, u32) = conn
        .query_first(
            "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, \
             @@binlog_checksum, @@log_bin_compress, @@server_id",
        )
        .await?
        .expect("one row");
    assert_eq!(
        settings,
        (
            1,
            "ROW".into(),
            "FULL".into(),
            "FULL".into(),
            "CRC32".into(),
            0,
            site.server_id()
        )
    );

    // The binlog starts empty: one file with only its header events, no GTID yet.
    let gtid_pos: String = conn
        .query_first("SELECT @@gtid_binlog_pos")
        .await?
        .expect("row");
    assert_eq!(gtid_pos, "", "the fixture load must not be in the binlog");
    let logs: Vec<Row> = conn.query("SHOW BINARY LOGS").await?;
    assert_eq!(logs.len(), 1, "one binlog file after RESET MASTER");
    let events: Vec<Row> = conn.query("SHOW BINLOG EVENTS").await?;
    for event in &events {
        let kind: String = event.get("Event_type").expect("Event_type");
        assert!(
            matches!(
                kind.as_str(),
                "Format_desc" | "Gtid_list" | "Binlog_checkpoint"
            ),
            "unexpected binlog event {kind} in a fresh site binlog"
        );
    }
    let who: String = conn
        .query_first("SELECT CURRENT_USER()")
        .await?
        .expect("row");
    assert_eq!(who, "tributary@127.0.0.1");
    conn.disconnect().await?;

    // Both hold the OpenMRS 2.8 core schema and data.
    for db in [&site, &hq] {
        let mut conn = db.conn().await?;
        let (charset, collation): (String, String) = conn
            .query_first(
                "SELECT default_character_set_name, default_collation_name \
                 FROM information_schema.schemata WHERE schema_name = 'openmrs'",
            )
            .await?
            .expect("database openmrs");
        assert_eq!(
            (charset.as_str(), collation.as_str()),
            ("utf8mb4", "utf8mb4_general_ci")
        );
        let tables: Vec<String> = conn
            .query(
                "SELECT table_name FROM information_schema.tables \
                 WHERE table_schema = 'openmrs' ORDER BY table_name",
            )
            .await?;
        assert_eq!(tables.len(), 117, "{} tables", db.role());
        let mut rows = 0u64;
        for table in &tables {
            let n: u64 = conn
                .query_first(format!("SELECT COUNT(*) FROM `{table}`"))
                .await?
                .expect("count");
            rows += n;
        }
        assert_eq!(rows, 540, "{} core rows", db.role());
        assert_eq!(
            db.scalar::<u64>("SELECT COUNT(*) FROM privilege").await?,
            213
        );
        assert_eq!(db.scalar::<u64>("SELECT COUNT(*) FROM users").await?, 2);
        conn.disconnect().await?;

        let mode = std::fs::metadata(db.password_file())?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "password file mode");
        assert!(db.url().starts_with("mysql://tributary:"));
    }

    // Dropping stops the servers and removes their directories.
    let gone = [
        (site.pid(), site.dir().to_owned()),
        (hq.pid(), hq.dir().to_owned()),
    ];
    assert!(gone.iter().all(|(pid, _)| pid_alive(*pid)));
    drop(site);
    drop(hq);
    for (pid, dir) in gone {
        assert!(!pid_alive(pid), "mariadbd {pid} still alive after drop");
        assert!(!dir.exists(), "{} still exists after drop", dir.display());
    }
    Ok(())
}

#[tokio::test]
async fn a_site_survives_restart_and_crash_with_its_binlog() -> anyhow::Result<()> {
    let mut site = tokio::task::spawn_blocking(|| MariaDb::start(Role::Site, "restart")).await??;
    let port = site.port();
    site.exec(
        "INSERT INTO location (name, creator, date_created, retired, uuid) \
         VALUES ('Clinic A', 1, NOW(), 0, UUID())",
    )
    .await?;
    let pos: String = site.scalar("SELECT @@gtid_binlog_pos").await?;
    assert_eq!(pos, format!("0-{}-1", site.server_id()));

    let first_pid = site.pid();
    site.restart_server()?;
    assert!(!pid_alive(first_pid));
    let second_pid = site.pid();
    site.kill9_server()?;
    assert!(!pid_alive(second_pid));
    assert!(!site.is_running());
    site.start_server()?;
    assert!(site.is_running());

    assert_eq!(site.port(), port, "a restart keeps the port");
    assert_eq!(
        site.scalar::<String>("SELECT @@gtid_binlog_pos").await?,
        pos
    );
    assert_eq!(
        site.scalar::<u64>("SELECT COUNT(*) FROM location WHERE name = 'Clinic A'")
            .await?,
        1
    );
    Ok(())
}

#[tokio::test]
async fn extra_server_options_override_the_defaults() -> anyhow::Result<()> {
    let site = tokio::task::spawn_blocking(|| {
        MariaDb::start_with_args(Role::Site, "minimal", &["--binlog-row-image=MINIMAL"])
    })
    .await??;
    assert_eq!(
        site.scalar::<String>("SELECT @@binlog_row_image").await?,
        "MINIMAL"
    );
    Ok(())
}

#[tokio::test]
async fn child_guard_logs_and_kills() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("echo out-line; echo err-line >&2; exec sleep 600");
    let mut child = ChildGuard::spawn(&mut cmd, dir.path(), "sleeper")?;
    let pid = child.id();
    let c = &child;
    wait_until("the child to write both logs", Duration::from_secs(10), move || async move {
        Ok(c.stdout().contains("out-line") && c.stderr().contains("err-line"))
    })
    .await?;
    assert!(child.logs().contains("===== sleeper"));
    assert!(child.is_running());
    child.kill9()?;
    assert!(!pid_alive(pid));

    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("exec sleep 600");
    let mut child = ChildGuard::spawn(&mut cmd, dir.path(), "terminated")?;
    child.signal("TERM")?;
    let status = child.wait_exit(Duration::from_secs(10)).await?;
    assert!(!status.success());

    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("exec sleep 600");
    let pid = {
        let child = ChildGuard::spawn(&mut cmd, dir.path(), "dropped")?;
        child.id()
    };
    assert!(!pid_alive(pid), "drop kills the child");
    Ok(())
}

#[tokio::test]
async fn wait_until_names_what_it_waited_for() {
    let err = wait_until("the impossible", Duration::from_millis(250), || async {
        Ok(false)
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("the impossible"), "{err}");
    let err = wait_until("a failing check", Duration::from_millis(250), || async {
        anyhow::bail!("boom")
    })
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("boom"), "{err:#}");
}
