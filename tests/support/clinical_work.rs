//! The statements of a clinic's daily work, written the way OpenMRS writes them: a visit with
//! an encounter, its provider, an obs group and a drug order; a name correction; an obs
//! amended (the old one voided, a new one pointing at it); an order revised (a REVISE order
//! pointing at the one it replaces, which is stopped); an encounter or a patient voided; an
//! identifier or a whole patient deleted; and a patient's record copied to the clinic the
//! patient moved to. Each is one transaction, and each does nothing when the row it works on
//! is not there (deleted, or never committed because the server crashed under it), so a
//! workload can go on after any fault without knowing exactly what committed.
//!
//! Used by [`crate::workload`]; no values are ever printed.

use anyhow::{Context, Result};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, TxOpts, Value};
use tributary::bulk_dataset::provider_uuid;
use tributary::dataset::{ADMIN_USER, demo_uuid};

/// The order type, care setting and encounter role every OpenMRS database has (fixture rows).
const DRUG_ORDER_TYPE: &str = "131168f4-15f5-102d-96e4-000c29c2a5d7";
const OUTPATIENT: &str = "6f0c9a92-6f24-11e3-af88-005056821db0";
const UNKNOWN_ROLE: &str = "a0b03050-c99b-11e0-9572-0800200c9a66";

/// Writes the clinic provider (the same uuid everywhere, like the dictionary) unless it is
/// there: run at every database before streaming starts.
pub async fn load_provider(conn: &mut Conn) -> Result<()> {
    conn.exec_drop(
        "INSERT IGNORE INTO provider (person_id, name, identifier, creator, date_created, retired, uuid)
         SELECT u.person_id, 'Clinic provider', 'PRV-1', u.user_id, '2024-01-01 00:00:00', 0, ?
         FROM users u WHERE u.uuid = ?",
        (provider_uuid(), ADMIN_USER),
    )
    .await?;
    Ok(())
}

/// The local ids of the metadata one database's clinical rows refer to.
#[derive(Debug, Clone)]
pub struct ClinicIds {
    admin: i64,
    location: i64,
    visit_type: i64,
    encounter_type: i64,
    provider: i64,
    role: i64,
    order_type: i64,
    care_setting: i64,
    /// Weight, temperature, diagnosis, malaria (the demo dictionary's concepts 0, 2, 3, 5).
    concepts: [i64; 4],
}

impl ClinicIds {
    /// Looks them up by uuid (the location by the clinic's name) in the database of `conn`.
    pub async fn load(conn: &mut Conn, clinic: &str) -> Result<ClinicIds> {
        let location: Option<i64> = conn
            .exec_first("SELECT location_id FROM location WHERE name = ?", (clinic,))
            .await?;
        let mut concepts = [0; 4];
        for (slot, n) in concepts.iter_mut().zip([0, 2, 3, 5]) {
            *slot = id_of(conn, "concept", "concept_id", &demo_uuid("concept", n)).await?;
        }
        Ok(ClinicIds {
            admin: id_of(conn, "users", "user_id", ADMIN_USER).await?,
            location: location.context("the clinic's location is missing")?,
            visit_type: id_of(
                conn,
                "visit_type",
                "visit_type_id",
                &demo_uuid("visit_type", 1),
            )
            .await?,
            encounter_type: id_of(
                conn,
                "encounter_type",
                "encounter_type_id",
                &demo_uuid("encounter_type", 1),
            )
            .await?,
            provider: id_of(conn, "provider", "provider_id", &provider_uuid()).await?,
            role: id_of(conn, "encounter_role", "encounter_role_id", UNKNOWN_ROLE).await?,
            order_type: id_of(conn, "order_type", "order_type_id", DRUG_ORDER_TYPE).await?,
            care_setting: id_of(conn, "care_setting", "care_setting_id", OUTPATIENT).await?,
            concepts,
        })
    }
}

async fn id_of(conn: &mut Conn, table: &str, key: &str, uuid: &str) -> Result<i64> {
    let id: Option<i64> = conn
        .exec_first(format!("SELECT {key} FROM {table} WHERE uuid = ?"), (uuid,))
        .await?;
    id.with_context(|| format!("no {table} row with the expected uuid"))
}

/// The uuids of one clinical encounter [`record_encounter`] writes.
#[derive(Debug, Clone)]
pub struct EncounterUuids {
    pub visit: String,
    pub encounter: String,
    pub encounter_provider: String,
    /// The group's parent first, then its three members.
    pub obs: [String; 4],
    pub order: String,
    pub order_number: String,
}

impl EncounterUuids {
    /// Uuids for encounter `n` of the uuid namespace `namespace` (unique per clinic).
    pub fn new(namespace: &str, n: u64) -> EncounterUuids {
        let uuid = |kind: &str, k: u64| demo_uuid(&format!("{namespace}/{kind}"), n * 10 + k);
        EncounterUuids {
            visit: uuid("visit", 0),
            encounter: uuid("encounter", 0),
            encounter_provider: uuid("encounter_provider", 0),
            obs: [0, 1, 2, 3].map(|k| uuid("obs", k)),
            order: uuid("order", 0),
            order_number: format!("{namespace}-ORD-{n}"),
        }
    }
}

/// A visit of `person` with one encounter, its provider, an obs group (a parent and three
/// members: weight, temperature, a coded diagnosis) and a drug order. False when the person
/// is not there.
pub async fn record_encounter(
    conn: &mut Conn,
    ids: &ClinicIds,
    person: &str,
    rows: &EncounterUuids,
    day: u32,
) -> Result<bool> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let Some(patient) = person_id(&mut tx, person).await? else {
        return Ok(false);
    };
    let at = format!("2024-08-{:02} 10:{:02}:00", 1 + day % 28, day % 60);
    tx.exec_drop(
        "INSERT INTO visit (patient_id, visit_type_id, date_started, location_id, creator, date_created, voided, uuid)
         VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
        (patient, ids.visit_type, &at, ids.location, ids.admin, &at, &rows.visit),
    )
    .await?;
    let visit = last_id(&tx)?;
    tx.exec_drop(
        "INSERT INTO encounter (encounter_type, patient_id, location_id, encounter_datetime, creator, date_created, voided, visit_id, uuid)
         VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
        (ids.encounter_type, patient, ids.location, &at, ids.admin, &at, visit, &rows.encounter),
    )
    .await?;
    let encounter = last_id(&tx)?;
    tx.exec_drop(
        "INSERT INTO encounter_provider (encounter_id, provider_id, encounter_role_id, creator, date_created, voided, uuid)
         VALUES (?, ?, ?, ?, ?, 0, ?)",
        (encounter, ids.provider, ids.role, ids.admin, &at, &rows.encounter_provider),
    )
    .await?;
    let insert_obs = "INSERT INTO obs (person_id, concept_id, encounter_id, obs_datetime, location_id, obs_group_id,
                                       value_coded, value_numeric, creator, date_created, voided, uuid, status)
                      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 'FINAL')";
    let [weight, temperature, diagnosis, malaria] = ids.concepts;
    tx.exec_drop(
        insert_obs,
        (
            patient,
            diagnosis,
            encounter,
            &at,
            ids.location,
            Value::NULL,
            Value::NULL,
            Value::NULL,
            ids.admin,
            &at,
            &rows.obs[0],
        ),
    )
    .await?;
    let group = last_id(&tx)?;
    let members = [
        (
            weight,
            Value::NULL,
            Value::Double(50.0 + f64::from(day % 40)),
        ),
        (
            temperature,
            Value::NULL,
            Value::Double(36.0 + f64::from(day % 4)),
        ),
        (diagnosis, Value::Int(malaria), Value::NULL),
    ];
    for ((concept, coded, numeric), uuid) in members.into_iter().zip(&rows.obs[1..]) {
        tx.exec_drop(
            insert_obs,
            (
                patient,
                concept,
                encounter,
                &at,
                ids.location,
                group,
                coded,
                numeric,
                ids.admin,
                &at,
                uuid,
            ),
        )
        .await?;
    }
    tx.exec_drop(
        "INSERT INTO orders (order_type_id, concept_id, orderer, encounter_id, instructions, date_activated, creator, date_created,
                             voided, patient_id, uuid, urgency, order_number, order_action, care_setting)
         VALUES (?, ?, ?, ?, 'Take with food', ?, ?, ?, 0, ?, ?, 'ROUTINE', ?, 'NEW', ?)",
        (ids.order_type, malaria, ids.provider, encounter, &at, ids.admin, &at, patient, &rows.order, &rows.order_number, ids.care_setting),
    )
    .await?;
    let order = last_id(&tx)?;
    tx.exec_drop(
        "INSERT INTO drug_order (order_id, dose, as_needed, dispense_as_written, quantity, num_refills)
         VALUES (?, 1, 0, 0, 30, 0)",
        (order,),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Revises a standing drug order: a REVISE order pointing at `old` (its drug details, the
/// dose raised) and `old` stopped. False when `old` is not there or no longer standing.
pub async fn revise_order(
    conn: &mut Conn,
    ids: &ClinicIds,
    old: &str,
    new: &str,
    order_number: &str,
) -> Result<bool> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let when = "2024-09-01 12:00:00";
    tx.exec_drop(
        "INSERT INTO orders (order_type_id, concept_id, orderer, encounter_id, instructions, date_activated, creator, date_created,
                             voided, patient_id, uuid, urgency, order_number, order_action, care_setting, previous_order_id)
         SELECT order_type_id, concept_id, orderer, encounter_id, 'Dose raised', ?, ?, ?, 0, patient_id, ?, urgency, ?,
                'REVISE', care_setting, order_id
         FROM orders WHERE uuid = ? AND date_stopped IS NULL AND voided = 0",
        (when, ids.admin, when, new, order_number, old),
    )
    .await?;
    if tx.affected_rows() == 0 {
        return Ok(false);
    }
    let revision = last_id(&tx)?;
    tx.exec_drop(
        "INSERT INTO drug_order (order_id, dose, as_needed, dispense_as_written, quantity, num_refills)
         SELECT ?, d.dose + 1, d.as_needed, d.dispense_as_written, d.quantity, d.num_refills
         FROM drug_order d JOIN orders o ON o.order_id = d.order_id WHERE o.uuid = ?",
        (revision, old),
    )
    .await?;
    tx.exec_drop(
        "UPDATE orders SET date_stopped = ? WHERE uuid = ?",
        (when, old),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Sets a name's given name (a correction at a clinic, or at HQ). Rows changed (0 or 1).
pub async fn correct_name(conn: &mut Conn, name: &str, given: &str, day: u32) -> Result<u64> {
    conn.exec_drop(
        "UPDATE person_name SET given_name = ?, changed_by = (SELECT user_id FROM users WHERE uuid = ?),
                date_changed = ? WHERE uuid = ?",
        (given, ADMIN_USER, format!("2024-10-{:02} 08:00:00", 1 + day % 28), name),
    )
    .await?;
    Ok(conn.affected_rows())
}

/// Amends an obs: a new obs with the corrected value pointing at it (`previous_version`),
/// and the old one voided. False when the obs is not there or already voided.
pub async fn amend_obs(conn: &mut Conn, obs: &str, amended: &str) -> Result<bool> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "INSERT INTO obs (person_id, concept_id, encounter_id, obs_datetime, location_id, obs_group_id, value_coded,
                          value_numeric, value_text, creator, date_created, voided, uuid, previous_version, status)
         SELECT person_id, concept_id, encounter_id, obs_datetime, location_id, obs_group_id, value_coded,
                value_numeric + 1, value_text, creator, '2024-09-02 09:00:00', 0, ?, obs_id, 'AMENDED'
         FROM obs WHERE uuid = ? AND voided = 0",
        (amended, obs),
    )
    .await?;
    if tx.affected_rows() == 0 {
        return Ok(false);
    }
    tx.exec_drop(
        "UPDATE obs SET voided = 1, voided_by = creator, date_voided = '2024-09-02 09:00:00',
                void_reason = 'amended' WHERE uuid = ?",
        (obs,),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Voids an encounter and its obs. False when it is not there or already voided.
pub async fn void_encounter(conn: &mut Conn, encounter: &str) -> Result<bool> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "UPDATE obs o JOIN encounter e ON e.encounter_id = o.encounter_id
         SET o.voided = 1, o.voided_by = e.creator, o.date_voided = '2024-09-03 08:00:00',
             o.void_reason = 'entered in error'
         WHERE e.uuid = ? AND e.voided = 0 AND o.voided = 0",
        (encounter,),
    )
    .await?;
    tx.exec_drop(
        "UPDATE encounter SET voided = 1, voided_by = creator, date_voided = '2024-09-03 08:00:00',
                void_reason = 'entered in error' WHERE uuid = ? AND voided = 0",
        (encounter,),
    )
    .await?;
    let voided = tx.affected_rows() > 0;
    tx.commit().await?;
    Ok(voided)
}

/// Voids a patient (person and patient rows). False when the person is not there.
pub async fn void_patient(conn: &mut Conn, person: &str) -> Result<bool> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "UPDATE person SET voided = 1, voided_by = creator, date_voided = '2024-09-04 08:00:00',
                void_reason = 'duplicate record' WHERE uuid = ? AND voided = 0",
        (person,),
    )
    .await?;
    let voided = tx.affected_rows() > 0;
    tx.exec_drop(
        "UPDATE patient p JOIN person r ON r.person_id = p.patient_id
         SET p.voided = 1, p.voided_by = p.creator, p.date_voided = '2024-09-04 08:00:00',
             p.void_reason = 'duplicate record'
         WHERE r.uuid = ? AND p.voided = 0",
        (person,),
    )
    .await?;
    tx.commit().await?;
    Ok(voided)
}

/// Deletes an identifier entered twice. False when it is not there.
pub async fn delete_identifier(conn: &mut Conn, identifier: &str) -> Result<bool> {
    conn.exec_drop(
        "DELETE FROM patient_identifier WHERE uuid = ?",
        (identifier,),
    )
    .await?;
    Ok(conn.affected_rows() > 0)
}

/// Deletes a patient and every row of theirs, children before parents (newest obs and
/// orders first: amendments, group members and revisions point at older ones). False when
/// the person is not there.
pub async fn delete_patient(conn: &mut Conn, person: &str) -> Result<bool> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let Some(id) = person_id(&mut tx, person).await? else {
        return Ok(false);
    };
    for sql in [
        "DELETE FROM obs WHERE person_id = ? ORDER BY obs_id DESC",
        "DELETE d FROM drug_order d JOIN orders o ON o.order_id = d.order_id WHERE o.patient_id = ?",
        "DELETE FROM orders WHERE patient_id = ? ORDER BY order_id DESC",
        "DELETE ep FROM encounter_provider ep JOIN encounter e ON e.encounter_id = ep.encounter_id
         WHERE e.patient_id = ?",
        "DELETE FROM encounter WHERE patient_id = ?",
        "DELETE FROM visit WHERE patient_id = ?",
        "DELETE FROM patient_identifier WHERE patient_id = ?",
        "DELETE FROM person_name WHERE person_id = ?",
        "DELETE FROM patient WHERE patient_id = ?",
        "DELETE FROM person WHERE person_id = ?",
    ] {
        tx.exec_drop(sql, (id,)).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// A fingerprint of a patient's demographic rows (person, names, patient, identifiers) as
/// one database holds them, with no integer id in it: equal at two databases when both hold
/// the same versions. `None` when the person is not there. Never print it: it holds values.
pub async fn demographics_fingerprint(conn: &mut Conn, person: &str) -> Result<Option<String>> {
    let fingerprint: Option<Option<String>> = conn
        .exec_first(
            "SELECT CONCAT_WS('#',
                (SELECT CONCAT_WS('|', gender, IFNULL(birthdate, '-'), voided, IFNULL(date_changed, '-'))
                 FROM person WHERE uuid = ?),
                (SELECT IFNULL(GROUP_CONCAT(CONCAT_WS('|', n.uuid, n.given_name, n.family_name, n.voided,
                                                      IFNULL(n.date_changed, '-')) ORDER BY n.uuid), '-')
                 FROM person_name n JOIN person p ON p.person_id = n.person_id WHERE p.uuid = ?),
                (SELECT IFNULL(GROUP_CONCAT(CONCAT_WS('|', pa.voided, pa.allergy_status)), '-')
                 FROM patient pa JOIN person p ON p.person_id = pa.patient_id WHERE p.uuid = ?),
                (SELECT IFNULL(GROUP_CONCAT(CONCAT_WS('|', i.uuid, i.identifier, i.voided) ORDER BY i.uuid), '-')
                 FROM patient_identifier i JOIN person p ON p.person_id = i.patient_id WHERE p.uuid = ?))
             FROM person WHERE uuid = ?",
            (person, person, person, person, person),
        )
        .await?;
    Ok(fingerprint.flatten())
}

/// Copies a patient's demographic rows (person, names, patient, identifiers) from the clinic
/// they left (`from`) into the clinic they moved to (`to`), same uuids and values, as a
/// transfer does; their identifiers point at `to`'s location. False when the person is not at
/// `from`.
pub async fn copy_patient(
    from: &mut Conn,
    to: &mut Conn,
    to_ids: &ClinicIds,
    person: &str,
) -> Result<bool> {
    let Some(person_row) = from
        .exec_first::<Row, _, _>("SELECT * FROM person WHERE uuid = ?", (person,))
        .await?
    else {
        return Ok(false);
    };
    let of_person = |table: &str, key: &str| {
        format!("SELECT t.* FROM {table} t JOIN person p ON p.person_id = t.{key} WHERE p.uuid = ?")
    };
    let names: Vec<Row> = from
        .exec(of_person("person_name", "person_id"), (person,))
        .await?;
    let patients: Vec<Row> = from
        .exec(of_person("patient", "patient_id"), (person,))
        .await?;
    let identifiers: Vec<Row> = from
        .exec(of_person("patient_identifier", "patient_id"), (person,))
        .await?;
    let mut tx = to.start_transaction(TxOpts::default()).await?;
    insert_copy(&mut tx, "person", person_row, &[("person_id", None)]).await?;
    let id = Value::Int(last_id(&tx)?);
    for row in names {
        let set = [("person_name_id", None), ("person_id", Some(id.clone()))];
        insert_copy(&mut tx, "person_name", row, &set).await?;
    }
    for row in patients {
        insert_copy(&mut tx, "patient", row, &[("patient_id", Some(id.clone()))]).await?;
    }
    for row in identifiers {
        let set = [
            ("patient_identifier_id", None),
            ("patient_id", Some(id.clone())),
            ("location_id", Some(Value::Int(to_ids.location))),
        ];
        insert_copy(&mut tx, "patient_identifier", row, &set).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Inserts `row` into `table` with its own column values, except those named in `set`:
/// `None` leaves the column out (an auto-increment key), `Some(v)` writes `v` instead.
async fn insert_copy(
    tx: &mut mysql_async::Transaction<'_>,
    table: &str,
    row: Row,
    set: &[(&str, Option<Value>)],
) -> Result<()> {
    let names: Vec<String> = row
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for (name, value) in names.into_iter().zip(row.unwrap()) {
        let value = match set.iter().find(|(column, _)| *column == name) {
            Some((_, None)) => continue,
            Some((_, Some(replacement))) => replacement.clone(),
            None => value,
        };
        columns.push(format!("`{name}`"));
        values.push(value);
    }
    let marks = vec!["?"; columns.len()].join(", ");
    tx.exec_drop(
        format!(
            "INSERT INTO `{table}` ({}) VALUES ({marks})",
            columns.join(", ")
        ),
        values,
    )
    .await?;
    Ok(())
}

async fn person_id(tx: &mut mysql_async::Transaction<'_>, person: &str) -> Result<Option<i64>> {
    Ok(tx
        .exec_first("SELECT person_id FROM person WHERE uuid = ?", (person,))
        .await?)
}

fn last_id(tx: &mysql_async::Transaction<'_>) -> Result<i64> {
    let id = tx.last_insert_id().context("an auto-increment id")?;
    Ok(i64::try_from(id)?)
}
