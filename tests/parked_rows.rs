//! Operating parked rows (`tributary parked list|show|retry|drop`) and reporting old ones:
//! a parked row is listed with a reason a person understands (table, shortened identity,
//! site), shown with column names but no values unless asked, retried on demand (still
//! waiting, then released once its parent is at HQ), and dropped only with a reason that HQ
//! records; `status`, and the applier's log once, report rows older than
//! `[hq] parked_report_age_s` (invariant 9: nothing is dropped or stuck silently).

use anyhow::{Result, bail};
use mysql_async::prelude::*;
use std::process::Output;
use std::time::Duration;
use tributary_suite::pipeline::{CATCH_UP, Pipeline, PipelineOptions, run_ok};
use tributary_suite::{scrape, wait_metrics_address, wait_until};

const PEOPLE: [&str; 2] = [
    "9a7e0000-0000-4000-8000-000000000001",
    "9a7e0000-0000-4000-8000-000000000002",
];
const NAMES: [&str; 2] = [
    "9a7e0000-0000-4000-8000-0000000000a1",
    "9a7e0000-0000-4000-8000-0000000000a2",
];
/// A value of a parked row: it must not appear unless `show --values` asks for it.
const GIVEN_NAME: &str = "Wanjiru";

fn failed(out: &Output) -> Result<String> {
    if out.status.success() {
        bail!(
            "expected a failure, got: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_rows_are_listed_shown_retried_and_dropped_with_reasons() -> Result<()> {
    let p = Pipeline::start("parked-cli", PipelineOptions::default()).await?;
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(
        &p.config,
        config.replace("[hq]\n", "[hq]\nparked_report_age_s = 0\n"),
    )?;
    let mut site = p.site.conn().await?;
    // Two people exist at the site before capture starts: HQ does not have them.
    for person in PEOPLE {
        site.exec_drop(
            "INSERT INTO person (gender, creator, date_created, voided, uuid)
             VALUES ('F', 1, '2024-01-01 00:00:00', 0, ?)",
            (person,),
        )
        .await?;
    }
    let mut capture = p.spawn("capture", "capture")?;
    let mut apply = p.spawn_with_args(
        "apply",
        &p.config,
        "apply",
        &["--metrics-listen", "127.0.0.1:0"],
    )?;
    p.wait_capture_started("state", &capture).await?;
    let metrics = wait_metrics_address(&apply).await?;
    for (name, person) in NAMES.iter().zip(PEOPLE) {
        site.exec_drop(
            "INSERT INTO person_name (preferred, person_id, given_name, family_name, creator, date_created, voided, uuid)
             SELECT 1, person_id, ?, 'Otieno', 1, '2024-01-01 00:00:00', 0, ? FROM person WHERE uuid = ?",
            (GIVEN_NAME, name, person),
        )
        .await?;
    }
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let mut hq = p.hq.conn().await?;
    let ids: Vec<u64> = hq
        .query("SELECT parked_id FROM tributary_parked_row WHERE table_name = 'person_name' ORDER BY parked_id")
        .await?;
    let [retried, dropped] = ids[..] else {
        bail!("expected two parked names, got {ids:?}:\n{}", p.status()?);
    };

    // list: the row and a reason naming table, shortened identity and site.
    let list = run_ok(p.run(&["parked", "list", "--table", "person_name"])?)?;
    let reason = format!(
        "waiting for person {}..., not yet received from site {}",
        &PEOPLE[0][..8],
        p.site_id
    );
    assert!(list.contains(&reason), "{list}");
    assert!(list.contains(&retried.to_string()), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(p.run(&["parked", "list", "--json"])?)?)?;
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");
    assert!(!json.to_string().contains(GIVEN_NAME), "no values: {json}");
    let none = run_ok(p.run(&["parked", "list", "--older-than", "1d"])?)?;
    assert!(none.contains("no parked rows match"), "{none}");

    // show: names, never values unless asked.
    let id = retried.to_string();
    let show = run_ok(p.run(&["parked", "show", &id])?)?;
    assert!(
        show.contains("given_name") && show.contains("person_id"),
        "{show}"
    );
    assert!(
        !show.contains(GIVEN_NAME),
        "values are health data:\n{show}"
    );
    assert!(
        show.contains(&format!(
            "person[{}]: not yet received from site {}",
            PEOPLE[0], p.site_id
        )),
        "{show}"
    );
    let with_values = run_ok(p.run(&["parked", "show", &id, "--values"])?)?;
    assert!(with_values.contains(GIVEN_NAME), "{with_values}");

    // status reports rows older than the report age (0 s here); the applier warned once.
    let status = p.status()?;
    assert!(
        status.contains("parked rows older than 0 s (parked_report_age_s = 0): 2 of 2"),
        "{status}"
    );
    const WARNING: &str = "longer than parked_report_age_s";
    let logs = apply.stderr_path().to_owned();
    let warned = wait_until(
        "the applier to warn about old parked rows",
        CATCH_UP,
        || {
            let logs = logs.clone();
            async move { Ok(std::fs::read_to_string(logs)?.contains(WARNING)) }
        },
    )
    .await;
    warned.map_err(|e| e.context(apply.logs()))?;
    let site_label = [("site", p.site_id.as_str())];
    let gauged = wait_until(
        "the parked-row gauge to count both rows",
        CATCH_UP,
        || async {
            Ok(scrape(metrics)?.value("tributary_apply_parked_rows", &site_label) == Some(2.0))
        },
    )
    .await;
    gauged.map_err(|e| e.context(apply.logs()))?;
    let age = scrape(metrics)?.require("tributary_apply_parked_oldest_age_seconds", &site_label)?;
    assert!(age >= 0.0, "{age}");

    // retry: still waiting; then, with the applier stopped and the parent created at HQ,
    // released by the retry itself.
    let retry = run_ok(p.run(&["parked", "retry", &id])?)?;
    assert!(
        retry.contains("still parked") && retry.contains(&reason),
        "{retry}"
    );
    // Periodic retries (every 300 ms) have read the ages many times since: still one warning.
    let warnings = apply.logs().matches(WARNING).count();
    assert_eq!(warnings, 1, "one warning per site:\n{}", apply.logs());
    apply.signal("TERM")?;
    apply.wait_exit(Duration::from_secs(30)).await?;
    hq.exec_drop(
        "INSERT INTO person (gender, creator, date_created, voided, uuid)
         VALUES ('F', 1, '2024-01-01 00:00:00', 0, ?)",
        (PEOPLE[0],),
    )
    .await?;
    let list = run_ok(p.run(&["parked", "list"])?)?;
    assert!(list.contains("present at HQ now"), "{list}");
    let retry = run_ok(p.run(&["parked", "retry", &id])?)?;
    assert!(retry.contains("was released"), "{retry}");
    let written: Option<u64> = hq
        .exec_first(
            "SELECT COUNT(*) FROM person_name WHERE uuid = ?",
            (NAMES[0],),
        )
        .await?;
    assert_eq!(written, Some(1));
    let again = failed(&p.run(&["parked", "retry", &id])?)?;
    assert!(again.contains(&format!("no parked row #{id}")), "{again}");

    // drop: gone from the list, recorded with its reason.
    let id = dropped.to_string();
    let refused = failed(&p.run(&["parked", "drop", &id, "--reason", " "])?)?;
    assert!(refused.contains("--reason"), "{refused}");
    let out = run_ok(p.run(&[
        "parked",
        "drop",
        &id,
        "--reason",
        "test person removed at the site",
    ])?)?;
    assert!(out.contains("recorded in tributary_dropped_row"), "{out}");
    let list = run_ok(p.run(&["parked", "list"])?)?;
    assert!(list.contains("no parked rows match"), "{list}");
    let recorded: Option<(String, String)> = hq
        .exec_first(
            "SELECT table_name, drop_reason FROM tributary_dropped_row WHERE parked_id = ?",
            (dropped,),
        )
        .await?;
    assert_eq!(
        recorded,
        Some((
            "person_name".to_owned(),
            "test person removed at the site".to_owned()
        ))
    );
    let shown = failed(&p.run(&["parked", "show", &id])?)?;
    assert!(
        shown.contains("was dropped at") && shown.contains("test person removed"),
        "{shown}"
    );
    let unknown = failed(&p.run(&["parked", "show", "999999"])?)?;
    assert!(unknown.contains("no parked row #999999"), "{unknown}");
    let status = p.status()?;
    assert!(!status.contains("parked rows older than"), "{status}");
    Ok(())
}
