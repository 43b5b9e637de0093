//! `person_attribute.value` holds a row's integer id when the attribute type's format is an
//! OpenMRS class (Location, Concept, User): such values travel as the row's identity and are
//! written back as HQ's id; plain-text attributes that merely look like numbers stay as they
//! are.

use anyhow::Result;
use mysql_async::prelude::*;
use tributary::dataset::{self, PatientShape, patient_rows};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, run_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_values_that_are_ids_are_translated_and_text_is_not() -> Result<()> {
    let p = Pipeline::start("person-attributes", PipelineOptions::default()).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let shape = PatientShape::one_encounter(0);
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 1, shape).await?;
    let person = patient_rows("clinic-a", 0, shape).person;
    let insert = "INSERT INTO person_attribute (person_id, value, person_attribute_type_id, creator, date_created, voided, uuid)
                  SELECT p.person_id, ?, t.person_attribute_type_id, 1, '2024-05-01 00:00:00', 0, ?
                  FROM person p, person_attribute_type t WHERE p.uuid = ? AND t.name = ?";
    let clinic_location: i64 = site
        .exec_first("SELECT location_id FROM location WHERE name = ?", (CLINIC,))
        .await?
        .unwrap_or_default();
    let malaria: i64 = site
        .exec_first(
            "SELECT concept_id FROM concept WHERE uuid = ?",
            (dataset::demo_uuid("concept", 5),),
        )
        .await?
        .unwrap_or_default();
    let (health_center, civil_status, race) = (
        "a7700000-0000-4000-8000-000000000001",
        "a7700000-0000-4000-8000-000000000002",
        "a7700000-0000-4000-8000-000000000003",
    );
    site.exec_drop(
        insert,
        (
            clinic_location.to_string(),
            health_center,
            &person,
            "Health Center",
        ),
    )
    .await?;
    site.exec_drop(
        insert,
        (malaria.to_string(), civil_status, &person, "Civil Status"),
    )
    .await?;
    site.exec_drop(insert, ("12", race, &person, "Race"))
        .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    let report = run_ok(p.run(&["verify", "--tables", "person_attribute"])?)?;
    assert!(report.contains(" ok"), "{report}\n{}", p.status()?);
    let mut hq = p.hq.conn().await?;
    let value =
        |uuid: &'static str| format!("SELECT value FROM person_attribute WHERE uuid = '{uuid}'");
    let hq_location: Option<i64> = hq
        .exec_first("SELECT location_id FROM location WHERE name = ?", (CLINIC,))
        .await?;
    assert_ne!(
        hq_location,
        Some(clinic_location),
        "HQ's ids differ, so translation is visible"
    );
    let at_hq: Option<String> = hq.query_first(value(health_center)).await?;
    assert_eq!(
        at_hq,
        hq_location.map(|id| id.to_string()),
        "a location attribute holds HQ's location id"
    );
    let hq_malaria: Option<i64> = hq
        .exec_first(
            "SELECT concept_id FROM concept WHERE uuid = ?",
            (dataset::demo_uuid("concept", 5),),
        )
        .await?;
    let at_hq: Option<String> = hq.query_first(value(civil_status)).await?;
    assert_eq!(
        at_hq,
        hq_malaria.map(|id| id.to_string()),
        "a concept attribute holds HQ's concept id"
    );
    let at_hq: Option<String> = hq.query_first(value(race)).await?;
    assert_eq!(at_hq.as_deref(), Some("12"), "plain text stays as it is");
    Ok(())
}
