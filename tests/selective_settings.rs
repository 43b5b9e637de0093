//! Selective settings (issue 9): `global_property` stays at the site, except the settings
//! named under `[sync] global_properties`, which travel and are matched at HQ by name (each
//! database made its own uuid for the same setting). `tributary schema show` says, setting by
//! setting, which travel, and `verify` compares exactly those.

use anyhow::{Result, ensure};
use mysql_async::prelude::*;
use tributary_suite::pipeline::{Pipeline, PipelineOptions, run_ok};

const SHARED: &str = "tributary.test.shared";
const NEW: &str = "tributary.test.new";
const KEPT: &str = "security.tributaryTestSecret";

async fn insert_setting(
    conn: &mut mysql_async::Conn,
    name: &str,
    value: &str,
) -> mysql_async::Result<()> {
    conn.exec_drop(
        "INSERT INTO global_property (property, property_value, uuid) VALUES (?, ?, UUID())",
        (name, value),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_named_settings_travel_and_hq_matches_them_by_name() -> Result<()> {
    let p = Pipeline::start("selective-settings", PipelineOptions::default()).await?;
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(
        &p.config,
        format!(
            "{config}\n[sync]\nglobal_properties = [\"tributary.test.*\"]\n\n\
             [hq.conflicts]\ntables = {{ global_property = \"site-wins\" }}\n"
        ),
    )?;
    // Both databases have the shared setting, each with its own uuid and value. HQ's team
    // lets the sites' values win (otherwise a setting HQ changed itself is a conflict).
    let mut hq = p.hq.conn().await?;
    insert_setting(&mut hq, SHARED, "hq value").await?;
    let mut site = p.site.conn().await?;
    insert_setting(&mut site, SHARED, "site value").await?;
    let uuid_of = |name: &'static str| {
        let hq = &p.hq;
        async move {
            let mut conn = hq.conn().await?;
            let uuid: Option<String> = conn
                .exec_first(
                    "SELECT uuid FROM global_property WHERE property = ?",
                    (name,),
                )
                .await?;
            anyhow::Ok(uuid)
        }
    };
    let hq_uuid = uuid_of(SHARED).await?;

    let (mut capture, mut apply) = p.start_streaming().await?;
    insert_setting(&mut site, NEW, "new at the site").await?;
    insert_setting(&mut site, KEPT, "never leaves the site").await?;
    site.exec_drop(
        "UPDATE global_property SET property_value = 'corrected at the site' WHERE property = ?",
        (SHARED,),
    )
    .await?;
    site.exec_drop(
        "UPDATE global_property SET property_value = 'changed' WHERE property = ?",
        (KEPT,),
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    let value_at_hq = |name: &'static str| {
        let hq = &p.hq;
        async move {
            let mut conn = hq.conn().await?;
            let value: Option<Option<String>> = conn
                .exec_first(
                    "SELECT property_value FROM global_property WHERE property = ?",
                    (name,),
                )
                .await?;
            anyhow::Ok(value.flatten())
        }
    };
    ensure!(value_at_hq(NEW).await?.as_deref() == Some("new at the site"));
    ensure!(
        value_at_hq(SHARED).await?.as_deref() == Some("corrected at the site"),
        "the shared setting is found by name and updated: {}",
        p.status()?
    );
    ensure!(
        uuid_of(SHARED).await? == hq_uuid,
        "HQ's row keeps its own uuid: several sites writing a setting do not make it change hands"
    );
    ensure!(
        value_at_hq(KEPT).await?.is_none(),
        "a setting not named stays at the site"
    );
    let (parked, _) = p.parked_and_conflicts().await?;
    ensure!(parked == 0, "nothing parked: {}", p.status()?);

    // `schema show` gives the decision for every setting of the site.
    let shown = run_ok(p.run(&["schema", "show"])?)?;
    ensure!(
        shown.contains(&format!("{NEW}: travels (matches \"tributary.test.*\")"))
            && shown.contains(&format!("{KEPT}: stays at the site"))
            && shown.contains("global_property: natural key (property)"),
        "{shown}"
    );
    let verified = run_ok(p.run(&[
        "verify",
        "--site",
        "clinic-a",
        "--tables",
        "global_property",
    ])?)?;
    // `verify` compares the travelling settings by name (uuids aside) and exits non-zero when
    // anything differs.
    ensure!(verified.contains("global_property"), "{verified}");
    Ok(())
}
