//! Parking (invariant 3): observations that reach HQ before the encounter and patient they
//! belong to wait in HQ's parking tables, naming what they wait for, and are released when a
//! seed brings those rows. A later change to a parked row queues behind it. HQ never holds a
//! dangling reference or a placeholder row.

use anyhow::Result;
use mysql_async::prelude::*;
use std::time::Duration;
use tributary::dataset::{self, PatientShape, patient_rows};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, run_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_park_until_their_encounter_arrives_then_release_in_order() -> Result<()> {
    let p = Pipeline::start("parking", PipelineOptions::default()).await?;
    let shape = PatientShape::one_encounter(0);
    let mut site = p.site.conn().await?;
    // The patient, visit and encounter exist before capture starts: HQ does not have them.
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 1, shape).await?;
    let rows = patient_rows("clinic-a", 0, shape);
    let encounter = rows.encounters[0].clone();

    let (mut capture, mut apply) = p.start_streaming().await?;

    // An obs group (parent + two members) for that encounter, then a later correction.
    let (parent, child_a, child_b) = (
        "0b5e0000-0000-4000-8000-000000000001",
        "0b5e0000-0000-4000-8000-000000000002",
        "0b5e0000-0000-4000-8000-000000000003",
    );
    let mut tx = site
        .start_transaction(mysql_async::TxOpts::default())
        .await?;
    let insert = "INSERT INTO obs (person_id, concept_id, encounter_id, obs_datetime, location_id, obs_group_id, value_numeric, creator, date_created, voided, uuid, status)
                  SELECT e.patient_id, c.concept_id, e.encounter_id, e.encounter_datetime, e.location_id, g.obs_id, ?, 1, e.encounter_datetime, 0, ?, 'FINAL'
                  FROM encounter e JOIN concept c ON c.uuid = ? LEFT JOIN obs g ON g.uuid = ? WHERE e.uuid = ?";
    let weight = dataset::demo_uuid("concept", 0);
    tx.exec_drop(insert, (None::<f64>, parent, &weight, "none", &encounter))
        .await?;
    tx.exec_drop(insert, (Some(61.5), child_a, &weight, parent, &encounter))
        .await?;
    tx.exec_drop(insert, (Some(62.0), child_b, &weight, parent, &encounter))
        .await?;
    tx.commit().await?;
    site.exec_drop("UPDATE obs SET voided = 1, voided_by = 1, date_voided = '2024-08-01 00:00:00', void_reason = 'corrected' WHERE uuid = ?", (child_b,)).await?;

    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let mut hq = p.hq.conn().await?;
    let parked: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_row")
        .await?;
    assert_eq!(
        parked,
        Some(4),
        "three obs wait for their encounter, the correction queues behind"
    );
    let at_hq: Option<u64> = hq
        .exec_first(
            "SELECT COUNT(*) FROM obs WHERE uuid IN (?, ?, ?)",
            (parent, child_a, child_b),
        )
        .await?;
    assert_eq!(
        at_hq,
        Some(0),
        "a parked row must not be written (no placeholders)"
    );
    assert_eq!(p.dangling_references_at_hq().await?, 0);
    let status = p.status()?;
    assert!(
        status.contains(&format!("encounter[{encounter}]")),
        "parked rows must name what they wait for:\n{status}"
    );
    assert!(status.contains("queued behind"), "{status}");
    let waits: Option<u64> = hq
        .exec_first("SELECT COUNT(*) FROM tributary_parked_wait WHERE table_name = 'encounter' AND identity = ?", (&encounter,))
        .await?;
    assert_eq!(waits, Some(3));

    // The encounter (and the patient and visit it needs) reach HQ through a seed of those tables.
    capture.signal("TERM")?;
    assert!(
        capture.wait_exit(Duration::from_secs(30)).await?.success(),
        "{}",
        capture.logs()
    );
    run_ok(p.run(&[
        "seed",
        "--tables",
        "person,person_name,patient,patient_identifier,visit,encounter",
    ])?)?;
    let mut capture = p.spawn("capture", "capture")?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    let parked: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_row")
        .await?;
    assert_eq!(parked, Some(0), "everything was released:\n{}", p.status()?);
    let waits: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_wait")
        .await?;
    assert_eq!(waits, Some(0));
    let grouped: Option<u64> = hq
        .exec_first(
            "SELECT COUNT(*) FROM obs c JOIN obs g ON g.obs_id = c.obs_group_id JOIN encounter e ON e.encounter_id = c.encounter_id
             WHERE g.uuid = ? AND e.uuid = ?",
            (parent, &encounter),
        )
        .await?;
    assert_eq!(
        grouped,
        Some(2),
        "group members point at their parent's HQ id"
    );
    let voided: Option<i64> = hq
        .exec_first("SELECT voided FROM obs WHERE uuid = ?", (child_b,))
        .await?;
    assert_eq!(
        voided,
        Some(1),
        "the queued correction was applied after the insert it followed"
    );
    assert_eq!(p.dangling_references_at_hq().await?, 0);
    p.verify()?;
    Ok(())
}

/// A self-reference (a user who created and last changed their own account; `creator` is NOT
/// NULL) never waits on itself: the row is inserted and then pointed at its own new id. The seed's copy of the same user queues
/// behind the parked change and is applied after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_referring_to_itself_is_released_without_waiting_on_itself() -> Result<()> {
    let p = Pipeline::start("self-reference", PipelineOptions::default()).await?;
    let mut site = p.site.conn().await?;
    let (person, user) = (
        "5e1f0000-0000-4000-8000-000000000001",
        "5e1f0000-0000-4000-8000-000000000002",
    );
    site.exec_drop(
        "INSERT INTO person (gender, creator, date_created, voided, uuid) VALUES ('F', 1, '2024-01-01 00:00:00', 0, ?)",
        (person,),
    )
    .await?;
    site.exec_drop(
        "INSERT INTO users (user_id, system_id, username, creator, date_created, person_id, retired, uuid)
         SELECT 500, 'nurse-1', 'nurse', 500, '2024-01-01 00:00:00', person_id, 0, ? FROM person WHERE uuid = ?",
        (user, person),
    )
    .await?;

    let (mut capture, mut apply) = p.start_streaming().await?;
    site.exec_drop(
        "UPDATE users SET changed_by = user_id, date_changed = '2024-02-01 00:00:00', username = 'nurse.a' WHERE uuid = ?",
        (user,),
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let mut hq = p.hq.conn().await?;
    let waits: Vec<(String, String)> = hq
        .query("SELECT table_name, identity FROM tributary_parked_wait")
        .await?;
    assert_eq!(
        waits,
        vec![("person".to_owned(), person.to_owned())],
        "the update waits for its person only, not for itself"
    );

    capture.signal("TERM")?;
    capture.wait_exit(Duration::from_secs(30)).await?;
    run_ok(p.run(&["seed", "--tables", "person,users"])?)?;
    p.wait_caught_up(&mut [&mut apply]).await?;
    let parked: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_row")
        .await?;
    assert_eq!(parked, Some(0), "{}", p.status()?);
    let own: Option<(String, i64)> = hq
        .exec_first(
            "SELECT username, CAST(changed_by = user_id AND creator = user_id AS SIGNED) FROM users WHERE uuid = ?",
            (user,),
        )
        .await?;
    assert_eq!(
        own,
        Some(("nurse.a".to_owned(), 1)),
        "the user points at its own HQ id"
    );
    Ok(())
}

/// A delete needs only the identity of the row it removes: when the site has since deleted
/// the rows it referred to (capture was behind), the delete still applies, and so does the
/// delete of the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_apply_even_when_their_references_are_gone_at_the_site() -> Result<()> {
    let p = Pipeline::start("late-deletes", PipelineOptions::default()).await?;
    let shape = PatientShape::one_encounter(2);
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 1, shape).await?;
    let rows = patient_rows("clinic-a", 0, shape);
    run_ok(p.run(&["seed"])?)?;
    let mut apply = p.spawn("apply", "apply")?;
    p.wait_caught_up(&mut [&mut apply]).await?;
    let mut hq = p.hq.conn().await?;
    let at_hq: Option<u64> = hq
        .exec_first("SELECT COUNT(*) FROM obs WHERE uuid = ?", (&rows.obs[0],))
        .await?;
    assert_eq!(at_hq, Some(1));

    // While capture is down, the site deletes the obs and then their encounter.
    site.exec_drop(
        "DELETE FROM obs WHERE uuid IN (?, ?)",
        (&rows.obs[0], &rows.obs[1]),
    )
    .await?;
    site.exec_drop(
        "DELETE FROM encounter WHERE uuid = ?",
        (&rows.encounters[0],),
    )
    .await?;
    let mut capture = p.spawn("capture", "capture")?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let left: Option<u64> = hq
        .exec_first(
            "SELECT COUNT(*) FROM obs WHERE uuid IN (?, ?)",
            (&rows.obs[0], &rows.obs[1]),
        )
        .await?;
    assert_eq!(left, Some(0), "{}", p.status()?);
    let left: Option<u64> = hq
        .exec_first(
            "SELECT COUNT(*) FROM encounter WHERE uuid = ?",
            (&rows.encounters[0],),
        )
        .await?;
    assert_eq!(left, Some(0), "{}", p.status()?);
    let parked: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_row")
        .await?;
    assert_eq!(parked, Some(0), "{}", p.status()?);
    p.verify()?;
    Ok(())
}

/// A change capture reads after its parent was deleted at the site (capture was stopped, and
/// starts again with an empty identity cache) cannot name the parent: it parks at HQ. The
/// site's later delete of the same row supersedes it (kept in `tributary_dropped_row` with the
/// reason), and the parent's delete behind it then goes through: nothing stays parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_delete_supersedes_its_parked_changes_to_the_row() -> Result<()> {
    let p = Pipeline::start("supersede", PipelineOptions::default()).await?;
    let shape = PatientShape::one_encounter(2);
    let mut site = p.site.conn().await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 1, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let rows = patient_rows("clinic-a", 0, shape);

    capture.signal("TERM")?;
    capture.wait_exit(Duration::from_secs(30)).await?;
    site.exec_drop(
        "UPDATE person_name SET given_name = 'Corrected' WHERE uuid = ?",
        (&rows.name,),
    )
    .await?;
    assert!(
        tributary_suite::clinical_work::delete_patient(&mut site, &rows.person).await?,
        "the patient is there to delete"
    );
    let mut capture = p.spawn("capture", "capture-again")?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    let mut hq = p.hq.conn().await?;
    nothing_parked_one_superseded(
        &p,
        &mut hq,
        "person_name",
        "superseded: site clinic-a deleted the row",
    )
    .await?;
    deleted_everywhere(&p, &mut hq, "person", &rows.person).await
}

/// A transaction that deletes a patient is cut into parts (one row each here), and capture
/// starts it with an empty identity cache: the part that deletes the `drug_order` rows cannot
/// name them (their identity is their `orders` row's, already gone at the site, and deleted
/// only in a later part; the `patient` row likewise, its `person` deleted last). Those deletes
/// are set aside with the reason (`tributary_dropped_row`), and the later deletes of the base
/// rows take the subtype rows with them at HQ: nothing stays parked, HQ equals the site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_of_subtype_rows_capture_cannot_identify_go_with_their_base_rows() -> Result<()> {
    let options = PipelineOptions {
        transaction_part_rows: 1,
        ..PipelineOptions::default()
    };
    let p = Pipeline::start("subtype-deletes", options).await?;
    let Visits {
        mut site,
        mut hq,
        mut capture,
        mut apply,
        rows,
        ..
    } = patient_with_two_visits(&p).await?;
    let drug_orders_at_hq =
        "SELECT COUNT(*) FROM drug_order d JOIN orders o ON o.order_id = d.order_id
                             JOIN person p ON p.person_id = o.patient_id WHERE p.uuid = ?";
    let before: Option<u64> = hq.exec_first(drug_orders_at_hq, (&rows.person,)).await?;
    assert_eq!(before, Some(2), "HQ has the patient's drug orders");

    // Capture starts again with an empty cache, after the patient is deleted at the site.
    capture.signal("TERM")?;
    capture.wait_exit(Duration::from_secs(30)).await?;
    assert!(tributary_suite::clinical_work::delete_patient(&mut site, &rows.person).await?);
    let mut capture = p.spawn("capture", "capture-again")?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    let parked: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_row")
        .await?;
    assert_eq!(parked, Some(0), "status:\n{}", p.status()?);
    let set_aside: Vec<(String, String)> = hq
        .query("SELECT table_name, drop_reason FROM tributary_dropped_row ORDER BY parked_id")
        .await?;
    // The patient row too: its identity is its person's, deleted in a later part.
    let tables: Vec<&str> = set_aside.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        tables,
        ["drug_order", "drug_order", "patient"],
        "{set_aside:?}"
    );
    for (table, reason) in &set_aside {
        let base = if table == "patient" {
            "person"
        } else {
            "orders"
        };
        assert!(
            reason.starts_with(&format!(
                "the site deleted this `{table}` row after its `{base}` row was gone there"
            )),
            "{reason}"
        );
    }
    let status = p.status()?;
    assert!(
        status.contains("site clinic-a: 3 of its changes were set aside for good"),
        "status says what was set aside:\n{status}"
    );
    let after: Option<u64> = hq.exec_first(drug_orders_at_hq, (&rows.person,)).await?;
    assert_eq!(after, Some(0));
    deleted_everywhere(&p, &mut hq, "person", &rows.person).await
}

/// While capture is stopped, an encounter is edited, then moved to another visit, and its
/// old visit deleted (what merging two visits does). Capture starts again with an empty
/// identity cache: the edit refers to a visit the site no longer has, so it can never be
/// written and parks. The move, a whole image of the same row, supersedes it (kept in
/// `tributary_dropped_row` with the reason) and is written; the old visit's delete then goes
/// through: nothing stays parked, HQ equals the site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_later_change_supersedes_its_parked_change_that_cannot_be_written() -> Result<()> {
    let p = Pipeline::start("supersede-update", PipelineOptions::default()).await?;
    let Visits {
        mut site,
        mut hq,
        mut capture,
        mut apply,
        visits,
        ..
    } = patient_with_two_visits(&p).await?;

    capture.signal("TERM")?;
    capture.wait_exit(Duration::from_secs(30)).await?;
    let (moved, old_visit, new_visit) = (&visits[0].encounter, &visits[0].visit, &visits[1].visit);
    site.exec_drop(
        "UPDATE encounter SET encounter_datetime = encounter_datetime + INTERVAL 1 MINUTE
         WHERE uuid = ?",
        (moved,),
    )
    .await?;
    site.exec_drop(
        "UPDATE encounter SET visit_id = (SELECT visit_id FROM visit WHERE uuid = ?) WHERE uuid = ?",
        (new_visit, moved),
    )
    .await?;
    site.exec_drop("DELETE FROM visit WHERE uuid = ?", (old_visit,))
        .await?;
    let mut capture = p.spawn("capture", "capture-again")?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    nothing_parked_one_superseded(
        &p,
        &mut hq,
        "encounter",
        "superseded: site clinic-a changed the row again",
    )
    .await?;
    let visit_at_hq: Option<String> = hq
        .exec_first(
            "SELECT v.uuid FROM encounter e JOIN visit v ON v.visit_id = e.visit_id WHERE e.uuid = ?",
            (moved,),
        )
        .await?;
    assert_eq!(visit_at_hq.as_deref(), Some(new_visit.as_str()));
    deleted_everywhere(&p, &mut hq, "visit", old_visit).await
}

/// The `table` row `uuid` is gone at HQ too (its delete went through), nothing there refers
/// to a missing row, and HQ verifies equal to the site.
async fn deleted_everywhere(
    p: &Pipeline,
    hq: &mut mysql_async::Conn,
    table: &str,
    uuid: &str,
) -> Result<()> {
    let at_hq: Option<u64> = hq
        .exec_first(
            format!("SELECT COUNT(*) FROM {table} WHERE uuid = ?"),
            (uuid,),
        )
        .await?;
    assert_eq!(at_hq, Some(0), "the {table} row's delete went through");
    assert_eq!(p.dangling_references_at_hq().await?, 0);
    p.verify()?;
    Ok(())
}

/// Nothing is parked at HQ, and one change of `table` was dropped with a reason starting with
/// `reason`.
async fn nothing_parked_one_superseded(
    p: &Pipeline,
    hq: &mut mysql_async::Conn,
    table: &str,
    reason: &str,
) -> Result<()> {
    let parked: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_row")
        .await?;
    assert_eq!(parked, Some(0), "status:\n{}", p.status()?);
    let superseded: Vec<(String, String)> = hq
        .query("SELECT table_name, drop_reason FROM tributary_dropped_row")
        .await?;
    assert_eq!(superseded.len(), 1, "{superseded:?}");
    assert_eq!(superseded[0].0, table);
    assert!(superseded[0].1.starts_with(reason), "{superseded:?}");
    Ok(())
}

/// What [`patient_with_two_visits`] set up.
struct Visits {
    site: mysql_async::Conn,
    hq: mysql_async::Conn,
    capture: tributary_suite::ChildGuard,
    apply: tributary_suite::ChildGuard,
    rows: dataset::PatientRows,
    visits: [tributary_suite::clinical_work::EncounterUuids; 2],
}

/// Streams a patient registered at the site, with two visits of one encounter each (an obs
/// group and a drug order), until HQ has them all.
async fn patient_with_two_visits(p: &Pipeline) -> Result<Visits> {
    use tributary_suite::clinical_work::{self, ClinicIds, EncounterUuids};
    let mut site = p.site.conn().await?;
    let mut hq = p.hq.conn().await?;
    clinical_work::load_provider(&mut site).await?;
    clinical_work::load_provider(&mut hq).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let shape = PatientShape::one_encounter(0);
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 1, shape).await?;
    let rows = patient_rows("clinic-a", 0, shape);
    let ids = ClinicIds::load(&mut site, CLINIC).await?;
    let visits = [0, 1].map(|n| EncounterUuids::new("two-visits", n));
    for (n, visit) in visits.iter().enumerate() {
        assert!(
            clinical_work::record_encounter(&mut site, &ids, &rows.person, visit, n as u32).await?
        );
    }
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    Ok(Visits {
        site,
        hq,
        capture,
        apply,
        rows,
        visits,
    })
}
