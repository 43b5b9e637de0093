//! End to end: inserts, updates, voids and deletes on the clinical tables at a site reach HQ
//! through the real `tributary capture` and `tributary apply` processes, with every reference
//! translated to HQ's own ids (HQ holds rows of its own, so its ids differ from the site's).

use anyhow::Result;
use mysql_async::prelude::*;
use std::time::Duration;
use tributary::dataset::{self, PatientShape, patient_rows};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinical_changes_reach_hq_with_translated_ids_and_intact_references() -> Result<()> {
    let p = Pipeline::start(
        "replication",
        PipelineOptions {
            max_batch_rows: 200,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let (mut capture, mut apply) = p.start_streaming().await?;

    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 8, shape).await?;
    dataset::live_changes(&mut site, "clinic-a", 8, shape).await?;
    let p4 = patient_rows("clinic-a", 4, shape);
    let p5 = patient_rows("clinic-a", 5, shape);
    let p7 = patient_rows("clinic-a", 7, shape);
    // Updates of person, patient and visit; a voided patient; a patient deleted outright.
    site.exec_drop("UPDATE person SET gender = 'F', birthdate = '1980-02-29', date_changed = '2024-07-01 00:00:00' WHERE uuid = ?", (&p4.person,)).await?;
    site.exec_drop("UPDATE patient p JOIN person r ON r.person_id = p.patient_id SET p.allergy_status = 'No known allergies' WHERE r.uuid = ?", (&p4.person,)).await?;
    site.exec_drop(
        "UPDATE visit SET date_stopped = '2024-04-30 18:30:00' WHERE uuid = ?",
        (&p4.visits[0],),
    )
    .await?;
    let mut tx = site
        .start_transaction(mysql_async::TxOpts::default())
        .await?;
    tx.exec_drop("UPDATE person SET voided = 1, voided_by = 1, date_voided = '2024-07-02 00:00:00', void_reason = 'duplicate' WHERE uuid = ?", (&p5.person,)).await?;
    tx.exec_drop("UPDATE patient p JOIN person r ON r.person_id = p.patient_id SET p.voided = 1, p.voided_by = 1, p.date_voided = '2024-07-02 00:00:00' WHERE r.uuid = ?", (&p5.person,)).await?;
    tx.commit().await?;
    assert!(tributary_suite::clinical_work::delete_patient(&mut site, &p7.person).await?);

    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let report = p.verify()?;
    assert!(report.contains("obs"), "{report}");
    assert_eq!(
        p.dangling_references_at_hq().await?,
        0,
        "HQ holds a dangling reference"
    );

    let mut hq = p.hq.conn().await?;
    // Every replicated patient got an HQ id of its own, different from the site's.
    for n in 0..7 {
        let uuid = patient_rows("clinic-a", n, shape).person;
        let site_id: Option<i64> = site
            .exec_first("SELECT person_id FROM person WHERE uuid = ?", (&uuid,))
            .await?;
        let hq_id: Option<i64> = hq
            .exec_first("SELECT person_id FROM person WHERE uuid = ?", (&uuid,))
            .await?;
        assert!(site_id.is_some() && hq_id.is_some(), "patient {n} missing");
        assert_ne!(
            site_id, hq_id,
            "patient {n}: HQ should have assigned its own id"
        );
    }
    // An encounter at HQ points at the HQ ids of its patient and visit.
    let joined: Option<u64> = hq
        .exec_first(
            "SELECT COUNT(*) FROM encounter e JOIN visit v ON v.visit_id = e.visit_id JOIN person r ON r.person_id = e.patient_id
             WHERE e.uuid = ? AND v.uuid = ? AND r.uuid = ?",
            (&p4.encounters[0], &p4.visits[0], &p4.person),
        )
        .await?;
    assert_eq!(
        joined,
        Some(1),
        "encounter references were not translated to HQ ids"
    );
    // Deletes happened at HQ too; the voided patient is voided, not gone.
    let gone: Option<u64> = hq
        .exec_first("SELECT COUNT(*) FROM person WHERE uuid = ?", (&p7.person,))
        .await?;
    assert_eq!(
        gone,
        Some(0),
        "a patient deleted at the site is still at HQ"
    );
    let identifier = patient_rows("clinic-a", 3, shape).identifier;
    let gone: Option<u64> = hq
        .exec_first(
            "SELECT COUNT(*) FROM patient_identifier WHERE uuid = ?",
            (&identifier,),
        )
        .await?;
    assert_eq!(gone, Some(0), "a deleted identifier is still at HQ");
    let voided: Option<i64> = hq
        .exec_first("SELECT voided FROM person WHERE uuid = ?", (&p5.person,))
        .await?;
    assert_eq!(voided, Some(1));
    // HQ's own rows are untouched.
    let hq_own: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM patient_identifier WHERE identifier LIKE 'hq-local-%'")
        .await?;
    assert_eq!(hq_own, Some(3));

    let status = p.status()?;
    assert!(
        status.contains("clinic-a") && status.contains(" s ago"),
        "{status}"
    );

    // An idle site keeps sending (empty) batches, so HQ can tell quiet from silent.
    let idle_from: u64 =
        p.hq.scalar("SELECT last_sequence FROM tributary_site_progress")
            .await?;
    let hq_db = &p.hq;
    tributary_suite::wait_until(
        "a keepalive batch from the idle site",
        std::time::Duration::from_secs(30),
        || async move {
            let now: u64 = hq_db
                .scalar("SELECT last_sequence FROM tributary_site_progress")
                .await?;
            Ok(now > idle_from)
        },
    )
    .await?;
    capture.signal("TERM")?;
    apply.signal("TERM")?;
    assert!(
        capture.wait_exit(Duration::from_secs(30)).await?.success(),
        "{}",
        capture.logs()
    );
    assert!(
        apply.wait_exit(Duration::from_secs(30)).await?.success(),
        "{}",
        apply.logs()
    );
    Ok(())
}
