//! A site sending rows for tables it may not write (issue 8): an authenticated batch (a
//! compromised or broken site, its key genuine) carrying a row of Tributary's own bookkeeping,
//! a user with its password hash, a setting nobody named, and a scheduler task. HQ writes none
//! of them: each is parked with a reason that names the table or column, `status` counts them,
//! and the rest of the batch (a genuine row) is applied.

use anyhow::{Result, ensure};
use mysql_async::prelude::*;
use tributary_batch::{BatchHeader, SiteKey};
use tributary_model::{BatchPayload, Columns, Identity, Op, RowChange, SourceTransaction, Value};
use tributary_suite::pipeline::{Pipeline, PipelineOptions, deliver, run_ok};

fn row(table: &str, identity: Identity, columns: &[(&str, Value)]) -> RowChange {
    RowChange {
        table: table.into(),
        op: Op::Insert,
        identity,
        columns: columns
            .iter()
            .map(|(name, value)| ((*name).into(), value.clone()))
            .collect::<Columns>(),
    }
}

fn text(value: &str) -> Value {
    Value::Text(value.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_for_tables_a_site_may_not_write_are_parked_never_written() -> Result<()> {
    let p = Pipeline::start("hostile-rows", PipelineOptions::default()).await?;
    let key = SiteKey::load(&p.key_file)?;
    let genuine_location = "b1a5c0de-0000-4000-8000-000000000001";
    let rows = vec![
        // Another site's progress moved by a row: HQ's bookkeeping is never a synced table.
        row(
            "tributary_site_progress",
            Identity::from_natural_key(&["clinic-b".into()]),
            &[
                ("site_id", text("clinic-b")),
                ("epoch", Value::Int(1)),
                ("last_sequence", Value::Int(1_000_000)),
            ],
        ),
        // A user with credentials: the schema map keeps them at the site.
        row(
            "users",
            Identity::from_uuid("b1a5c0de-0000-4000-8000-000000000002"),
            &[
                ("uuid", text("b1a5c0de-0000-4000-8000-000000000002")),
                ("system_id", text("intruder")),
                ("username", text("intruder")),
                ("password", text("0123456789abcdef")),
                ("salt", text("salt")),
                ("creator", Value::Int(1)),
                ("date_created", text("2024-01-01 00:00:00")),
                ("retired", Value::Int(0)),
            ],
        ),
        // A setting no `[sync] global_properties` names.
        row(
            "global_property",
            Identity::from_natural_key(&["security.passwordMinimumLength".into()]),
            &[
                ("property", text("security.passwordMinimumLength")),
                ("property_value", text("1")),
                ("uuid", text("b1a5c0de-0000-4000-8000-000000000003")),
            ],
        ),
        // A scheduler task: never synced.
        row(
            "scheduler_task_config",
            Identity::from_uuid("b1a5c0de-0000-4000-8000-000000000004"),
            &[
                ("uuid", text("b1a5c0de-0000-4000-8000-000000000004")),
                ("name", text("Run anything")),
                ("schedulable_class", text("org.example.Anything")),
            ],
        ),
        // And one genuine row.
        row(
            "location",
            Identity::from_uuid(genuine_location),
            &[
                ("uuid", text(genuine_location)),
                ("name", text("Outreach post")),
                ("creator", Value::Int(1)),
                ("date_created", text("2024-01-01 00:00:00")),
                ("retired", Value::Int(0)),
            ],
        ),
    ];
    let payload = BatchPayload {
        transactions: vec![SourceTransaction {
            gtid: None,
            committed_at: 1_700_000_000,
            rows,
            part: None,
        }],
        ..BatchPayload::default()
    };
    let header = BatchHeader::new(&p.site_id, key.key_id(), 7, 1, 5);
    let sealed = tributary_batch::seal(&header, &serde_json::to_vec(&payload)?, &key)?;
    deliver(
        &sealed,
        &p.work.join("batches"),
        &p.site_id,
        &format!("{:010}-{:020}.batch", 7, 1),
    )?;
    run_ok(p.run(&["apply", "--once"])?)?;

    let mut hq = p.hq.conn().await?;
    let other_site: Option<u64> = hq
        .query_first("SELECT last_sequence FROM tributary_site_progress WHERE site_id = 'clinic-b'")
        .await?;
    ensure!(other_site.is_none(), "HQ's bookkeeping is untouched");
    let intruder: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM users WHERE username = 'intruder'")
        .await?;
    ensure!(intruder == Some(0), "no user with a password arrives");
    let setting: Option<String> = hq
        .query_first(
            "SELECT property_value FROM global_property \
             WHERE property = 'security.passwordMinimumLength'",
        )
        .await?;
    ensure!(
        setting.as_deref() != Some("1"),
        "HQ's own setting is untouched"
    );
    let tasks: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM scheduler_task_config WHERE name = 'Run anything'")
        .await?;
    ensure!(tasks == Some(0), "no scheduler task arrives");
    let location: Option<u64> = hq
        .exec_first(
            "SELECT COUNT(*) FROM location WHERE uuid = ?",
            (genuine_location,),
        )
        .await?;
    ensure!(location == Some(1), "the genuine row is applied");

    let reasons: Vec<(String, String)> = hq
        .query("SELECT table_name, reason FROM tributary_parked_row ORDER BY table_name")
        .await?;
    let reason_of = |table: &str| {
        reasons
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    };
    ensure!(reasons.len() == 4, "each refused row parked: {reasons:?}");
    for table in [
        "tributary_site_progress",
        "scheduler_task_config",
        "global_property",
    ] {
        ensure!(
            reason_of(table).contains(&format!("`{table}` is not a synced table at HQ")),
            "{table}: {reasons:?}"
        );
    }
    ensure!(
        reason_of("users").contains("`password`"),
        "the password column is named: {reasons:?}"
    );
    let status = p.status()?;
    ensure!(status.contains("streaming (rows parked)"), "{status}");
    Ok(())
}
