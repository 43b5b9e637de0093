//! Every column type OpenMRS core uses survives the binlog -> batch -> HQ trip exactly, NULLs
//! included: int, varchar, char, text, mediumtext, longtext, datetime, date, time, timestamp,
//! tinyint(1), double and float. The table is a module-style table (own uuid, no
//! configuration), which also shows that such tables sync without a schema-map entry, and
//! that rows HQ cannot take yet (HQ lacks the table) park visibly and are released by the
//! applier's periodic retry once an operator has created the table at HQ.

use anyhow::Result;
use mysql_async::prelude::*;
use std::time::Duration;
use tributary_suite::pipeline::{Pipeline, PipelineOptions, run_ok};
use tributary_suite::wait_until;

const DDL: &str = "CREATE TABLE demo_types (
    demo_types_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    uuid CHAR(38) NOT NULL UNIQUE,
    person_id INT NULL,
    counter INT NULL,
    label VARCHAR(255) NULL,
    code CHAR(3) NULL,
    note TEXT NULL,
    body MEDIUMTEXT NULL,
    archive LONGTEXT NULL,
    happened DATETIME NULL,
    born DATE NULL,
    at_time TIME NULL,
    touched TIMESTAMP NULL DEFAULT NULL,
    flag TINYINT(1) NULL,
    measure DOUBLE NULL,
    weight FLOAT NULL,
    CONSTRAINT demo_types_person FOREIGN KEY (person_id) REFERENCES person (person_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openmrs_column_type_and_null_round_trips_exactly() -> Result<()> {
    let p = Pipeline::start("column-types", PipelineOptions::default()).await?;
    p.site.exec(DDL).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;

    let mut site = p.site.conn().await?;
    site.query_drop("SET time_zone = '+03:00'").await?;
    let archive = "long text \u{1F3E5} ".repeat(20_000);
    site.exec_drop(
        "INSERT INTO demo_types (uuid, person_id, counter, label, code, note, body, archive, happened, born, at_time, touched, flag, measure, weight)
         VALUES (?, 1, -2147483648, ?, 'abc', ?, ?, ?, '2024-02-29 23:59:59', '1901-01-01', '-838:59:59', '2024-06-01 12:00:00', 1, ?, ?)",
        ("A1B2C3D4-0000-4000-8000-00000000000A", "Zoë Ñandú 中文 'quoted'", "line one\nline two\ttab", "m".repeat(70_000), &archive, 1.0e-300_f64, 0.1_f32),
    )
    .await?;
    site.exec_drop(
        "INSERT INTO demo_types (uuid) VALUES (?)",
        ("a1b2c3d4-0000-4000-8000-00000000000b",),
    )
    .await?;
    site.exec_drop(
        "INSERT INTO demo_types (uuid, counter, measure, weight, at_time, flag) VALUES (?, 2147483647, -0.0, -3.5, '12:34:56', 0)",
        ("a1b2c3d4-0000-4000-8000-00000000000c",),
    )
    .await?;
    site.exec_drop(
        "UPDATE demo_types SET label = NULL, code = 'xyz', born = NULL WHERE counter = -2147483648",
        (),
    )
    .await?;
    site.exec_drop(
        "DELETE FROM demo_types WHERE uuid = ?",
        ("a1b2c3d4-0000-4000-8000-00000000000c",),
    )
    .await?;

    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let status = p.status()?;
    assert!(
        status.contains("`demo_types` is not a synced table at HQ"),
        "{status}"
    );

    // The operator adds the module's table at HQ; the parked rows follow without a restart.
    p.hq.exec(DDL).await?;
    let hq_db = &p.hq;
    wait_until(
        "the parked rows to be released",
        Duration::from_secs(60),
        || async move {
            let parked: u64 = hq_db
                .scalar("SELECT COUNT(*) FROM tributary_parked_row")
                .await?;
            Ok(parked == 0)
        },
    )
    .await
    .map_err(|e| e.context(apply.logs()))?;
    let report = run_ok(p.run(&["verify", "--tables", "demo_types"])?)?;
    assert!(
        report.contains("demo_types") && report.contains("ok"),
        "{report}"
    );
    let mut hq = p.hq.conn().await?;
    let rows: Option<u64> = hq.query_first("SELECT COUNT(*) FROM demo_types").await?;
    assert_eq!(
        rows,
        Some(2),
        "the deleted row is gone, the other two arrived"
    );
    let (length, weight): (u64, f32) = hq
        .query_first("SELECT CHAR_LENGTH(archive), weight FROM demo_types WHERE code = 'xyz'")
        .await?
        .unwrap_or_default();
    assert_eq!(length, archive.chars().count() as u64);
    assert_eq!(weight, 0.1_f32);
    hq.query_drop("SET time_zone = '+00:00'").await?;
    let touched: Option<String> = hq
        .query_first("SELECT CAST(touched AS CHAR) FROM demo_types WHERE code = 'xyz'")
        .await?;
    assert_eq!(
        touched.as_deref(),
        Some("2024-06-01 09:00:00"),
        "a TIMESTAMP keeps its instant across time zones"
    );
    Ok(())
}
