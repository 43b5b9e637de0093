//! Only authentic batches are applied (invariant 6): a batch altered in transit, and a batch
//! sealed with another site's key, are rejected with a precise reason, recorded at HQ and moved
//! aside; nothing of them is applied, and the genuine batch still applies afterwards.

use anyhow::Result;
use mysql_async::prelude::*;
use tributary::dataset::{self, PatientShape, patient_rows};
use tributary_suite::pipeline::{
    CLINIC, Pipeline, PipelineOptions, batch_files, deliver, run_ok, run_tributary,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_foreign_key_batches_are_rejected_and_nothing_of_them_applies() -> Result<()> {
    let p = Pipeline::start("authenticity", PipelineOptions::default()).await?;
    let outgoing = p.work.join("outgoing");
    let rogue_out = p.work.join("rogue-out");
    let inbox = p.work.join("inbox");
    let keys = p.key_file.parent().unwrap().to_owned();

    // Site B is a known site: its key is in HQ's key directory. A rogue copy of B's key claims
    // to be site A's key (same key id and bytes, edited site id).
    let out = run_ok(run_tributary(&[
        "keys",
        "generate",
        "--site",
        "clinic-b",
        "--out-dir",
        &keys.display().to_string(),
    ])?)?;
    let b_key = std::path::PathBuf::from(out.trim());
    let rogue_key = p.work.join("rogue.key");
    std::fs::write(
        &rogue_key,
        std::fs::read_to_string(&b_key)?.replace("clinic-b", "clinic-a"),
    )?;
    std::fs::set_permissions(
        &rogue_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;

    let genuine_config = p.config_with("capture.toml", &outgoing, &p.key_file, "state")?;
    let rogue_config = p.config_with("rogue.toml", &rogue_out, &rogue_key, "rogue-state")?;
    let apply_config = p.config_with("apply.toml", &inbox, &p.key_file, "state")?;

    let shape = PatientShape::one_encounter(3);
    let mut site = p.site.conn().await?;
    let genuine = p
        .capture_one_patient(&genuine_config, "state", &outgoing, &mut site, 0, shape)
        .await?;
    let rogue = p
        .capture_one_patient(
            &rogue_config,
            "rogue-state",
            &rogue_out,
            &mut site,
            1,
            shape,
        )
        .await?;
    let file_name = genuine.file_name().unwrap().to_string_lossy().into_owned();

    // 1. The genuine batch with one ciphertext byte flipped.
    let mut tampered = std::fs::read(&genuine)?;
    let at = tampered.len() - 20;
    tampered[at] ^= 0x01;
    deliver(&tampered, &inbox, "clinic-a", &file_name)?;
    let out = run_ok(p.run_with(&apply_config, &["apply", "--once"])?)?;
    assert!(
        out.contains("applied 0 batches") && out.contains("1 rejected"),
        "{out}"
    );

    // 2. A batch sealed with site B's key but claiming to be site A's.
    deliver(&std::fs::read(&rogue)?, &inbox, "clinic-a", &file_name)?;
    let out = run_ok(p.run_with(&apply_config, &["apply", "--once"])?)?;
    assert!(
        out.contains("applied 0 batches") && out.contains("1 rejected"),
        "{out}"
    );

    let mut hq = p.hq.conn().await?;
    for n in [0, 1] {
        let person = patient_rows("clinic-a", n, shape).person;
        let found: Option<u64> = hq
            .exec_first("SELECT COUNT(*) FROM person WHERE uuid = ?", (&person,))
            .await?;
        assert_eq!(found, Some(0), "nothing of a rejected batch may be applied");
    }
    let reasons: Vec<String> = hq
        .query("SELECT reason FROM tributary_rejected_batch ORDER BY rejected_id")
        .await?;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("failed authentication"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("clinic-b"),
        "the reason names the key's real site: {}",
        reasons[1]
    );
    let codes: Vec<String> = hq
        .query("SELECT reason_code FROM tributary_rejected_batch ORDER BY rejected_id")
        .await?;
    assert_eq!(
        codes,
        vec!["authentication_failed", "key_site_mismatch"],
        "every rejection is recorded with its reason's name"
    );
    let status = run_ok(p.run_with(&apply_config, &["status"])?)?;
    assert!(status.contains("rejected: clinic-a"), "{status}");
    assert!(
        status.contains("rejected batches by reason: clinic-a authentication_failed 1, clinic-a key_site_mismatch 1"),
        "{status}"
    );
    let rejected_dir = inbox.join("clinic-a").join("rejected");
    assert!(
        std::fs::read_dir(&rejected_dir)?.count() >= 2,
        "rejected batches are kept aside for inspection"
    );

    // 3. The genuine batch, unaltered, still applies; the next one, altered, arrives with it
    //    and is opened while the first is applied: it is rejected all the same.
    let first = std::fs::read(&genuine)?;
    std::fs::remove_file(&genuine)?;
    // Capture goes on from its checkpoint: the rogue's patient, then patient 2.
    let mut capture = p.spawn_with("capture", &genuine_config, "capture-again")?;
    p.wait_capture_started("state", &capture).await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 2, 1, shape).await?;
    p.wait_capture_published("state", &capture).await?;
    capture.signal("TERM")?;
    capture
        .wait_exit(std::time::Duration::from_secs(30))
        .await?;
    let mut later = batch_files(&outgoing, "clinic-a")?;
    later.sort();
    let last = later.pop().expect("capture published the new patient");
    deliver(&first, &inbox, "clinic-a", &file_name)?;
    for genuine_later in &later {
        deliver(
            &std::fs::read(genuine_later)?,
            &inbox,
            "clinic-a",
            &genuine_later.file_name().unwrap().to_string_lossy(),
        )?;
    }
    let mut last_tampered = std::fs::read(&last)?;
    let at = last_tampered.len() - 20;
    last_tampered[at] ^= 0x01;
    deliver(
        &last_tampered,
        &inbox,
        "clinic-a",
        &last.file_name().unwrap().to_string_lossy(),
    )?;
    let out = run_ok(p.run_with(&apply_config, &["apply", "--once"])?)?;
    assert!(
        out.contains(&format!("applied {} batches", 1 + later.len())) && out.contains("1 rejected"),
        "{out}"
    );
    let codes: Vec<String> = hq
        .query("SELECT reason_code FROM tributary_rejected_batch ORDER BY rejected_id")
        .await?;
    assert_eq!(
        codes.last().map(String::as_str),
        Some("authentication_failed")
    );
    let person = patient_rows("clinic-a", 2, shape).person;
    let found: Option<u64> = hq
        .exec_first("SELECT COUNT(*) FROM person WHERE uuid = ?", (&person,))
        .await?;
    assert_eq!(found, Some(0), "nothing of the altered batch is applied");
    let person = patient_rows("clinic-a", 0, shape).person;
    let found: Option<u64> = hq
        .exec_first("SELECT COUNT(*) FROM person WHERE uuid = ?", (&person,))
        .await?;
    assert_eq!(found, Some(1));
    Ok(())
}
