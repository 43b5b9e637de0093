//! An OpenMRS-shaped demo dataset: a small concept dictionary and clinic metadata (the same
//! rows, by uuid, at every database, as a centrally managed dictionary would be), and patients
//! with names, identifiers, visits, encounters and observations, written the way OpenMRS
//! writes them (one transaction per patient, obs edits as void + insert).
//!
//! Everything is deterministic for a given seed, so tests can name the rows they change.
//! Integer ids are never assumed: every reference is looked up by uuid in the database being
//! written, so the same dataset gets different ids at the site and at HQ.

use mysql_async::prelude::*;
use mysql_async::{Conn, TxOpts, Value as Sql};

pub const ADMIN_USER: &str = "82f18b44-6814-11e8-923f-e9a88dcb533f";
const OPENMRS_ID_TYPE: &str = "8d793bee-c2cc-11de-8d13-0010c6dffd0f";
const NUMERIC: &str = "8d4a4488-c2cc-11de-8d13-0010c6dffd0f";
const CODED: &str = "8d4a48b6-c2cc-11de-8d13-0010c6dffd0f";
const TEXT: &str = "8d4a4ab4-c2cc-11de-8d13-0010c6dffd0f";
const NA: &str = "8d4a4c94-c2cc-11de-8d13-0010c6dffd0f";
const CLASS_TEST: &str = "8d4907b2-c2cc-11de-8d13-0010c6dffd0f";
const CLASS_DIAGNOSIS: &str = "8d4918b0-c2cc-11de-8d13-0010c6dffd0f";

/// The demo dictionary: (name, datatype, class).
const CONCEPTS: &[(&str, &str, &str)] = &[
    ("Weight (kg)", NUMERIC, CLASS_TEST),
    ("Height (cm)", NUMERIC, CLASS_TEST),
    ("Temperature (C)", NUMERIC, CLASS_TEST),
    ("Diagnosis", CODED, CLASS_DIAGNOSIS),
    ("Clinical notes", TEXT, CLASS_TEST),
    ("Malaria", NA, CLASS_DIAGNOSIS),
    ("Tuberculosis", NA, CLASS_DIAGNOSIS),
    ("Pneumonia", NA, CLASS_DIAGNOSIS),
];

pub(crate) const GIVEN: &[&str] = &[
    "Amina", "Kofi", "Wanjiru", "Thabo", "Lucia", "Rahul", "Mariam", "Jose", "Nia", "Tendai",
];
pub(crate) const FAMILY: &[&str] = &[
    "Okafor", "Mensah", "Kamau", "Nkosi", "Silva", "Patel", "Diallo", "Garcia", "Banda", "Moyo",
];

/// A deterministic uuid for a named demo row (same at every database).
pub fn demo_uuid(kind: &str, n: u64) -> String {
    let mut rng = SplitMix(fnv(kind) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// SplitMix64: a tiny, well-known deterministic generator for demo values.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Loads the demo dictionary and clinic metadata (idempotent: rows that exist are skipped).
pub async fn load_metadata(conn: &mut Conn, clinic: &str) -> mysql_async::Result<()> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "INSERT IGNORE INTO location (name, creator, date_created, retired, uuid)
         SELECT ?, u.user_id, '2024-01-01 00:00:00', 0, ? FROM users u WHERE u.uuid = ?",
        (clinic, demo_uuid("location", fnv(clinic)), ADMIN_USER),
    )
    .await?;
    tx.exec_drop(
        "INSERT IGNORE INTO visit_type (name, creator, date_created, retired, uuid)
         SELECT 'Outpatient', u.user_id, '2024-01-01 00:00:00', 0, ? FROM users u WHERE u.uuid = ?",
        (demo_uuid("visit_type", 1), ADMIN_USER),
    )
    .await?;
    for (n, name) in ["Vitals", "Consultation"].iter().enumerate() {
        tx.exec_drop(
            "INSERT IGNORE INTO encounter_type (name, creator, date_created, retired, uuid)
             SELECT ?, u.user_id, '2024-01-01 00:00:00', 0, ? FROM users u WHERE u.uuid = ?",
            (*name, demo_uuid("encounter_type", n as u64), ADMIN_USER),
        )
        .await?;
    }
    for (n, (name, datatype, class)) in CONCEPTS.iter().enumerate() {
        let uuid = demo_uuid("concept", n as u64);
        tx.exec_drop(
            "INSERT IGNORE INTO concept (retired, datatype_id, class_id, is_set, creator, date_created, uuid)
             SELECT 0, d.concept_datatype_id, c.concept_class_id, 0, u.user_id, '2024-01-01 00:00:00', ?
             FROM concept_datatype d, concept_class c, users u
             WHERE d.uuid = ? AND c.uuid = ? AND u.uuid = ?",
            (&uuid, *datatype, *class, ADMIN_USER),
        )
        .await?;
        tx.exec_drop(
            "INSERT IGNORE INTO concept_name (concept_id, name, locale, locale_preferred, creator, date_created,
                                             concept_name_type, voided, uuid)
             SELECT c.concept_id, ?, 'en', 1, u.user_id, '2024-01-01 00:00:00', 'FULLY_SPECIFIED', 0, ?
             FROM concept c, users u WHERE c.uuid = ? AND u.uuid = ?",
            (*name, demo_uuid("concept_name", n as u64), &uuid, ADMIN_USER),
        )
        .await?;
    }
    tx.commit().await
}

/// Shape of the clinical data written per patient.
#[derive(Debug, Clone, Copy)]
pub struct PatientShape {
    pub visits: u32,
    pub encounters_per_visit: u32,
    pub obs_per_encounter: u32,
}

impl Default for PatientShape {
    fn default() -> Self {
        PatientShape {
            visits: 2,
            encounters_per_visit: 2,
            obs_per_encounter: 6,
        }
    }
}

impl PatientShape {
    /// One visit with one encounter holding `obs` observations: the smallest complete patient.
    pub fn one_encounter(obs: u32) -> PatientShape {
        PatientShape {
            visits: 1,
            encounters_per_visit: 1,
            obs_per_encounter: obs,
        }
    }

    /// Rows one patient adds: person, name, patient, identifier, visits, encounters, obs.
    pub fn rows_per_patient(&self) -> u64 {
        let encounters = u64::from(self.visits * self.encounters_per_visit);
        4 + u64::from(self.visits) + encounters + encounters * u64::from(self.obs_per_encounter)
    }
}

/// The uuids of one generated patient's rows.
#[derive(Debug, Clone)]
pub struct PatientRows {
    pub person: String,
    pub name: String,
    pub identifier: String,
    pub visits: Vec<String>,
    pub encounters: Vec<String>,
    pub obs: Vec<String>,
}

/// The uuids patient `n` of `prefix` gets (without writing anything).
pub fn patient_rows(prefix: &str, n: u64, shape: PatientShape) -> PatientRows {
    let kind = |k: &str| format!("{prefix}/{k}");
    let encounters = u64::from(shape.visits * shape.encounters_per_visit);
    PatientRows {
        person: demo_uuid(&kind("person"), n),
        name: demo_uuid(&kind("person_name"), n),
        identifier: demo_uuid(&kind("patient_identifier"), n),
        visits: (0..u64::from(shape.visits))
            .map(|v| demo_uuid(&kind("visit"), n * 100 + v))
            .collect(),
        encounters: (0..encounters)
            .map(|e| demo_uuid(&kind("encounter"), n * 100 + e))
            .collect(),
        obs: (0..encounters * u64::from(shape.obs_per_encounter))
            .map(|o| demo_uuid(&kind("obs"), n * 10_000 + o))
            .collect(),
    }
}

/// Writes patients `first..first+count` of `prefix`, one transaction each, at the clinic
/// `clinic` (loaded by [`load_metadata`]). Returns the number of rows written.
pub async fn load_patients(
    conn: &mut Conn,
    clinic: &str,
    prefix: &str,
    first: u64,
    count: u64,
    shape: PatientShape,
) -> mysql_async::Result<u64> {
    let ids = MetadataIds::load(conn, clinic).await?;
    let mut rows = 0;
    for n in first..first + count {
        rows += write_patient(conn, &ids, prefix, n, shape).await?;
    }
    Ok(rows)
}

pub(crate) struct MetadataIds {
    pub(crate) admin: i64,
    pub(crate) location: i64,
    pub(crate) visit_type: i64,
    pub(crate) encounter_types: [i64; 2],
    /// In the order of `CONCEPTS`: the first three are numeric.
    pub(crate) concepts: Vec<i64>,
    pub(crate) id_type: i64,
}

impl MetadataIds {
    pub(crate) async fn load(conn: &mut Conn, clinic: &str) -> mysql_async::Result<MetadataIds> {
        let id = |table: &'static str, key: &'static str| {
            format!("SELECT {key} FROM {table} WHERE uuid = ?")
        };
        let mut one = async |sql: String, uuid: String| -> mysql_async::Result<i64> {
            let found: Option<i64> = conn.exec_first(sql, (uuid.clone(),)).await?;
            found.ok_or_else(|| {
                mysql_async::Error::Other(
                    format!("demo metadata row {uuid} is missing; load the metadata first").into(),
                )
            })
        };
        Ok(MetadataIds {
            admin: one(id("users", "user_id"), ADMIN_USER.into()).await?,
            location: one(
                id("location", "location_id"),
                demo_uuid("location", fnv(clinic)),
            )
            .await?,
            visit_type: one(
                id("visit_type", "visit_type_id"),
                demo_uuid("visit_type", 1),
            )
            .await?,
            encounter_types: [
                one(
                    id("encounter_type", "encounter_type_id"),
                    demo_uuid("encounter_type", 0),
                )
                .await?,
                one(
                    id("encounter_type", "encounter_type_id"),
                    demo_uuid("encounter_type", 1),
                )
                .await?,
            ],
            concepts: {
                let mut v = Vec::new();
                for n in 0..CONCEPTS.len() {
                    v.push(one(id("concept", "concept_id"), demo_uuid("concept", n as u64)).await?);
                }
                v
            },
            id_type: one(
                id("patient_identifier_type", "patient_identifier_type_id"),
                OPENMRS_ID_TYPE.into(),
            )
            .await?,
        })
    }
}

async fn write_patient(
    conn: &mut Conn,
    ids: &MetadataIds,
    prefix: &str,
    n: u64,
    shape: PatientShape,
) -> mysql_async::Result<u64> {
    let uuids = patient_rows(prefix, n, shape);
    let mut rng = SplitMix(fnv(prefix) ^ n);
    let day = 1 + rng.below(28);
    let created = format!("2024-03-{day:02} 09:{:02}:00", rng.below(60));
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "INSERT INTO person (gender, birthdate, birthdate_estimated, dead, creator, date_created, voided, uuid, deathdate_estimated, birthtime)
         VALUES (?, ?, 0, 0, ?, ?, 0, ?, 0, ?)",
        (
            if rng.below(2) == 0 { "F" } else { "M" },
            format!("{}-{:02}-{:02}", 1950 + rng.below(60), 1 + rng.below(12), 1 + rng.below(28)),
            ids.admin,
            &created,
            &uuids.person,
            if rng.below(4) == 0 { Sql::from(format!("{:02}:{:02}:00", rng.below(24), rng.below(60))) } else { Sql::NULL },
        ),
    )
    .await?;
    let person: i64 = tx.last_insert_id().unwrap_or_default() as i64;
    tx.exec_drop(
        "INSERT INTO person_name (preferred, person_id, given_name, family_name, creator, date_created, voided, uuid)
         VALUES (1, ?, ?, ?, ?, ?, 0, ?)",
        (
            person,
            GIVEN[rng.below(GIVEN.len() as u64) as usize],
            FAMILY[rng.below(FAMILY.len() as u64) as usize],
            ids.admin,
            &created,
            &uuids.name,
        ),
    )
    .await?;
    tx.exec_drop(
        "INSERT INTO patient (patient_id, creator, date_created, voided, allergy_status) VALUES (?, ?, ?, 0, 'Unknown')",
        (person, ids.admin, &created),
    )
    .await?;
    tx.exec_drop(
        "INSERT INTO patient_identifier (patient_id, identifier, identifier_type, preferred, location_id, creator, date_created, voided, uuid)
         VALUES (?, ?, ?, 1, ?, ?, ?, 0, ?)",
        (person, format!("{prefix}-{n:06}"), ids.id_type, ids.location, ids.admin, &created, &uuids.identifier),
    )
    .await?;
    let mut encounter_index = 0usize;
    let mut obs_index = 0usize;
    for (v, visit_uuid) in uuids.visits.iter().enumerate() {
        let started = format!("2024-{:02}-{day:02} 08:00:00", 4 + v);
        tx.exec_drop(
            "INSERT INTO visit (patient_id, visit_type_id, date_started, date_stopped, location_id, creator, date_created, voided, uuid)
             VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
            (person, ids.visit_type, &started, format!("2024-{:02}-{day:02} 17:00:00", 4 + v), ids.location, ids.admin, &started, visit_uuid),
        )
        .await?;
        let visit: i64 = tx.last_insert_id().unwrap_or_default() as i64;
        for e in 0..shape.encounters_per_visit {
            let at = format!("2024-{:02}-{day:02} {:02}:15:00", 4 + v, 9 + e);
            tx.exec_drop(
                "INSERT INTO encounter (encounter_type, patient_id, location_id, encounter_datetime, creator, date_created, voided, visit_id, uuid)
                 VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (ids.encounter_types[e as usize % 2], person, ids.location, &at, ids.admin, &at, visit, &uuids.encounters[encounter_index]),
            )
            .await?;
            let encounter: i64 = tx.last_insert_id().unwrap_or_default() as i64;
            encounter_index += 1;
            for o in 0..shape.obs_per_encounter {
                let (concept, value_numeric, value_coded, value_text) = match o % 4 {
                    0 => (
                        ids.concepts[0],
                        Sql::Double(40.0 + rng.below(600) as f64 / 10.0),
                        Sql::NULL,
                        Sql::NULL,
                    ),
                    1 => (
                        ids.concepts[2],
                        Sql::Double(35.5 + rng.below(50) as f64 / 10.0),
                        Sql::NULL,
                        Sql::NULL,
                    ),
                    2 => (
                        ids.concepts[3],
                        Sql::NULL,
                        Sql::Int(ids.concepts[5 + rng.below(3) as usize]),
                        Sql::NULL,
                    ),
                    _ => (
                        ids.concepts[4],
                        Sql::NULL,
                        Sql::NULL,
                        Sql::from("Patient reports feeling better; continue treatment."),
                    ),
                };
                tx.exec_drop(
                    "INSERT INTO obs (person_id, concept_id, encounter_id, obs_datetime, location_id, value_coded, value_numeric, value_text,
                                      creator, date_created, voided, uuid, status)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 'FINAL')",
                    (person, concept, encounter, &at, ids.location, value_coded, value_numeric, value_text, ids.admin, &at, &uuids.obs[obs_index]),
                )
                .await?;
                obs_index += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(shape.rows_per_patient())
}

/// Writes `rows` weight observations for one encounter in a single statement, so a single
/// source transaction (a bulk import, a migration). Their uuids are
/// `b0000000-0000-4000-8000-<12-digit number>`, numbered from 1.
pub async fn load_bulk_obs(
    conn: &mut Conn,
    encounter_uuid: &str,
    rows: u64,
) -> mysql_async::Result<u64> {
    conn.exec_drop(
        format!(
            "INSERT INTO obs (person_id, concept_id, encounter_id, obs_datetime, location_id, value_numeric,
                              creator, date_created, voided, uuid, status)
             SELECT e.patient_id, c.concept_id, e.encounter_id, e.encounter_datetime, e.location_id, s.seq,
                    1, e.encounter_datetime, 0, CONCAT('b0000000-0000-4000-8000-', LPAD(s.seq, 12, '0')), 'FINAL'
             FROM seq_1_to_{rows} s JOIN encounter e ON e.uuid = ? JOIN concept c ON c.uuid = ?"
        ),
        (encounter_uuid, demo_uuid("concept", 0)),
    )
    .await?;
    Ok(conn.affected_rows())
}

/// What [`live_changes`] did: descriptions (no values), how many rows changed (each one row
/// event in the binlog), and the rows it deleted, as (table, uuid).
#[derive(Debug, Clone, Default)]
pub struct LiveChanges {
    pub descriptions: Vec<String>,
    pub rows: u64,
    pub deleted: Vec<(String, String)>,
}

/// Live clinical work on patients already loaded: what the demo does while capture runs.
pub async fn live_changes(
    conn: &mut Conn,
    prefix: &str,
    patients: u64,
    shape: PatientShape,
) -> mysql_async::Result<LiveChanges> {
    let mut done = LiveChanges::default();
    let admin: i64 = conn
        .exec_first("SELECT user_id FROM users WHERE uuid = ?", (ADMIN_USER,))
        .await?
        .unwrap_or(1);
    let patient = |n: u64| patient_rows(prefix, n.min(patients.saturating_sub(1)), shape);
    // A name correction (update).
    conn.exec_drop(
        "UPDATE person_name SET given_name = CONCAT(given_name, 'a'), changed_by = ?, date_changed = '2024-06-01 10:00:00' WHERE uuid = ?",
        (admin, &patient(0).name),
    )
    .await?;
    done.rows += conn.affected_rows();
    done.descriptions.push("updated a person_name".to_owned());
    // An obs edit: void the old value and insert the new one pointing at it (one transaction).
    let edited = patient(1).obs[0].clone();
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "UPDATE obs SET voided = 1, voided_by = ?, date_voided = '2024-06-01 10:05:00', void_reason = 'corrected' WHERE uuid = ?",
        (admin, &edited),
    )
    .await?;
    done.rows += tx.affected_rows();
    tx.exec_drop(
        "INSERT INTO obs (person_id, concept_id, encounter_id, obs_datetime, location_id, value_numeric, creator, date_created, voided, uuid, previous_version, status)
         SELECT person_id, concept_id, encounter_id, obs_datetime, location_id, value_numeric + 1.5, ?, '2024-06-01 10:05:00', 0, ?, obs_id, 'AMENDED'
         FROM obs WHERE uuid = ?",
        (admin, demo_uuid(&format!("{prefix}/obs-edit"), 1), &edited),
    )
    .await?;
    done.rows += tx.affected_rows();
    tx.commit().await?;
    done.descriptions
        .push("edited an obs (void + insert with previous_version)".to_owned());
    // Void a whole encounter with its obs.
    let voided = patient(2).encounters[0].clone();
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "UPDATE obs o JOIN encounter e ON e.encounter_id = o.encounter_id SET o.voided = 1, o.voided_by = ?, o.date_voided = '2024-06-02 08:00:00', o.void_reason = 'entered in error' WHERE e.uuid = ?",
        (admin, &voided),
    )
    .await?;
    done.rows += tx.affected_rows();
    tx.exec_drop(
        "UPDATE encounter SET voided = 1, voided_by = ?, date_voided = '2024-06-02 08:00:00', void_reason = 'entered in error' WHERE uuid = ?",
        (admin, &voided),
    )
    .await?;
    done.rows += tx.affected_rows();
    tx.commit().await?;
    done.descriptions
        .push("voided an encounter and its obs".to_owned());
    // Delete an identifier entered twice (a physical delete).
    let identifier = patient(3).identifier;
    conn.exec_drop(
        "DELETE FROM patient_identifier WHERE uuid = ?",
        (&identifier,),
    )
    .await?;
    done.rows += conn.affected_rows();
    done.deleted
        .push(("patient_identifier".to_owned(), identifier));
    done.descriptions
        .push("deleted a patient_identifier".to_owned());
    Ok(done)
}

/// Rows only one database has (HQ's own location and dictionary entries), written first so
/// that the shared rows get different integer ids there.
pub async fn load_local_extras(conn: &mut Conn, label: &str) -> mysql_async::Result<()> {
    load_metadata(conn, label).await?;
    conn.exec_drop(
        "INSERT IGNORE INTO concept (retired, datatype_id, class_id, is_set, creator, date_created, uuid)
         SELECT 0, d.concept_datatype_id, c.concept_class_id, 0, u.user_id, '2024-01-01 00:00:00', ?
         FROM concept_datatype d, concept_class c, users u WHERE d.uuid = ? AND c.uuid = ? AND u.uuid = ?",
        (demo_uuid(&format!("{label}/concept"), 0), NA, CLASS_TEST, ADMIN_USER),
    )
    .await
}
