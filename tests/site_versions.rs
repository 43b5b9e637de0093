//! Sites on OpenMRS 2.6, 2.7 and 3.0 feed one 2.8 HQ at once, beside a 2.8 site, all sharing
//! the clinic metadata (same uuids): what a site lacks arrives as NULL or not at all; columns a
//! 3.0 site has and HQ lacks are dropped by the schema map's declared rule and reported; a name
//! a 2.6 site may repeat collides with HQ's unique key and parks with the reason. Nothing
//! crashes, and each site's clinical data verifies equal at HQ.

use anyhow::{Context, Result};
use mysql_async::prelude::*;
use std::path::PathBuf;
use tributary::dataset::{self, PatientShape};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, run_ok, wait_site_applied};
use tributary_suite::{MariaDb, Role};

/// A site on another OpenMRS version, sending into the pipeline's HQ and transport directory.
struct VersionSite {
    id: String,
    db: MariaDb,
    config: PathBuf,
    state_dir: String,
}

async fn version_site(p: &Pipeline, version: &'static str) -> Result<VersionSite> {
    let id = format!("clinic-v{}", version.replace('.', ""));
    let name = format!("versions-{}", version.replace('.', "-"));
    let db =
        tokio::task::spawn_blocking(move || MariaDb::start_openmrs(Role::Site, &name, version))
            .await??;
    let (config, state_dir) = p.add_site(&id, &db)?;
    Ok(VersionSite {
        id,
        db,
        config,
        state_dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_on_26_27_and_30_feed_a_28_hq_beside_a_28_site() -> Result<()> {
    let p = Pipeline::start("versions", PipelineOptions::default()).await?;
    let mut sites = Vec::new();
    for version in ["2.6", "2.7", "3.0"] {
        sites.push(version_site(&p, version).await?);
    }
    let mut apply = p.spawn("apply", "apply")?;
    let mut capture = p.spawn("capture", "capture")?;
    p.wait_capture_started("state", &capture).await?;
    let mut captures = Vec::new();
    for site in &sites {
        let child = p.spawn_with("capture", &site.config, &format!("capture-{}", site.id))?;
        p.wait_capture_started(&site.state_dir, &child).await?;
        captures.push(child);
    }

    // Every site sends the shared metadata (HQ has it: matched by uuid) and registers
    // patients, all at once.
    let shape = PatientShape::default();
    let mut loads = Vec::new();
    for (n, site) in sites.iter().enumerate() {
        let mut conn = site.db.conn().await?;
        let prefix = site.id.clone();
        loads.push(tokio::spawn(async move {
            dataset::load_metadata(&mut conn, CLINIC).await?;
            dataset::load_patients(&mut conn, CLINIC, &prefix, 0, 3 + n as u64, shape).await
        }));
    }
    let mut a = p.site.conn().await?;
    dataset::load_patients(&mut a, CLINIC, "clinic-a", 0, 3, shape).await?;
    for load in loads {
        load.await??;
    }

    // The 3.0 site: a provider with 3.0's description column, which a 2.8 HQ lacks.
    let v30 = &sites[2];
    v30.db
        .exec(
            "INSERT INTO provider (name, identifier, description, creator, date_created, retired, uuid)
             VALUES ('Nurse Achieng', 'P-30-1', 'night shift', 1, '2024-01-01 00:00:00', 0,
                     'de30de30-0000-4000-8000-000000000001')",
        )
        .await?;
    // The 2.6 site: two location tags with one name, legal there, unique at a 2.8 HQ.
    let v26 = &sites[0];
    v26.db
        .exec(
            "INSERT INTO location_tag (name, creator, date_created, retired, uuid) VALUES
             ('Ward', 1, '2024-01-01 00:00:00', 0, 'de26de26-0000-4000-8000-000000000001'),
             ('Ward', 1, '2024-01-01 00:00:00', 0, 'de26de26-0000-4000-8000-000000000002')",
        )
        .await?;

    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    for (site, capture) in sites.iter().zip(&captures) {
        let state = p.work.join(&site.state_dir);
        wait_site_applied(&site.db, &p.hq, &site.id, &state)
            .await
            .map_err(|e| e.context(capture.logs()))?;
    }
    assert!(
        apply.try_wait()?.is_none(),
        "the applier is still running:\n{}",
        apply.logs()
    );

    // Each site's clinical data is at HQ, equal, references translated.
    p.verify()?;
    for site in &sites {
        run_ok(p.run_with(&site.config, &["verify"])?)
            .with_context(|| format!("verifying {}", site.id))?;
    }
    let mut hq = p.hq.conn().await?;
    let conflicts: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_conflict")
        .await?;
    assert_eq!(
        conflicts,
        Some(0),
        "shared metadata is agreement, not conflict"
    );

    // The 3.0 provider is at HQ without the column HQ lacks, and the drop is reported.
    let provider: Option<String> = hq
        .query_first(
            "SELECT identifier FROM provider WHERE uuid = 'de30de30-0000-4000-8000-000000000001'",
        )
        .await?;
    assert_eq!(provider.as_deref(), Some("P-30-1"));
    let dropped: Vec<(String, String, String, u64)> = hq
        .query(
            "SELECT site_id, table_name, column_name, rows_written FROM tributary_dropped_column",
        )
        .await?;
    assert_eq!(
        dropped,
        [(
            "clinic-v30".to_owned(),
            "provider".to_owned(),
            "description".to_owned(),
            1
        )]
    );
    let status = p.status()?;
    assert!(
        status.contains("clinic-v30 provider.description (1 rows)"),
        "{status}"
    );

    // The repeated 2.6 tag name parks with HQ's unique key named; the first one is written.
    let tags: Vec<String> = hq
        .query("SELECT uuid FROM location_tag WHERE name = 'Ward'")
        .await?;
    assert_eq!(tags.len(), 1);
    let reasons: Vec<(String, String)> = hq
        .query("SELECT site_id, reason FROM tributary_parked_row")
        .await?;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0].0, "clinic-v26");
    assert!(
        reasons[0].1.contains("unique key `name` of `location_tag`"),
        "{reasons:?}"
    );
    Ok(())
}
