//! The whole OpenMRS core schema syncs: a row is written into every table the schema map
//! syncs (subtype tables with parents of their own, uuid-less join tables, string keys, the
//! users/person cycle, undeclared references), and HQ then matches the site table by table,
//! every reference compared as an identity (`tributary verify --site`), with nothing parked;
//! then every row is edited at the site and HQ matches again, with no conflict.

use anyhow::Result;
use mysql_async::prelude::*;
use tributary_schema::Policy;
use tributary_suite::every_table::EveryTable;
use tributary_suite::pipeline::{Pipeline, PipelineOptions, run_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_in_every_synced_table_reaches_hq_equal() -> Result<()> {
    let p = Pipeline::start("whole-schema", PipelineOptions::default()).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let mut site = p.site.conn().await?;
    let mut filler =
        EveryTable::read(&mut site, p.site.database(), &Policy::openmrs_core()).await?;
    assert!(
        filler.synced().len() >= 100,
        "the core schema has over a hundred synced tables, not {}",
        filler.synced().len()
    );
    filler.fill(&mut site).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    let mut hq = p.hq.conn().await?;
    let parked: Vec<(String, String)> = hq
        .query("SELECT table_name, reason FROM tributary_parked_row ORDER BY table_name")
        .await?;
    assert!(parked.is_empty(), "nothing parks: {parked:#?}");
    let report = run_ok(p.run(&["verify", "--site", &p.site_id])?)?;
    println!("{report}");

    // Every row edited at the site: the updates find their rows at HQ by identity.
    let changed = filler.touch(&mut site).await?;
    assert!(
        changed >= 60,
        "rows with a plain text column to edit: {changed}"
    );
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let parked: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_row")
        .await?;
    assert_eq!(parked, Some(0));
    let conflicts: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_conflict")
        .await?;
    assert_eq!(
        conflicts,
        Some(0),
        "the site is the last writer of its rows"
    );
    run_ok(p.run(&["verify", "--site", &p.site_id])?)?;
    Ok(())
}
