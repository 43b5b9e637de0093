//! A large OpenMRS-shaped clinic written fast, for seeding benchmarks: whole tables filled by
//! `INSERT ... SELECT` over MariaDB's sequence tables rather than row by row.
//!
//! The shape follows the measured ratios of a large OpenMRS database (FACTS.md, section 8):
//! per patient one person, name, address and identifier, three visits with one encounter and
//! one encounter provider each, 27 observations per encounter (81 per patient) and three drug
//! orders per encounter (9 per patient): 113 rows a patient, obs about 72% of them.
//! Patients are written in slices, one transaction each, like a clinic's years of work.

use crate::dataset::{ADMIN_USER, FAMILY, GIVEN, MetadataIds, demo_uuid};
use mysql_async::prelude::*;
use mysql_async::{Conn, TxOpts};

/// Rows one bulk patient adds (see the module docs).
pub const ROWS_PER_PATIENT: u64 = 113;

/// Patients written per transaction.
const SLICE: u64 = 1_000;

/// The bulk clinic's provider (every encounter's and order's).
pub fn provider_uuid() -> String {
    demo_uuid("bulk/provider", 0)
}

/// Writes patients `1..=patients` of the bulk clinic at `clinic` (metadata loaded by
/// `dataset::load_metadata`); `progress` gets the rows written so far. Returns the rows.
pub async fn load_bulk_clinic(
    conn: &mut Conn,
    clinic: &str,
    patients: u64,
    mut progress: impl FnMut(u64),
) -> mysql_async::Result<u64> {
    let ids = MetadataIds::load(conn, clinic).await?;
    let provider = ensure_provider(conn, ids.admin).await?;
    let mut rows = 0;
    let mut first = 1;
    while first <= patients {
        let last = (first + SLICE - 1).min(patients);
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        for sql in slice_statements(&ids, provider, first, last) {
            tx.query_drop(sql).await?;
            rows += tx.affected_rows();
        }
        tx.commit().await?;
        progress(rows);
        first = last + 1;
    }
    Ok(rows)
}

async fn ensure_provider(conn: &mut Conn, admin: i64) -> mysql_async::Result<i64> {
    conn.exec_drop(
        "INSERT IGNORE INTO provider (person_id, name, identifier, creator, date_created, retired, uuid)
         SELECT u.person_id, 'Clinic provider', 'PRV-1', ?, '2024-01-01 00:00:00', 0, ?
         FROM users u WHERE u.uuid = ?",
        (admin, provider_uuid(), ADMIN_USER),
    )
    .await?;
    let id: Option<i64> = conn
        .exec_first(
            "SELECT provider_id FROM provider WHERE uuid = ?",
            (provider_uuid(),),
        )
        .await?;
    id.ok_or_else(|| mysql_async::Error::Other("the bulk clinic's provider is missing".into()))
}

/// The statements writing patients `first..=last`. Uuids are built from the patient number
/// and a per-table prefix: `b1` person, `b2` name, `b3` address, `b4` identifier, `b5`+visit
/// visit, `b6`+visit encounter, `b7`+visit encounter provider, `b8`+obs obs, `b9`+order orders.
fn slice_statements(ids: &MetadataIds, provider: i64, first: u64, last: u64) -> Vec<String> {
    let admin = ids.admin;
    let location = ids.location;
    let count = last - first + 1;
    let names = |list: &[&str]| {
        list.iter()
            .map(|n| format!("'{}'", n.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (given, family) = (names(GIVEN), names(FAMILY));
    let (n_given, n_family) = (GIVEN.len(), FAMILY.len());
    let [weight, height, temperature] = [ids.concepts[0], ids.concepts[1], ids.concepts[2]];
    let diagnosis = ids.concepts[3];
    let of_slice = |alias: &str| {
        format!(
            "{alias}.uuid BETWEEN CONCAT('b1000000-0000-4000-8000-', LPAD({first}, 12, '0')) \
             AND CONCAT('b1000000-0000-4000-8000-', LPAD({last}, 12, '0'))"
        )
    };
    let persons = of_slice("p");
    vec![
        format!(
            "INSERT INTO person (gender, birthdate, birthdate_estimated, dead, creator, date_created, voided, uuid, deathdate_estimated)
             SELECT IF(s.seq % 2 = 0, 'F', 'M'), DATE_ADD('1950-01-01', INTERVAL s.seq % 20000 DAY), 0, 0, {admin},
                    DATE_ADD('2019-01-01', INTERVAL s.seq % 1500 DAY), 0,
                    CONCAT('b1000000-0000-4000-8000-', LPAD(s.seq + {first} - 1, 12, '0')), 0
             FROM seq_1_to_{count} s"
        ),
        format!(
            "INSERT INTO person_name (preferred, person_id, given_name, family_name, creator, date_created, voided, uuid)
             SELECT 1, p.person_id, ELT(1 + p.person_id % {n_given}, {given}), ELT(1 + p.person_id % {n_family}, {family}),
                    {admin}, p.date_created, 0, CONCAT('b2', SUBSTRING(p.uuid, 3))
             FROM person p WHERE {persons}"
        ),
        format!(
            "INSERT INTO person_address (person_id, preferred, address1, city_village, country, creator, date_created, voided, uuid)
             SELECT p.person_id, 1, CONCAT('Plot ', p.person_id % 977), 'Kisumu', 'Kenya', {admin}, p.date_created, 0,
                    CONCAT('b3', SUBSTRING(p.uuid, 3))
             FROM person p WHERE {persons}"
        ),
        format!(
            "INSERT INTO patient (patient_id, creator, date_created, voided, allergy_status)
             SELECT p.person_id, {admin}, p.date_created, 0, 'Unknown' FROM person p WHERE {persons}"
        ),
        format!(
            "INSERT INTO patient_identifier (patient_id, identifier, identifier_type, preferred, location_id, creator, date_created, voided, uuid)
             SELECT p.person_id, CONCAT('BLK-', SUBSTRING(p.uuid, 25)), {id_type}, 1, {location}, {admin}, p.date_created, 0,
                    CONCAT('b4', SUBSTRING(p.uuid, 3))
             FROM person p WHERE {persons}",
            id_type = ids.id_type,
        ),
        format!(
            "INSERT INTO visit (patient_id, visit_type_id, date_started, date_stopped, location_id, creator, date_created, voided, uuid)
             SELECT p.person_id, {visit_type}, DATE_ADD(p.date_created, INTERVAL v.seq * 40 DAY),
                    DATE_ADD(DATE_ADD(p.date_created, INTERVAL v.seq * 40 DAY), INTERVAL 2 HOUR), {location}, {admin},
                    DATE_ADD(p.date_created, INTERVAL v.seq * 40 DAY), 0,
                    CONCAT('b5', v.seq, '00000', SUBSTRING(p.uuid, 9))
             FROM person p JOIN seq_1_to_3 v WHERE {persons}",
            visit_type = ids.visit_type,
        ),
        format!(
            "INSERT INTO encounter (encounter_type, patient_id, location_id, encounter_datetime, creator, date_created, voided, visit_id, uuid)
             SELECT IF(v.visit_id % 2 = 0, {vitals}, {consultation}), v.patient_id, {location}, v.date_started, {admin},
                    v.date_created, 0, v.visit_id, CONCAT('b6', SUBSTRING(v.uuid, 3))
             FROM visit v JOIN person p ON p.person_id = v.patient_id WHERE {persons}",
            vitals = ids.encounter_types[0],
            consultation = ids.encounter_types[1],
        ),
        format!(
            "INSERT INTO encounter_provider (encounter_id, provider_id, encounter_role_id, creator, date_created, voided, uuid)
             SELECT e.encounter_id, {provider}, 1, {admin}, e.date_created, 0, CONCAT('b7', SUBSTRING(e.uuid, 3))
             FROM encounter e JOIN person p ON p.person_id = e.patient_id WHERE {persons}"
        ),
        format!(
            "INSERT INTO obs (person_id, concept_id, encounter_id, obs_datetime, location_id, value_numeric, creator, date_created, voided, uuid, status)
             SELECT e.patient_id, ELT(1 + o.seq % 3, {weight}, {height}, {temperature}), e.encounter_id, e.encounter_datetime,
                    {location}, 30 + (e.encounter_id + o.seq) % 150, {admin}, e.date_created, 0,
                    CONCAT('b8', LPAD(o.seq, 2, '0'), SUBSTRING(e.uuid, 3, 1), '000', SUBSTRING(e.uuid, 9)), 'FINAL'
             FROM encounter e JOIN person p ON p.person_id = e.patient_id JOIN seq_1_to_27 o WHERE {persons}"
        ),
        format!(
            "INSERT INTO orders (order_type_id, concept_id, orderer, encounter_id, instructions, date_activated, creator, date_created,
                                 voided, patient_id, uuid, urgency, order_number, order_action, care_setting)
             SELECT 2, {diagnosis}, {provider}, e.encounter_id, 'Take with food', e.encounter_datetime, {admin}, e.date_created, 0,
                    e.patient_id, CONCAT('b9', r.seq, SUBSTRING(e.uuid, 3, 1), '0000', SUBSTRING(e.uuid, 9)), 'ROUTINE',
                    CONCAT('ORD-', SUBSTRING(e.uuid, 3, 1), r.seq, '-', SUBSTRING(e.uuid, 25)), 'NEW', 1
             FROM encounter e JOIN person p ON p.person_id = e.patient_id JOIN seq_1_to_3 r WHERE {persons}"
        ),
        format!(
            "INSERT INTO drug_order (order_id, dose, as_needed, dispense_as_written, quantity, num_refills)
             SELECT o.order_id, 1 + o.order_id % 4, 0, 0, 30, 0
             FROM orders o JOIN person p ON p.person_id = o.patient_id WHERE {persons}"
        ),
    ]
}
