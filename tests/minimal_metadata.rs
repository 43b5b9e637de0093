//! A site whose binlog carries no column names or signedness (`binlog_row_metadata=NO_LOG`,
//! MariaDB's default, and what older servers write): rows are read by position against the
//! schema-history version valid at their position, unsigned integers are corrected from the
//! catalog, and a column added mid-stream is picked up from the DDL event on.

use anyhow::Result;
use mysql_async::prelude::*;
use tributary::dataset::{self, PatientShape};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, run_ok};

const MODULE: &str = "CREATE TABLE demo_unsigned (
    demo_unsigned_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    uuid CHAR(38) NOT NULL UNIQUE,
    small TINYINT UNSIGNED NULL,
    counter INT UNSIGNED NULL,
    big BIGINT UNSIGNED NULL,
    note VARCHAR(50) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_binlog_metadata_are_read_by_the_schema_history() -> Result<()> {
    let p = Pipeline::start(
        "minimal-metadata",
        PipelineOptions {
            site_server_args: &["--binlog-row-metadata=NO_LOG"],
            ..PipelineOptions::default()
        },
    )
    .await?;
    p.site.exec(MODULE).await?;
    p.hq.exec(MODULE).await?;
    p.hq.exec("ALTER TABLE demo_unsigned ADD COLUMN extra VARCHAR(20) NULL")
        .await?;
    let doctor = String::from_utf8_lossy(&p.run(&["doctor"])?.stdout).into_owned();
    assert!(
        doctor.contains("warn binlog_row_metadata: NO_LOG"),
        "{doctor}"
    );

    let (mut capture, mut apply) = p.start_streaming().await?;
    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 3, shape).await?;
    dataset::live_changes(&mut site, "clinic-a", 3, shape).await?;
    site.query_drop(
        "INSERT INTO demo_unsigned (uuid, small, counter, big, note)
         VALUES ('c0000000-0000-4000-8000-000000000001', 250, 4000000000, 18446744073709551615, 'before')",
    )
    .await?;
    site.query_drop("ALTER TABLE demo_unsigned ADD COLUMN extra VARCHAR(20) NULL")
        .await?;
    site.query_drop(
        "INSERT INTO demo_unsigned (uuid, small, counter, big, note, extra)
         VALUES ('c0000000-0000-4000-8000-000000000002', 1, 2, 3, 'after', 'added')",
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    p.verify()?;
    let report = run_ok(p.run(&["verify", "--tables", "demo_unsigned"])?)?;
    assert!(report.contains(" ok"), "{report}\n{}", p.status()?);
    let mut hq = p.hq.conn().await?;
    let extra: Option<Option<String>> = hq
        .query_first(
            "SELECT extra FROM demo_unsigned WHERE uuid = 'c0000000-0000-4000-8000-000000000002'",
        )
        .await?;
    assert_eq!(extra, Some(Some("added".to_owned())));
    assert_eq!(p.dangling_references_at_hq().await?, 0);
    Ok(())
}
