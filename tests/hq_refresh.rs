//! Asking HQ OpenMRS to refresh after applying (`[hq.refresh]`), against a small HTTP stand-in
//! for OpenMRS's REST module that records every call, its credentials, and whether the entity
//! it names was already committed at HQ when the call arrived.
//!
//! Guards: nothing is called without the section (off by default); rows applied at HQ are
//! named to `searchindexupdate` (indexed resources only) and `cleardbcache` with the right
//! resource names, only after their batch committed, with the configured credentials; an
//! OpenMRS answering 500 neither stops nor repeats applying (rows_applied exact, HQ equal to
//! the site) and its calls are retried until it answers; no uuid or password reaches the logs.

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use mysql_async::prelude::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tributary::dataset::{self, PatientShape, patient_rows};
use tributary_suite::pipeline::{CATCH_UP, CLINIC, Pipeline, PipelineOptions, run_ok};
use tributary_suite::{scrape, wait_metrics_address, wait_until};

const PASSWORD: &str = "openmrs-Secret-1";
/// `Basic base64("tributary:openmrs-Secret-1")`.
const AUTHORIZATION: &str = "Basic dHJpYnV0YXJ5Om9wZW5tcnMtU2VjcmV0LTE=";

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    authorization: Option<String>,
    body: serde_json::Value,
    status: u16,
    /// For a call naming one entity of a table the stand-in knows: whether HQ held the row
    /// when the call arrived.
    committed: Option<bool>,
}

impl Recorded {
    fn endpoint(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }

    fn resource(&self) -> String {
        let field = |k: &str| self.body.get(k).and_then(|v| v.as_str());
        match (field("resource"), field("subResource")) {
            (Some(r), Some(s)) => format!("{r}/{s}"),
            (Some(r), None) => r.to_owned(),
            _ => "all".to_owned(),
        }
    }

    fn uuid(&self) -> Option<&str> {
        self.body.get("uuid").and_then(|v| v.as_str())
    }

    /// Names `uuid` of `resource`, or `resource` as a whole.
    fn covers(&self, endpoint: &str, resource: &str, uuid: &str) -> bool {
        self.endpoint() == endpoint
            && self.status == 204
            && (self.resource() == "all"
                || (self.resource() == resource && self.uuid().is_none_or(|u| u == uuid)))
    }
}

struct Shared {
    calls: Mutex<Vec<Recorded>>,
    failing: AtomicBool,
    hq: mysql_async::Pool,
}

/// OpenMRS's REST module as far as Tributary uses it: `POST .../searchindexupdate` and
/// `POST .../cleardbcache` answer 204 (or 500 while `failing`).
struct StandIn {
    shared: Arc<Shared>,
    address: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl StandIn {
    async fn start(hq: mysql_async::Opts) -> Result<StandIn> {
        let shared = Arc::new(Shared {
            calls: Mutex::new(Vec::new()),
            failing: AtomicBool::new(false),
            hq: mysql_async::Pool::new(hq),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let app = Router::new().fallback(record).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(StandIn {
            shared,
            address,
            server,
        })
    }

    fn calls(&self) -> Vec<Recorded> {
        self.shared.calls.lock().unwrap().clone()
    }

    fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let body: serde_json::Value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
    };
    let mut call = Recorded {
        path: uri.path().to_owned(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        status: 0,
        committed: None,
    };
    let table = match call.resource().as_str() {
        "person" | "patient" => Some("person"),
        "person/name" => Some("person_name"),
        "patient/identifier" => Some("patient_identifier"),
        "visit" => Some("visit"),
        "encounter" => Some("encounter"),
        "obs" => Some("obs"),
        _ => None,
    };
    if let (Some(table), Some(uuid)) = (table, call.uuid()) {
        let found: Option<u64> = match shared.hq.get_conn().await {
            Ok(mut conn) => conn
                .exec_first(
                    format!("SELECT COUNT(*) FROM {table} WHERE uuid = ?"),
                    (uuid,),
                )
                .await
                .unwrap_or(None),
            Err(_) => None,
        };
        call.committed = found.map(|n| n > 0);
    }
    let status = if shared.failing.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    call.status = status.as_u16();
    shared.calls.lock().unwrap().push(call);
    status
}

/// Whether every row of patient `n` was named (or its type, or everything) successfully.
fn patient_named(calls: &[Recorded], n: u64, shape: PatientShape) -> bool {
    let rows = patient_rows("clinic-a", n, shape);
    let named = |endpoint: &str, resource: &str, uuid: &str| {
        calls.iter().any(|c| c.covers(endpoint, resource, uuid))
    };
    named("searchindexupdate", "person/name", &rows.name)
        && named("searchindexupdate", "patient/identifier", &rows.identifier)
        && named("cleardbcache", "person", &rows.person)
        && named("cleardbcache", "patient", &rows.person)
        && named("cleardbcache", "person/name", &rows.name)
        && named("cleardbcache", "patient/identifier", &rows.identifier)
        && rows
            .visits
            .iter()
            .all(|u| named("cleardbcache", "visit", u))
        && rows
            .encounters
            .iter()
            .all(|u| named("cleardbcache", "encounter", u))
        && rows.obs.iter().all(|u| named("cleardbcache", "obs", u))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_openmrs_is_asked_to_refresh_what_was_committed_and_its_failures_leave_applying_alone()
-> Result<()> {
    let p = Pipeline::start("hq-refresh", PipelineOptions::default()).await?;
    let stand_in = StandIn::start(p.hq.opts()).await?;
    let shape = PatientShape::one_encounter(3);
    let mut site = p.site.conn().await?;
    let mut capture = p.spawn("capture", "capture")?;
    p.wait_capture_started("state", &capture).await?;

    // 1. Without [hq.refresh] (the default) the applier calls nothing.
    let mut changes = dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 1, shape).await?;
    p.wait_capture_published("state", &capture).await?;
    run_ok(p.run(&["apply", "--once"])?)?;
    let person0 = patient_rows("clinic-a", 0, shape).person;
    let at_hq: u64 =
        p.hq.scalar(&format!(
            "SELECT COUNT(*) FROM person WHERE uuid = '{person0}'"
        ))
        .await?;
    assert_eq!(at_hq, 1, "patient 0 was applied");
    assert!(
        stand_in.calls().is_empty(),
        "nothing is called without [hq.refresh]: {:?}",
        stand_in.calls()
    );

    // 2. With the section: what each batch wrote is named once it committed.
    std::fs::write(p.work.join("openmrs.password"), format!("{PASSWORD}\n"))?;
    let text = std::fs::read_to_string(&p.config)?;
    let text = text.replace(
        "\n[hq.database]\n",
        &format!(
            "\n[hq.refresh]\nbase_url = \"http://{}/openmrs/\"\nusername = \"tributary\"\n\
             password_file = \"openmrs.password\"\nflush_interval_ms = 100\nmax_attempts = 10\n\
             \n[hq.database]\n",
            stand_in.address
        ),
    );
    std::fs::write(
        &p.config,
        format!("{text}\n[metrics]\nlisten = \"127.0.0.1:0\"\n"),
    )?;
    let mut apply = p.spawn("apply", "apply")?;
    let metrics = wait_metrics_address(&apply).await?;
    changes += dataset::load_patients(&mut site, CLINIC, "clinic-a", 1, 2, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let s = &stand_in;
    wait_until(
        "OpenMRS to be asked about patients 1 and 2",
        CATCH_UP,
        || {
            let calls = s.calls();
            async move { Ok(patient_named(&calls, 1, shape) && patient_named(&calls, 2, shape)) }
        },
    )
    .await
    .map_err(|e| e.context(apply.logs()))?;
    let calls = stand_in.calls();
    for call in &calls {
        assert_eq!(
            call.authorization.as_deref(),
            Some(AUTHORIZATION),
            "{call:?}"
        );
        assert!(
            call.path == "/openmrs/ws/rest/v1/searchindexupdate"
                || call.path == "/openmrs/ws/rest/v1/cleardbcache",
            "{call:?}"
        );
        assert_ne!(
            call.committed,
            Some(false),
            "an entity is named only after its batch committed: {call:?}"
        );
        if call.endpoint() == "searchindexupdate" {
            assert!(
                ["person/name", "patient/identifier", "all"].contains(&call.resource().as_str()),
                "only indexed resources go to the search index: {call:?}"
            );
        }
    }
    assert!(
        calls.iter().any(|c| c.committed == Some(true)),
        "the stand-in checked entities against HQ: {calls:?}"
    );
    let before: Vec<&str> = calls.iter().filter_map(Recorded::uuid).collect();
    assert!(
        !before.contains(&person0.as_str()),
        "patient 0 was applied before [hq.refresh] existed"
    );
    let search: Vec<String> = calls
        .iter()
        .filter(|c| c.endpoint() == "searchindexupdate")
        .map(|c| c.body.to_string())
        .collect();
    let distinct: BTreeSet<&String> = search.iter().collect();
    assert_eq!(distinct.len(), search.len(), "deduplicated: {search:?}");

    // 3. OpenMRS answering 500: applying goes on, once; the calls are retried until it answers.
    let seen = stand_in.calls().len();
    stand_in.set_failing(true);
    changes += dataset::load_patients(&mut site, CLINIC, "clinic-a", 3, 1, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    wait_until("the refresh calls to fail twice", CATCH_UP, || async move {
        Ok(s.calls()[seen..].iter().filter(|c| c.status == 500).count() >= 2)
    })
    .await
    .map_err(|e| e.context(apply.logs()))?;
    let rows_applied: u64 =
        p.hq.scalar("SELECT rows_applied FROM tributary_site_progress")
            .await?;
    assert_eq!(
        rows_applied, changes,
        "every row applied once while OpenMRS failed"
    );
    stand_in.set_failing(false);
    wait_until("OpenMRS to be asked about patient 3", CATCH_UP, || {
        let calls = s.calls();
        async move { Ok(patient_named(&calls, 3, shape)) }
    })
    .await
    .map_err(|e| e.context(apply.logs()))?;
    let calls = stand_in.calls();
    let failed: Vec<&Recorded> = calls[seen..].iter().filter(|c| c.status == 500).collect();
    assert!(
        failed.iter().any(|f| calls[seen..]
            .iter()
            .any(|c| c.status == 204 && c.path == f.path && c.body == f.body)),
        "a call refused with 500 was sent again and succeeded"
    );
    let scraped = scrape(metrics)?;
    let errors = scraped.require(
        "tributary_apply_refresh_requests_total",
        &[("endpoint", "search_index"), ("result", "error")],
    )? + scraped.require(
        "tributary_apply_refresh_requests_total",
        &[("endpoint", "db_cache"), ("result", "error")],
    )?;
    assert_eq!(errors, failed.len() as f64, "every failed request counted");
    for endpoint in ["search_index", "db_cache"] {
        assert_eq!(
            scraped.require(
                "tributary_apply_refresh_failed_total",
                &[("endpoint", endpoint)]
            )?,
            0.0,
            "nothing given up: {endpoint}"
        );
    }
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let rows_applied: u64 =
        p.hq.scalar("SELECT rows_applied FROM tributary_site_progress")
            .await?;
    assert_eq!(
        rows_applied, changes,
        "every row change applied exactly once"
    );
    p.verify()?;

    // Health data's keys and the password stay out of the logs.
    apply.signal("TERM")?;
    apply.wait_exit(Duration::from_secs(30)).await?;
    let logs = apply.logs();
    assert!(!logs.contains(PASSWORD), "the password is never logged");
    for n in 0..4 {
        let rows = patient_rows("clinic-a", n, shape);
        for uuid in [&rows.person, &rows.name, &rows.identifier]
            .into_iter()
            .chain(&rows.obs)
        {
            assert!(!logs.contains(uuid.as_str()), "uuid {uuid} logged:\n{logs}");
        }
    }
    drop(capture);
    let _ = p.hq.conn().await.context("HQ still answers")?;
    Ok(())
}
