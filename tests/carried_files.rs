//! Carried files (issue 4, "sites with no link"): batches exported at a site into files and
//! imported at HQ in any order and any number of times keep the exactly-once effect of
//! invariant 2 (a later file waits at the gap, copies are skipped, HQ ends equal to the site),
//! and a carried file damaged on the way (cut short, bits flipped) is reported precisely and
//! nothing damaged is applied (invariant 6): the other batches still are.

use anyhow::{Context, Result};
use mysql_async::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tributary::dataset::{self, PatientShape, patient_rows};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, batch_files, run_ok};
use tributary_transport::{CarriedFileWriter, SegmentSpool, Spool};

/// Transactions the site commits; capture publishes each as its own batch.
const UPDATES: u64 = 7;
/// The early file carries sequences 1..=EARLY_LAST, the late one the rest.
const EARLY_LAST: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carried_files_apply_exactly_once_in_any_order_and_damage_is_reported() -> Result<()> {
    let p = Pipeline::start("carried_files", PipelineOptions::default()).await?;
    let outbox = p.work.join("outbox");
    let inbox = p.work.join("inbox");
    // No link: capture keeps its segment spool in `outbox`, the applier reads `inbox`; only
    // files cross.
    let site_config = p.config_with("site.toml", &outbox, &p.key_file, "state")?;
    let site_text = std::fs::read_to_string(&site_config)?;
    std::fs::write(
        &site_config,
        site_text.replace("[transport]\n", "[transport]\nkind = \"carried\"\n"),
    )?;
    // The sealed bytes of every batch in the site's spool, in order.
    let spooled_batches = || -> Result<Vec<Vec<u8>>> {
        let spool = SegmentSpool::open(&outbox, "clinic-a")?;
        let listed = spool.committed_after(None, usize::MAX)?;
        Ok(listed
            .iter()
            .map(|batch| spool.read(batch))
            .collect::<Result<_, _>>()?)
    };
    let hq_config = p.config_with("hq.toml", &inbox, &p.key_file, "state")?;

    let mut capture = p.spawn_with("capture", &site_config, "capture")?;
    p.wait_capture_started("state", &capture).await?;
    let shape = PatientShape::one_encounter(2);
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 1, shape).await?;
    let name = patient_rows("clinic-a", 0, shape).name;
    for version in 1..=UPDATES {
        site.exec_drop(
            "UPDATE person_name SET given_name = ? WHERE uuid = ?",
            (format!("v{version}"), &name),
        )
        .await?;
    }
    p.wait_capture_published("state", &capture).await?;
    capture.signal("TERM")?;
    capture.wait_exit(Duration::from_secs(30)).await?;
    let spooled = spooled_batches()?;
    let last = UPDATES + 1;
    assert_eq!(spooled.len() as u64, last, "one batch per transaction");

    // Two files: the early and the late range.
    let early = p.work.join("early.carried");
    let late = p.work.join("late.carried");
    let out = export(&p, &site_config, &early, &["--to", &EARLY_LAST.to_string()])?;
    assert!(
        out.contains(&format!("exported {EARLY_LAST} batches")) && out.contains("sequences 1..=5"),
        "{out}"
    );
    let out = export(
        &p,
        &site_config,
        &late,
        &["--from", &(EARLY_LAST + 1).to_string()],
    )?;
    assert!(
        out.contains("exported 3 batches") && out.contains("sequences 6..=8"),
        "{out}"
    );
    assert_eq!(
        spooled_batches()?,
        spooled,
        "export leaves every batch in the outbox"
    );

    // 0. A carried file whose batch 1 was altered before it was written (so its CRC holds):
    // the applier's authentication rejects it, import names it, nothing of it applies.
    let tampered = p.work.join("tampered.carried");
    let mut altered = spooled[0].clone();
    let at = altered.len() - 20;
    altered[at] ^= 0x01;
    let epoch = tributary_batch::read_header(&altered)?.epoch;
    let mut writer = CarriedFileWriter::create(&tampered, "clinic-a", epoch)?;
    writer.append(1, &altered)?;
    writer.finish()?;
    let out = import_ok(&p, &hq_config, &[&tampered])?;
    assert!(
        out.contains("applied 0 batches")
            && out.contains(&format!("rejected: site clinic-a epoch {epoch} batch 1:"))
            && out.contains("failed authentication"),
        "{out}"
    );

    // 1. The late file first: nothing applies, the site is held at the gap.
    let out = import_ok(&p, &hq_config, &[&late])?;
    assert!(out.contains("imported 3 batches"), "{out}");
    assert!(
        out.contains("applied 0 batches") && !out.contains("rejected:"),
        "{out}"
    );
    assert!(
        out.contains("site clinic-a is held: waiting for batch 1"),
        "{out}"
    );
    let status = run_ok(p.run_with(&hq_config, &["status"])?)?;
    assert!(status.contains("held: waiting for batch 1"), "{status}");
    let mut hq = p.hq.conn().await?;
    let present: Option<u64> = hq
        .exec_first("SELECT COUNT(*) FROM person_name WHERE uuid = ?", (&name,))
        .await?;
    assert_eq!(present, Some(0), "nothing may be applied past a gap");

    // 2. The early file cut short inside batch 3: 1 and 2 apply, the cut is named.
    let bytes = std::fs::read(&early)?;
    let records = records(&bytes)?;
    let cut_file = p.work.join("early-cut.carried");
    let cut_at = (records[2].1 + records[2].2) / 2;
    std::fs::write(&cut_file, &bytes[..cut_at])?;
    let out = import(&p, &hq_config, &[&cut_file])?;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stdout = text(&out);
    assert!(
        stdout.contains("truncated")
            && stdout.contains(&format!("ends at byte {cut_at}"))
            && stdout.contains("export from sequence 3 again"),
        "the cut is named with its offset and the sequence to resend: {stdout}"
    );
    assert!(
        stdout.contains("imported 2 batches") && stdout.contains("applied 2 batches"),
        "{stdout}"
    );
    assert!(stdout.contains("waiting for batch 3"), "{stdout}");

    // 3. The early file with a bit flipped inside batch 4: 3 and 5 are imported, 4 is
    // reported by sequence and left out, so the site is held at 4.
    let flipped_file = p.work.join("early-flipped.carried");
    let mut flipped = bytes.clone();
    flipped[(records[3].1 + records[3].2) / 2] ^= 0x08;
    std::fs::write(&flipped_file, &flipped)?;
    let out = import(&p, &hq_config, &[&flipped_file])?;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stdout = text(&out);
    assert!(
        stdout.contains("damaged:")
            && stdout.contains("batch 4 (site clinic-a")
            && stdout.contains("checksum"),
        "the damaged batch is named: {stdout}"
    );
    assert!(
        stdout.contains("imported 2 batches")
            && stdout.contains("2 already applied")
            && stdout.contains("1 damaged"),
        "{stdout}"
    );
    assert!(
        stdout.contains("applied 1 batches") && stdout.contains("waiting for batch 4"),
        "{stdout}"
    );
    assert!(
        !batch_files(&inbox, "clinic-a")?
            .iter()
            .any(|f| f.to_string_lossy().ends_with("00000000000000000004.batch")),
        "a damaged batch never reaches the inbox"
    );
    let (applied_sequence, _) = progress(&mut hq).await?;
    assert_eq!(applied_sequence, 3);

    // 4. The intact early file: everything through the late file applies.
    let out = import_ok(&p, &hq_config, &[&early])?;
    assert!(
        out.contains("imported 1 batches")
            && out.contains("3 already applied")
            && out.contains("1 already waiting"),
        "{out}"
    );
    assert!(
        out.contains(&format!("applied {} batches", last - 3)),
        "{out}"
    );
    assert!(!out.contains("held"), "{out}");

    // 5. Both files again, and the damaged ones: nothing is placed or applied twice.
    let out = import_ok(&p, &hq_config, &[&late, &early])?;
    assert!(
        out.contains("imported 0 batches")
            && out.contains(&format!("{last} already applied"))
            && out.contains("applied 0 batches"),
        "{out}"
    );

    // HQ equals the site; every batch applied exactly once; the tampered copy is the only
    // rejection; nothing parked.
    run_ok(p.run_with(&hq_config, &["verify"])?)?;
    let given: Option<String> = hq
        .exec_first(
            "SELECT given_name FROM person_name WHERE uuid = ?",
            (&name,),
        )
        .await?;
    assert_eq!(given.as_deref(), Some(format!("v{UPDATES}").as_str()));
    let (applied_sequence, rows_applied) = progress(&mut hq).await?;
    assert_eq!(applied_sequence, last);
    let mut rows_sealed = 0u64;
    for sealed in &spooled {
        rows_sealed += u64::from(tributary_batch::read_header(sealed)?.row_count);
    }
    assert_eq!(
        rows_applied, rows_sealed,
        "each batch's rows applied exactly once"
    );
    let counts: Option<(u64, u64)> = hq
        .query_first(
            "SELECT (SELECT COUNT(*) FROM tributary_rejected_batch), \
                    (SELECT COUNT(*) FROM tributary_parked_row)",
        )
        .await?;
    assert_eq!(counts, Some((1, 0)));
    let status = run_ok(p.run_with(&hq_config, &["status"])?)?;
    assert!(
        status.contains("streaming") && !status.contains("held"),
        "{status}"
    );
    assert!(
        batch_files(&inbox, "clinic-a")?.is_empty(),
        "the inbox is drained"
    );
    Ok(())
}

fn export(p: &Pipeline, config: &Path, output: &Path, range: &[&str]) -> Result<String> {
    let mut args = vec!["export", "--output"];
    let output = output.display().to_string();
    args.push(&output);
    args.extend_from_slice(range);
    run_ok(p.run_with(config, &args)?)
}

fn import(p: &Pipeline, config: &Path, files: &[&PathBuf]) -> Result<Output> {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut args = vec!["import"];
    args.extend(names.iter().map(String::as_str));
    p.run_with(config, &args)
}

fn import_ok(p: &Pipeline, config: &Path, files: &[&PathBuf]) -> Result<String> {
    run_ok(import(p, config, files)?)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// HQ's progress for the site: (last sequence applied, rows applied).
async fn progress(hq: &mut mysql_async::Conn) -> Result<(u64, u64)> {
    let row: Option<(u64, u64)> = hq
        .query_first(
            "SELECT last_sequence, rows_applied FROM tributary_site_progress \
             WHERE site_id = 'clinic-a'",
        )
        .await?;
    row.context("no progress recorded for clinic-a")
}

/// The records of a carried file, as `docs/batch-format.md` lays them out: (sequence, offset
/// of the batch's first byte, offset after its last).
fn records(bytes: &[u8]) -> Result<Vec<(u64, usize, usize)>> {
    let number = |at: usize, width: usize| -> Result<u64> {
        let field = bytes.get(at..at + width).context("file too short")?;
        Ok(field.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
    };
    let site_len = usize::from(*bytes.get(9).context("file too short")?);
    let count = number(10 + site_len + 24, 4)?;
    let mut at = 50 + site_len;
    let mut records = Vec::new();
    for _ in 0..count {
        let sequence = number(at, 8)?;
        let length = number(at + 8, 4)? as usize;
        records.push((sequence, at + 16, at + 16 + length));
        at += 16 + length + 4;
    }
    anyhow::ensure!(
        at == bytes.len(),
        "records end at {at}, file at {}",
        bytes.len()
    );
    Ok(records)
}
