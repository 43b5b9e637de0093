//! Rows are decoded with the schema valid at their binlog position (invariant 7), also when
//! capture was offline while the site changed its schema: a table dropped later still sends
//! the rows written before its DROP, and rows written before and after ADD, RENAME and DROP
//! COLUMN arrive with the columns they had.

use anyhow::Result;
use mysql_async::prelude::*;
use std::time::Duration;
use tributary_suite::pipeline::{Pipeline, PipelineOptions};

const MODULE_AT_SITE: &str = "CREATE TABLE demo_module (
    demo_module_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    uuid CHAR(38) NOT NULL UNIQUE,
    person_id INT NOT NULL,
    note VARCHAR(100) NULL,
    CONSTRAINT demo_module_person FOREIGN KEY (person_id) REFERENCES person (person_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// HQ already runs the module's newer version: every column any site version has.
const MODULE_AT_HQ: &str = "CREATE TABLE demo_module (
    demo_module_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    uuid CHAR(38) NOT NULL UNIQUE,
    person_id INT NOT NULL,
    note VARCHAR(100) NULL,
    remark VARCHAR(100) NULL,
    extra VARCHAR(20) NULL,
    CONSTRAINT demo_module_person FOREIGN KEY (person_id) REFERENCES person (person_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// (uuid, note, remark, extra) of a demo_module row at HQ.
type ModuleRow = (String, Option<String>, Option<String>, Option<String>);

const LEGACY: &str = "CREATE TABLE demo_legacy (
    demo_legacy_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    uuid CHAR(38) NOT NULL UNIQUE,
    label VARCHAR(50) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_keep_the_schema_of_their_position_across_ddl_while_capture_was_offline() -> Result<()>
{
    let p = Pipeline::start("schema-changes", PipelineOptions::default()).await?;
    p.site.exec(MODULE_AT_SITE).await?;
    p.site.exec(LEGACY).await?;
    p.hq.exec(MODULE_AT_HQ).await?;
    p.hq.exec(LEGACY).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;

    let mut site = p.site.conn().await?;
    let insert = "INSERT INTO demo_module (uuid, person_id, note) VALUES (?, 1, ?)";
    site.exec_drop(insert, ("d0000000-0000-4000-8000-000000000001", "first"))
        .await?;
    site.exec_drop("INSERT INTO demo_legacy (uuid, label) VALUES ('e0000000-0000-4000-8000-000000000001', 'kept')", ()).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    capture.signal("TERM")?;
    assert!(capture.wait_exit(Duration::from_secs(30)).await?.success());

    // Capture is offline while the site upgrades its module.
    site.exec_drop("INSERT INTO demo_legacy (uuid, label) VALUES ('e0000000-0000-4000-8000-000000000002', 'last')", ()).await?;
    site.query_drop("DROP TABLE demo_legacy").await?;
    site.exec_drop(
        insert,
        ("d0000000-0000-4000-8000-000000000002", "before add"),
    )
    .await?;
    site.query_drop("ALTER TABLE demo_module ADD COLUMN extra VARCHAR(20) NULL")
        .await?;
    site.exec_drop(
        "INSERT INTO demo_module (uuid, person_id, note, extra) VALUES ('d0000000-0000-4000-8000-000000000003', 1, 'after add', 'x')",
        (),
    )
    .await?;
    site.query_drop("ALTER TABLE demo_module RENAME COLUMN note TO remark")
        .await?;
    site.exec_drop(
        "INSERT INTO demo_module (uuid, person_id, remark, extra) VALUES ('d0000000-0000-4000-8000-000000000004', 1, 'after rename', 'y')",
        (),
    )
    .await?;
    site.query_drop("ALTER TABLE demo_module DROP COLUMN extra")
        .await?;
    site.exec_drop(
        "INSERT INTO demo_module (uuid, person_id, remark) VALUES ('d0000000-0000-4000-8000-000000000005', 1, 'after drop')",
        (),
    )
    .await?;

    let mut capture = p.spawn("capture", "capture-after-ddl")?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let mut hq = p.hq.conn().await?;
    let legacy: Vec<String> = hq
        .query("SELECT label FROM demo_legacy ORDER BY uuid")
        .await?;
    assert_eq!(
        legacy,
        vec!["kept", "last"],
        "rows written before the DROP still arrive"
    );
    let module: Vec<ModuleRow> = hq
        .query("SELECT uuid, note, remark, extra FROM demo_module ORDER BY uuid")
        .await?;
    let expected = [
        (
            "d0000000-0000-4000-8000-000000000001",
            Some("first"),
            None,
            None,
        ),
        (
            "d0000000-0000-4000-8000-000000000002",
            Some("before add"),
            None,
            None,
        ),
        (
            "d0000000-0000-4000-8000-000000000003",
            Some("after add"),
            None,
            Some("x"),
        ),
        (
            "d0000000-0000-4000-8000-000000000004",
            None,
            Some("after rename"),
            Some("y"),
        ),
        (
            "d0000000-0000-4000-8000-000000000005",
            None,
            Some("after drop"),
            None,
        ),
    ];
    let expected: Vec<ModuleRow> = expected
        .iter()
        .map(|(u, n, r, e)| {
            (
                u.to_string(),
                n.map(str::to_owned),
                r.map(str::to_owned),
                e.map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(module, expected, "{}", p.status()?);
    let parked: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_row")
        .await?;
    assert_eq!(parked, Some(0), "{}", p.status()?);
    Ok(())
}

/// The same, while capture streams: DDL lands between row transactions as they flow, and every
/// row arrives with the columns it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_while_rows_stream_keeps_every_row_with_its_own_columns() -> Result<()> {
    let p = Pipeline::start("schema-changes-live", PipelineOptions::default()).await?;
    p.site.exec(MODULE_AT_SITE).await?;
    p.hq.exec(MODULE_AT_HQ).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let mut site = p.site.conn().await?;
    let (mut note_column, mut with_extra) = ("note", false);
    for i in 1..=300u32 {
        match i {
            100 => {
                site.query_drop("ALTER TABLE demo_module ADD COLUMN extra VARCHAR(20) NULL")
                    .await?;
                with_extra = true;
            }
            200 => {
                site.query_drop("ALTER TABLE demo_module RENAME COLUMN note TO remark")
                    .await?;
                note_column = "remark";
            }
            _ => {}
        }
        let uuid = format!("d1000000-0000-4000-8000-{i:012}");
        let sql = if with_extra {
            format!(
                "INSERT INTO demo_module (uuid, person_id, {note_column}, extra) VALUES (?, 1, ?, 'x')"
            )
        } else {
            format!("INSERT INTO demo_module (uuid, person_id, {note_column}) VALUES (?, 1, ?)")
        };
        site.exec_drop(sql, (uuid, format!("row {i}"))).await?;
    }
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let mut hq = p.hq.conn().await?;
    let counts: Option<(u64, u64, u64, u64)> = hq
        .query_first(
            "SELECT COUNT(*), SUM(note IS NOT NULL), SUM(remark IS NOT NULL), SUM(extra = 'x') FROM demo_module",
        )
        .await?;
    assert_eq!(counts, Some((300, 199, 101, 201)), "{}", p.status()?);
    Ok(())
}
