//! Conflicts are never overwritten silently (invariant 5): HQ keeps a hash of the state it
//! last wrote for each row and site, so a site's change to a row that was edited at HQ, or
//! written from another site, since that site last wrote it follows the table's policy. The
//! default keeps HQ's row and holds both versions for a person (`tributary conflicts`), with
//! later changes to the row queued behind; `site-wins`, `hq-wins` and `newest-date-changed`
//! settle it at once and record how. A site that says what HQ already has is no conflict.

use anyhow::{Context, Result, bail};
use mysql_async::prelude::*;
use tributary_suite::pipeline::{CATCH_UP, CLINIC, Pipeline, PipelineOptions, run_ok};
use tributary_suite::{ChildGuard, MariaDb, Role, wait_until};

const PERSON: &str = "c0f1c700-0000-4000-8000-000000000001";
const NAME: &str = "c0f1c700-0000-4000-8000-0000000000a1";
const OTHER_PERSON: &str = "c0f1c700-0000-4000-8000-000000000002";
/// Values that must not be printed unless `show --values` asks.
const HQ_GIVEN: &str = "Akinyi-HQ";
const SITE_FAMILY: &str = "Ochieng-Site";

async fn add_person(conn: &mut mysql_async::Conn, person: &str, name: &str) -> Result<()> {
    conn.exec_drop(
        "INSERT INTO person (gender, birthdate, creator, date_created, voided, uuid)
         VALUES ('F', '1990-04-01', 1, '2024-01-01 00:00:00', 0, ?)",
        (person,),
    )
    .await?;
    conn.exec_drop(
        "INSERT INTO person_name (preferred, person_id, given_name, family_name, creator,
                                  date_created, voided, uuid)
         SELECT 1, person_id, 'Akinyi', 'Otieno', 1, '2024-01-01 00:00:00', 0, ?
         FROM person WHERE uuid = ?",
        (name, person),
    )
    .await?;
    Ok(())
}

/// Waits until `sql` (one number) at HQ returns `expected`.
async fn wait_hq(p: &Pipeline, what: &str, sql: &str, expected: i64) -> Result<()> {
    let hq = &p.hq;
    wait_until(what, CATCH_UP, move || async move {
        let value: Option<i64> = hq.conn().await?.query_first(sql).await?;
        Ok(value == Some(expected))
    })
    .await
    .with_context(|| p.status().unwrap_or_default())
}

async fn hq_text(p: &Pipeline, sql: &str) -> Result<String> {
    let value: Option<String> = p.hq.conn().await?.query_first(sql).await?;
    value.with_context(|| format!("no row for {sql}"))
}

fn open_conflicts(p: &Pipeline) -> Result<Vec<serde_json::Value>> {
    let out = run_ok(p.run(&["conflicts", "list", "--json"])?)?;
    Ok(serde_json::from_str(&out)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_at_hq_waits_with_both_versions_until_a_person_decides() -> Result<()> {
    let p = Pipeline::start("conflicts-queue", PipelineOptions::default()).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let mut site = p.site.conn().await?;
    add_person(&mut site, PERSON, NAME).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let mut hq = p.hq.conn().await?;

    // A clerk at HQ corrects the given name; then the clinic edits the family name.
    hq.exec_drop(
        "UPDATE person_name SET given_name = ? WHERE uuid = ?",
        (HQ_GIVEN, NAME),
    )
    .await?;
    site.exec_drop(
        "UPDATE person_name SET family_name = ? WHERE uuid = ?",
        (SITE_FAMILY, NAME),
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let row = |given: &str, family: &str| format!("{given} {family}");
    let names_sql = format!(
        "SELECT CONCAT(given_name, ' ', family_name) FROM person_name WHERE uuid = '{NAME}'"
    );
    assert_eq!(
        hq_text(&p, &names_sql).await?,
        row(HQ_GIVEN, "Otieno"),
        "HQ's edit must not be overwritten silently"
    );
    let open = open_conflicts(&p)?;
    assert_eq!(open.len(), 1, "one open conflict: {open:?}");
    let id = open[0]["conflict_id"].as_u64().context("conflict id")?;
    assert_eq!(open[0]["table"], "person_name");
    assert_eq!(open[0]["identity"], NAME);
    assert_eq!(open[0]["site_id"], "clinic-a");
    assert_eq!(
        open[0]["differing_columns"],
        serde_json::json!(["family_name", "given_name"])
    );
    assert!(
        open[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("edited at HQ since site clinic-a last wrote it")),
        "{open:?}"
    );
    let status = p.status()?;
    assert!(
        status.contains("conflicts wait"),
        "status names the waiting conflict:\n{status}"
    );

    // `show` names columns; values only with --values.
    let shown = run_ok(p.run(&["conflicts", "show", &id.to_string()])?)?;
    assert!(
        shown.contains("differs in  family_name, given_name"),
        "{shown}"
    );
    assert!(
        !shown.contains(HQ_GIVEN) && !shown.contains(SITE_FAMILY),
        "no values without --values:\n{shown}"
    );
    let with_values = run_ok(p.run(&["conflicts", "show", &id.to_string(), "--values"])?)?;
    assert!(
        with_values.contains(HQ_GIVEN) && with_values.contains(SITE_FAMILY),
        "both versions with --values:\n{with_values}"
    );

    // A later change to the row queues behind the conflict; other rows flow on.
    site.exec_drop(
        "UPDATE person_name SET voided = 1, void_reason = 'duplicate', voided_by = 1,
                date_voided = '2024-02-01 00:00:00' WHERE uuid = ?",
        (NAME,),
    )
    .await?;
    add_person(
        &mut site,
        OTHER_PERSON,
        "c0f1c700-0000-4000-8000-0000000000a2",
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let voided: Option<i64> = hq
        .exec_first("SELECT voided FROM person_name WHERE uuid = ?", (NAME,))
        .await?;
    assert_eq!(voided, Some(0), "the void waits behind the open conflict");
    let other: Option<i64> = hq
        .exec_first(
            "SELECT COUNT(*) FROM person WHERE uuid = ?",
            (OTHER_PERSON,),
        )
        .await?;
    assert_eq!(other, Some(1), "other rows are applied meanwhile");
    let queued: Option<String> = hq
        .query_first("SELECT reason FROM tributary_parked_row WHERE table_name = 'person_name'")
        .await?;
    assert!(
        queued
            .as_deref()
            .is_some_and(|r| r.contains(&format!("open conflict {id}"))),
        "{queued:?}"
    );

    // Merge: the site's family name, HQ's given name. The queued void is released and checked
    // again: it still carries the given name HQ declined, so it is a conflict of its own.
    let out = run_ok(p.run(&[
        "conflicts",
        "resolve",
        &id.to_string(),
        "--merge",
        "family_name",
        "--by",
        "records-officer",
        "--note",
        "HQ spelling confirmed",
    ])?)?;
    assert!(
        out.contains("resolved (merged) by records-officer"),
        "{out}"
    );
    assert_eq!(hq_text(&p, &names_sql).await?, row(HQ_GIVEN, SITE_FAMILY));
    let open = open_conflicts(&p)?;
    assert_eq!(
        open.len(),
        1,
        "the released void meets HQ's kept name: {open:?}"
    );
    let second = open[0]["conflict_id"].as_u64().context("conflict id")?;
    assert_ne!(second, id);
    let parked: Option<i64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_row")
        .await?;
    assert_eq!(
        parked,
        Some(0),
        "nothing stays parked behind a resolved conflict"
    );

    // Resolving twice is refused; taking the site's version makes HQ equal to the site.
    let again = p.run(&[
        "conflicts",
        "resolve",
        &id.to_string(),
        "--keep-hq",
        "--by",
        "someone-else",
    ])?;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already resolved (by records-officer)")
    );
    run_ok(p.run(&[
        "conflicts",
        "resolve",
        &second.to_string(),
        "--take-site",
        "--by",
        "records-officer",
    ])?)?;
    assert_eq!(hq_text(&p, &names_sql).await?, row("Akinyi", SITE_FAMILY));
    p.verify()?;

    // From now on the site's changes to the row apply as usual: it is the last writer again.
    site.exec_drop(
        "UPDATE person_name SET family_name = 'Ochieng' WHERE uuid = ?",
        (NAME,),
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    assert_eq!(hq_text(&p, &names_sql).await?, row("Akinyi", "Ochieng"));
    assert!(open_conflicts(&p)?.is_empty());
    let all: Vec<serde_json::Value> = serde_json::from_str(&run_ok(p.run(&[
        "conflicts",
        "list",
        "--all",
        "--json",
    ])?)?)?;
    let resolutions: Vec<(&str, &str)> = all
        .iter()
        .map(|c| {
            (
                c["resolution"].as_str().unwrap_or(""),
                c["resolved_by"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        resolutions,
        [
            ("merge", "records-officer"),
            ("take-site", "records-officer")
        ]
    );
    p.verify()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_policies_settle_conflicts_and_record_the_outcome() -> Result<()> {
    let p = Pipeline::start("conflicts-policy", PipelineOptions::default()).await?;
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(
        &p.config,
        config.replace(
            "[hq.database]",
            "[hq.conflicts]\ndefault = \"queue\"\ntables = { person_name = \"site-wins\", \
             person = \"hq-wins\", person_address = \"newest-date-changed\" }\n\n[hq.database]",
        ),
    )?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let mut site = p.site.conn().await?;
    add_person(&mut site, PERSON, NAME).await?;
    for (address, city) in [
        ("c0f1c700-0000-4000-8000-0000000000d1", "Kisumu"),
        ("c0f1c700-0000-4000-8000-0000000000d2", "Siaya"),
    ] {
        site.exec_drop(
            "INSERT INTO person_address (person_id, preferred, city_village, creator,
                                         date_created, voided, uuid)
             SELECT person_id, 0, ?, 1, '2024-01-01 00:00:00', 0, ? FROM person WHERE uuid = ?",
            (city, address, PERSON),
        )
        .await?;
    }
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let mut hq = p.hq.conn().await?;

    // HQ edits four rows.
    hq.exec_drop(
        "UPDATE person_name SET given_name = ? WHERE uuid = ?",
        (HQ_GIVEN, NAME),
    )
    .await?;
    hq.exec_drop("UPDATE person SET gender = 'M' WHERE uuid = ?", (PERSON,))
        .await?;
    hq.exec_drop(
        "UPDATE person_address SET city_village = 'HQ-newer', date_changed = '2030-01-01 00:00:00'
         WHERE uuid = 'c0f1c700-0000-4000-8000-0000000000d1'",
        (),
    )
    .await?;
    hq.exec_drop(
        "UPDATE person_address SET city_village = 'HQ-older', date_changed = '2020-01-01 00:00:00'
         WHERE uuid = 'c0f1c700-0000-4000-8000-0000000000d2'",
        (),
    )
    .await?;
    // The site edits the same four rows, and makes, on a fifth, the very edit HQ made.
    site.exec_drop(
        "UPDATE person_name SET family_name = ? WHERE uuid = ?",
        (SITE_FAMILY, NAME),
    )
    .await?;
    site.exec_drop(
        "UPDATE person SET birthdate = '1991-05-05' WHERE uuid = ?",
        (PERSON,),
    )
    .await?;
    site.exec_drop(
        "UPDATE person_address SET city_village = 'Site', date_changed = '2025-01-01 00:00:00'
         WHERE uuid IN ('c0f1c700-0000-4000-8000-0000000000d1',
                        'c0f1c700-0000-4000-8000-0000000000d2')",
        (),
    )
    .await?;
    add_person(
        &mut site,
        OTHER_PERSON,
        "c0f1c700-0000-4000-8000-0000000000a2",
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    hq.exec_drop(
        "UPDATE person SET birthdate = '1970-01-01' WHERE uuid = ?",
        (OTHER_PERSON,),
    )
    .await?;
    site.exec_drop(
        "UPDATE person SET birthdate = '1970-01-01' WHERE uuid = ?",
        (OTHER_PERSON,),
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    // site-wins: the site's whole version; hq-wins: HQ's row untouched.
    assert_eq!(
        hq_text(
            &p,
            &format!(
                "SELECT CONCAT(given_name, ' ', family_name) FROM person_name WHERE uuid = '{NAME}'"
            )
        )
        .await?,
        format!("Akinyi {SITE_FAMILY}")
    );
    assert_eq!(
        hq_text(
            &p,
            &format!("SELECT CONCAT(gender, ' ', birthdate) FROM person WHERE uuid = '{PERSON}'")
        )
        .await?,
        "M 1990-04-01"
    );
    // newest-date-changed: HQ's 2030 edit beats the site's 2025; the site's 2025 beats HQ's 2020.
    let cities: Vec<String> = hq
        .query("SELECT city_village FROM person_address WHERE uuid LIKE 'c0f1c700%' ORDER BY uuid")
        .await?;
    assert_eq!(cities, ["HQ-newer", "Site"]);

    // Nothing waits; each settled conflict is recorded with its policy's outcome, and the
    // edit both sides made alike is no conflict at all.
    assert!(open_conflicts(&p)?.is_empty());
    let recorded: Vec<(String, String, String)> = hq
        .query(
            "SELECT table_name, resolution, resolved_by FROM tributary_conflict
             ORDER BY table_name, resolution",
        )
        .await?;
    let recorded: Vec<(&str, &str, &str)> = recorded
        .iter()
        .map(|(t, r, b)| (t.as_str(), r.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        recorded,
        [
            ("person", "hq-wins", "policy"),
            ("person_address", "hq-wins", "policy"),
            ("person_address", "site-wins", "policy"),
            ("person_name", "site-wins", "policy"),
        ]
    );
    Ok(())
}

/// A second site sending into the same HQ and transport directory.
struct SecondSite {
    db: MariaDb,
    capture: ChildGuard,
}

async fn second_site(p: &Pipeline) -> Result<SecondSite> {
    let db = tokio::task::spawn_blocking(|| MariaDb::start(Role::Site, "conflicts-b")).await??;
    tributary::dataset::load_metadata(&mut db.conn().await?, CLINIC).await?;
    let (config, state_dir) = p.add_site("clinic-b", &db)?;
    let capture = p.spawn_with("capture", &config, "capture-b")?;
    p.wait_capture_started(&state_dir, &capture).await?;
    Ok(SecondSite { db, capture })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_never_saw_another_sites_edit_meets_a_conflict() -> Result<()> {
    let p = Pipeline::start("conflicts-sites", PipelineOptions::default()).await?;
    // Clinic B's key is in HQ's key directory before the applier reads it.
    let b = second_site(&p).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let mut site_a = p.site.conn().await?;
    let mut site_b = b.db.conn().await?;

    // The patient is registered at clinic A, then transferred: clinic B enters the same
    // person with the same uuid and the same values. That is agreement, not a conflict.
    add_person(&mut site_a, PERSON, NAME).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    add_person(&mut site_b, PERSON, NAME).await?;
    wait_hq(
        &p,
        "clinic B's copy of the patient to be applied",
        "SELECT rows_applied FROM tributary_site_progress WHERE site_id = 'clinic-b'",
        2,
    )
    .await?;
    assert!(open_conflicts(&p)?.is_empty());
    let people: Option<i64> =
        p.hq.conn()
            .await?
            .exec_first("SELECT COUNT(*) FROM person WHERE uuid = ?", (PERSON,))
            .await?;
    assert_eq!(people, Some(1), "one person at HQ, matched by uuid");

    // Clinic A corrects the family name; clinic B, not knowing, edits the given name.
    site_a
        .exec_drop(
            "UPDATE person_name SET family_name = ? WHERE uuid = ?",
            (SITE_FAMILY, NAME),
        )
        .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    site_b
        .exec_drop(
            "UPDATE person_name SET given_name = 'Akinyi B.' WHERE uuid = ?",
            (NAME,),
        )
        .await?;
    wait_hq(
        &p,
        "clinic B's edit to meet a conflict",
        "SELECT COUNT(*) FROM tributary_conflict WHERE status = 'open'",
        1,
    )
    .await
    .map_err(|e| e.context(b.capture.logs()))?;
    let open = open_conflicts(&p)?;
    assert_eq!(open[0]["site_id"], "clinic-b");
    let reason = open[0]["reason"].as_str().unwrap_or_default();
    if !reason.contains("written from site clinic-a since site clinic-b last wrote it") {
        bail!("unexpected reason: {reason}");
    }
    assert_eq!(
        hq_text(
            &p,
            &format!(
                "SELECT CONCAT(given_name, ' ', family_name) FROM person_name WHERE uuid = '{NAME}'"
            )
        )
        .await?,
        format!("Akinyi {SITE_FAMILY}"),
        "clinic A's correction stands until a person decides"
    );
    Ok(())
}

/// A location tag named "Triage" (the name is unique at HQ).
async fn add_tag(conn: &mut mysql_async::Conn, uuid: &str) -> Result<()> {
    conn.exec_drop(
        "INSERT INTO location_tag (name, description, creator, date_created, retired, uuid)
         VALUES ('Triage', 'created here', 1, '2024-01-01 00:00:00', 0, ?)",
        (uuid,),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_at_hq_parks_the_row_with_the_key_it_collides_on() -> Result<()> {
    let p = Pipeline::start("conflicts-unique", PipelineOptions::default()).await?;
    // HQ made its own tag with the name; the clinic makes one independently (another uuid).
    add_tag(
        &mut p.hq.conn().await?,
        "c0f1c700-0000-4000-8000-0000000000e1",
    )
    .await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let mut site = p.site.conn().await?;
    add_tag(&mut site, "c0f1c700-0000-4000-8000-0000000000e2").await?;
    add_person(&mut site, PERSON, NAME).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    // A definite error, parked with the key named; never a crash, never a silent drop.
    let mut hq = p.hq.conn().await?;
    let reason: Option<String> = hq
        .query_first("SELECT reason FROM tributary_parked_row WHERE table_name = 'location_tag'")
        .await?;
    let reason = reason.context("the colliding tag is parked")?;
    assert!(
        reason.contains("unique key `name` of `location_tag` already holds another row"),
        "{reason}"
    );
    assert!(!reason.contains("Triage"), "no values in reasons: {reason}");
    let people: Option<i64> = hq
        .exec_first("SELECT COUNT(*) FROM person WHERE uuid = ?", (PERSON,))
        .await?;
    assert_eq!(people, Some(1), "the rest of the stream is applied");

    // HQ renames its tag; a retry releases the clinic's.
    hq.query_drop(
        "UPDATE location_tag SET name = 'Triage (HQ)'
         WHERE uuid = 'c0f1c700-0000-4000-8000-0000000000e1'",
    )
    .await?;
    run_ok(p.run(&["parked", "retry", "--all"])?)?;
    let tags: Vec<String> = hq
        .query("SELECT name FROM location_tag WHERE uuid LIKE 'c0f1c700%' ORDER BY uuid")
        .await?;
    assert_eq!(tags, ["Triage (HQ)", "Triage"]);
    Ok(())
}

/// A person and a user with the login names every clinic picks first.
async fn add_user(conn: &mut mysql_async::Conn, person: &str, user: &str) -> Result<()> {
    conn.exec_drop(
        "INSERT INTO person (gender, creator, date_created, voided, uuid)
         VALUES ('F', 1, '2024-01-01 00:00:00', 0, ?)",
        (person,),
    )
    .await?;
    conn.exec_drop(
        "INSERT INTO users (system_id, username, person_id, creator, date_created, retired, uuid)
         SELECT '2-6', 'nurse1', person_id, 1, '2024-01-01 00:00:00', 0, ?
         FROM person WHERE uuid = ?",
        (user, person),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_name_another_sites_user_has_follows_the_declared_policy() -> Result<()> {
    let p = Pipeline::start("conflicts-users", PipelineOptions::default()).await?;
    let b = second_site(&p).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let user_a = "c0f1c700-0000-4000-8000-0000000000b1";
    let user_b = "c0f1c700-0000-4000-8000-0000000000b2";
    add_user(&mut p.site.conn().await?, PERSON, user_a).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    add_user(&mut b.db.conn().await?, OTHER_PERSON, user_b).await?;
    wait_hq(
        &p,
        "clinic B's user to park",
        "SELECT COUNT(*) FROM tributary_parked_row WHERE table_name = 'users'",
        1,
    )
    .await?;
    let reason = hq_text(
        &p,
        "SELECT reason FROM tributary_parked_row WHERE table_name = 'users'",
    )
    .await?;
    assert!(
        reason.contains("another HQ user already has this user's username and system_id"),
        "{reason}"
    );
    assert!(!reason.contains("nurse1"), "no values in reasons: {reason}");

    // HQ declares the suffix policy; a retry writes the user as nurse1@clinic-b.
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(
        &p.config,
        config.replace(
            "[hq.database]",
            "[hq.conflicts]\nusernames = \"suffix-site\"\n\n[hq.database]",
        ),
    )?;
    run_ok(p.run(&["parked", "retry", "--all"])?)?;
    let names: Vec<(String, String)> = p
        .hq
        .conn()
        .await?
        .query("SELECT username, system_id FROM users WHERE uuid LIKE 'c0f1c700%' ORDER BY uuid")
        .await?;
    assert_eq!(
        names,
        [
            ("nurse1".to_owned(), "2-6".to_owned()),
            ("nurse1@clinic-b".to_owned(), "2-6@clinic-b".to_owned())
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_deleted_at_one_site_while_another_sites_rows_refer_to_it_parks() -> Result<()> {
    let p = Pipeline::start("conflicts-delete", PipelineOptions::default()).await?;
    let b = second_site(&p).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    // Clinic A registers a person; clinic B, seeing the same person, records a name of its own.
    add_person(&mut p.site.conn().await?, PERSON, NAME).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let name_b = "c0f1c700-0000-4000-8000-0000000000c2";
    let mut site_b = b.db.conn().await?;
    add_person(&mut site_b, PERSON, NAME).await?;
    site_b
        .exec_drop(
            "INSERT INTO person_name (preferred, person_id, given_name, family_name, creator,
                                      date_created, voided, uuid)
             SELECT 0, person_id, 'Akinyi', 'Odhiambo', 1, '2024-01-01 00:00:00', 0, ?
             FROM person WHERE uuid = ?",
            (name_b, PERSON),
        )
        .await?;
    wait_hq(
        &p,
        "clinic B's name to arrive",
        &format!("SELECT COUNT(*) FROM person_name WHERE uuid = '{name_b}'"),
        1,
    )
    .await?;

    // Clinic A deletes the person (its own name first, as the site's keys require).
    let mut site_a = p.site.conn().await?;
    site_a
        .exec_drop("DELETE FROM person_name WHERE uuid = ?", (NAME,))
        .await?;
    site_a
        .exec_drop("DELETE FROM person WHERE uuid = ?", (PERSON,))
        .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    // HQ keeps the person clinic B's name refers to; the delete parks with the reason, once.
    let mut hq = p.hq.conn().await?;
    let people: Option<i64> = hq
        .exec_first("SELECT COUNT(*) FROM person WHERE uuid = ?", (PERSON,))
        .await?;
    assert_eq!(people, Some(1));
    let parked: Vec<(String, String)> = hq
        .query("SELECT table_name, reason FROM tributary_parked_row")
        .await?;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].0, "person");
    assert!(
        parked[0].1.contains("other HQ rows still refer to it"),
        "{parked:?}"
    );
    // Retrying changes nothing and adds nothing: the same row, the same reason.
    run_ok(p.run(&["parked", "retry", "--all"])?)?;
    let again: Vec<(String, String)> = hq
        .query("SELECT table_name, reason FROM tributary_parked_row")
        .await?;
    assert_eq!(again, parked);
    assert!(apply.try_wait()?.is_none(), "{}", apply.logs());
    Ok(())
}

/// Turns the states HQ keeps by HQ id back into the form an earlier HQ kept (by
/// `SHA1(table ':' identity)` in `tributary_row_state`) and drops the table of states by id,
/// as an HQ that ran an earlier Tributary would be. `patient` rows take their person's uuid.
async fn keep_states_the_earlier_way(hq: &mut mysql_async::Conn) -> Result<u64> {
    let tables: Vec<String> = hq
        .query("SELECT DISTINCT table_name FROM tributary_row_state_by_id")
        .await?;
    let mut moved = 0;
    for table in tables {
        let (key, uuid_of_row) = match table.as_str() {
            "patient" => (
                "patient_id",
                "(SELECT uuid FROM person WHERE person_id = t.patient_id)",
            ),
            "person" => ("person_id", "t.uuid"),
            "person_name" => ("person_name_id", "t.uuid"),
            other => bail!("this test converts person, person_name and patient, not {other}"),
        };
        hq.exec_drop(
            format!(
                "INSERT INTO tributary_row_state (entity_key, site_id, state_hash, written_at)
                 SELECT UNHEX(SHA1(CONCAT(s.table_name, ':', {uuid_of_row}))), s.site_id,
                        s.state_hash, s.written_at
                 FROM tributary_row_state_by_id s JOIN `{table}` t ON t.{key} = s.hq_id
                 WHERE s.table_name = ?"
            ),
            (&table,),
        )
        .await?;
        moved += hq.affected_rows();
    }
    hq.query_drop("DROP TABLE tributary_row_state_by_id")
        .await?;
    Ok(moved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_an_earlier_hq_kept_by_identity_are_moved_at_start_and_still_hold() -> Result<()> {
    let p = Pipeline::start("conflicts-earlier-states", PipelineOptions::default()).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let mut site = p.site.conn().await?;
    add_person(&mut site, PERSON, NAME).await?;
    site.exec_drop(
        "INSERT INTO patient (patient_id, creator, date_created, voided)
         SELECT person_id, 1, '2024-01-01 00:00:00', 0 FROM person WHERE uuid = ?",
        (PERSON,),
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    drop(apply);

    let mut hq = p.hq.conn().await?;
    let earlier = keep_states_the_earlier_way(&mut hq).await?;
    assert_eq!(earlier, 3, "person, person_name and patient states");
    // A clerk at HQ corrects the given name while the applier is down.
    hq.exec_drop(
        "UPDATE person_name SET given_name = ? WHERE uuid = ?",
        (HQ_GIVEN, NAME),
    )
    .await?;

    // The new applier moves the states at start; the clinic then edits all three rows.
    let mut apply = p.spawn("apply", "apply-after-upgrade")?;
    site.exec_drop(
        "UPDATE person_name SET family_name = ? WHERE uuid = ?",
        (SITE_FAMILY, NAME),
    )
    .await?;
    site.exec_drop(
        "UPDATE person SET birthdate = '1991-05-02' WHERE uuid = ?",
        (PERSON,),
    )
    .await?;
    site.exec_drop(
        "UPDATE patient SET changed_by = 1, date_changed = '2024-02-02 00:00:00'
         WHERE patient_id = (SELECT person_id FROM person WHERE uuid = ?)",
        (PERSON,),
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    // Rows nobody else touched take the clinic's edits: their moved states matched.
    let birthdate = hq_text(
        &p,
        &format!("SELECT CAST(birthdate AS CHAR) FROM person WHERE uuid = '{PERSON}'"),
    )
    .await?;
    assert_eq!(birthdate, "1991-05-02");
    let changed = hq_text(
        &p,
        &format!(
            "SELECT CAST(pa.date_changed AS CHAR) FROM patient pa
             JOIN person pe ON pe.person_id = pa.patient_id WHERE pe.uuid = '{PERSON}'"
        ),
    )
    .await?;
    assert_eq!(changed, "2024-02-02 00:00:00");
    // The HQ edit is still a conflict, and the reason knows clinic A wrote the row before.
    let open = open_conflicts(&p)?;
    assert_eq!(open.len(), 1, "only the row edited at HQ: {open:?}");
    assert_eq!(open[0]["table"], "person_name");
    assert!(
        open[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("edited at HQ since site clinic-a last wrote it")),
        "{open:?}"
    );
    let left: Option<i64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_row_state")
        .await?;
    assert_eq!(left, Some(0), "moved states leave the earlier table");
    assert!(apply.try_wait()?.is_none(), "{}", apply.logs());
    Ok(())
}
