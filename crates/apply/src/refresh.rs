//! Asking HQ OpenMRS to refresh what the applier wrote behind its back (`[hq.refresh]`, off by
//! default).
//!
//! OpenMRS keeps entities in Hibernate's second-level cache and names, identifiers, attributes,
//! concept names and drugs in a Lucene search index; rows written straight into its database
//! are invisible to both until they are told. The webservices REST module offers two calls
//! for it, both `POST` with an optional JSON body `{"resource", "subResource", "uuid"}`:
//! `/ws/rest/v1/searchindexupdate` (re-index one entity, one resource type, or with an empty
//! body everything) and `/ws/rest/v1/cleardbcache` (evict one entity or one type, plus the
//! collection and query regions; an empty body evicts everything). Each takes one uuid, so
//! "batched" here means coalesced: [`queue`] deduplicates changed entities per resource, and a
//! resource with more than `batch_size` of them in one flush gets one call for its whole type.
//!
//! Guarantees:
//! - a batch's entities are noted only after its HQ transaction committed (the hook sits
//!   after the commit in `Applier::apply_opened`), never for a batch rolled back, and never
//!   for rows that parked (those are not at HQ yet);
//! - nothing here can fail, slow down or roll back applying: noting takes a mutex for a
//!   moment, the calls run in one task of their own, and their failures are logged and
//!   counted, never returned;
//! - memory is bounded by `max_queued_entities`: past it the queue is dropped for one full
//!   refresh (logged), rate-limited by `full_refresh_min_interval_s`;
//! - a call is retried with backoff at most `max_attempts` times; a call HQ OpenMRS refuses
//!   (4xx) is not retried. What fails is logged (at most once a minute, with counts) and
//!   counted in `tributary_apply_refresh_failed_total`; when OpenMRS does not answer at all,
//!   what was queued is covered by a full refresh once it answers again;
//! - logs and metrics name endpoints, resource types, statuses and counts, never a uuid
//!   (they are health data's keys) and never the credentials.
//!
//! Limit: rows released from parking are counted by the applier but not named, so a release
//! asks for a full refresh (rate-limited like the others).

mod queue;
mod resources;

pub use queue::{Endpoint, FullReason};

use crate::batch_apply::BatchOutcome;
use crate::runner::Applier;
use mysql_async::prelude::*;
use queue::{Call, Noted, RefreshQueue, Target};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tributary_batch::BatchHeader;
use tributary_model::BatchPayload;

/// Entities of one resource type refreshed one by one in a flush; beyond it, one call for the
/// whole type (a few dozen calls a flush at most, each a small query at OpenMRS).
pub const DEFAULT_REFRESH_BATCH_SIZE: usize = 50;
/// Changed entities waiting at most (about 100 bytes each: 10 MB); beyond it one full refresh.
pub const DEFAULT_REFRESH_MAX_QUEUED: usize = 100_000;
/// How often the queue is sent: short enough that HQ users see new data within seconds,
/// long enough to coalesce a busy stream's repeated changes to one entity.
pub const DEFAULT_REFRESH_FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// One call's limit: re-indexing a whole type can take a while at a large HQ.
pub const DEFAULT_REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per call (1 s, 2 s, 4 s, 8 s apart) before it is counted as failed.
pub const DEFAULT_REFRESH_MAX_ATTEMPTS: u32 = 5;
/// Full refreshes (a rebuild of the whole search index) at most this often.
pub const DEFAULT_FULL_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(900);

/// How long a command stopping waits for the last refresh calls (one attempt each).
pub const REFRESH_CLOSE_WITHIN: Duration = Duration::from_secs(10);

const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Failure warnings at most this often (the counter has every one).
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// `[hq.refresh]`, resolved.
#[derive(Clone)]
pub struct RefreshSettings {
    /// OpenMRS's base URL, e.g. `https://hq.example/openmrs` (no trailing slash).
    pub base_url: String,
    pub username: String,
    /// Never logged; `Debug` hides it.
    pub password: String,
    /// Which endpoints to call.
    pub endpoints: Vec<Endpoint>,
    pub batch_size: usize,
    pub max_queued_entities: usize,
    pub flush_interval: Duration,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub full_refresh_min_interval: Duration,
}

impl fmt::Debug for RefreshSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshSettings")
            .field("base_url", &self.base_url)
            .field("username", &self.username)
            .field("password", &"(hidden)")
            .field("endpoints", &self.endpoints)
            .field("batch_size", &self.batch_size)
            .field("max_queued_entities", &self.max_queued_entities)
            .field("flush_interval", &self.flush_interval)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("full_refresh_min_interval", &self.full_refresh_min_interval)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("hq.refresh.base_url '{0}' must start with http:// or https://")]
    BaseUrl(String),
    #[error("cannot set up the HTTP client for hq.refresh: {0}")]
    Client(String),
}

/// The handle the applier notes committed rows with. Cloning shares the queue and the task;
/// the task runs from [`Refresher::start`] until [`Refresher::close`], or until the last
/// handle is dropped.
#[derive(Clone)]
pub struct Refresher {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Arc<Mutex<RefreshQueue>>,
    flusher: Arc<Flusher>,
    task: Mutex<Option<JoinHandle<()>>>,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl fmt::Debug for Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresher")
            .field("settings", &self.inner.flusher.settings)
            .finish()
    }
}

impl Refresher {
    pub fn new(settings: RefreshSettings) -> Result<Refresher, RefreshError> {
        let base_url = settings.base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(RefreshError::BaseUrl(settings.base_url));
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RefreshError::Client(e.to_string()))?;
        let queue = Arc::new(Mutex::new(RefreshQueue::new(
            settings.batch_size,
            settings.max_queued_entities,
        )));
        let stop = CancellationToken::new();
        let flusher = Arc::new(Flusher {
            queue: queue.clone(),
            client,
            base_url,
            settings,
            stop: stop.clone(),
        });
        Ok(Refresher {
            inner: Arc::new(Inner {
                queue,
                flusher,
                task: Mutex::new(None),
                stop,
            }),
        })
    }

    /// Starts the task that sends the queue (once; later calls do nothing). Needs a Tokio
    /// runtime; the applier calls it when it connects.
    pub fn start(&self) {
        let mut task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if task.is_none() && !self.inner.stop.is_cancelled() {
            let flusher = self.inner.flusher.clone();
            *task = Some(tokio::spawn(async move { flusher.run().await }));
        }
    }

    /// Sends what is still queued (one attempt per call) and stops the task, waiting at most
    /// `within`; what is left then is logged with its count.
    pub async fn close(&self, within: Duration) {
        self.inner.stop.cancel();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut task) = task else { return };
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
            let queued = self.lock().queued();
            tracing::warn!(
                queued,
                within_s = within.as_secs(),
                "HQ OpenMRS refresh did not finish before shutdown; these entities were not refreshed"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RefreshQueue> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes the rows of a committed batch, except those that parked (`parked`, by table and
    /// identity; `None` when it is not known which did: their tables are refreshed whole).
    pub fn note_batch(&self, payload: &BatchPayload, parked: Option<&HashSet<(String, String)>>) {
        let mut queue = self.lock();
        let mut overflowed = false;
        for change in payload.transactions.iter().flat_map(|t| t.rows.iter()) {
            let noted = match parked {
                None => queue.note_whole(&change.table),
                Some(parked)
                    if !parked.is_empty()
                        && parked.contains(&(
                            change.table.clone(),
                            change.identity.as_str().to_owned(),
                        )) =>
                {
                    continue;
                }
                Some(_) => queue.note(&change.table, change.op, &change.identity),
            };
            overflowed |= noted == Noted::Overflowed;
        }
        crate::metrics::refresh_queued(queue.queued());
        drop(queue);
        if overflowed {
            tracing::warn!(
                max_queued_entities = self.inner.flusher.settings.max_queued_entities,
                "more changed entities wait for HQ OpenMRS to refresh them than hq.refresh allows; \
                 dropping them for one full refresh (search index rebuild, cache cleared)"
            );
        }
    }

    /// Notes rows released from parking: the applier counts them but does not name them, so
    /// a full refresh stands for them.
    pub fn note_released(&self, rows: u64) {
        let mut queue = self.lock();
        let newly = queue.full_pending().is_none();
        queue.require_full(FullReason::Released);
        crate::metrics::refresh_queued(queue.queued());
        drop(queue);
        if newly {
            tracing::info!(
                released = rows,
                "rows released from parking are not named to the refresher; HQ OpenMRS will be \
                 asked for a full refresh"
            );
        }
    }
}

/// The task's half: sends the queue every `flush_interval`.
struct Flusher {
    queue: Arc<Mutex<RefreshQueue>>,
    client: reqwest::Client,
    base_url: String,
    settings: RefreshSettings,
    stop: CancellationToken,
}

/// How one call ended.
enum Outcome {
    Done,
    /// HQ OpenMRS answered, but not with success (refused, or attempts ran out).
    Failed(String),
    /// HQ OpenMRS did not answer (connection, timeout, 502/503/504) within the attempts.
    Unanswered(String),
}

/// How one attempt ended.
enum Attempt {
    Done,
    /// Worth another attempt: an error status OpenMRS may not repeat.
    Retry(String),
    /// Not answering: another attempt later, and if none succeeds, OpenMRS is away.
    Away(String),
    /// Refused for good (4xx other than 408/429).
    Refused(String),
}

impl Flusher {
    async fn run(&self) {
        let mut last_full: Option<Instant> = None;
        let mut failures = FailureLog::default();
        loop {
            let stopping = tokio::select! {
                _ = self.stop.cancelled() => true,
                _ = tokio::time::sleep(self.settings.flush_interval) => false,
            };
            self.flush(&mut last_full, &mut failures, stopping).await;
            if stopping {
                failures.emit();
                let queue = self.lock();
                if !queue.is_empty() {
                    tracing::warn!(
                        queued = queue.queued(),
                        full_refresh_pending = queue.full_pending().map(FullReason::label),
                        "stopping with HQ OpenMRS refreshes still pending; they were not sent"
                    );
                }
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RefreshQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn flush(
        &self,
        last_full: &mut Option<Instant>,
        failures: &mut FailureLog,
        stopping: bool,
    ) {
        let (calls, full) = {
            let mut queue = self.lock();
            let full_allowed =
                last_full.is_none_or(|at| at.elapsed() >= self.settings.full_refresh_min_interval);
            let full = queue.full_pending();
            let calls = queue.take(&self.settings.endpoints, full_allowed);
            crate::metrics::refresh_queued(queue.queued());
            (calls, full)
        };
        if calls.is_empty() {
            return;
        }
        let is_full = calls.iter().any(|c| c.target == Target::All);
        if is_full {
            *last_full = Some(Instant::now());
            let reason = full.unwrap_or(FullReason::Overflow);
            crate::metrics::refresh_full(reason.label());
            tracing::info!(
                reason = reason.label(),
                "asking HQ OpenMRS for a full refresh"
            );
        }
        let attempts = if stopping {
            1
        } else {
            self.settings.max_attempts.max(1)
        };
        for (i, call) in calls.iter().enumerate() {
            match self.send(call, attempts).await {
                Outcome::Done => {}
                Outcome::Failed(why) => {
                    crate::metrics::refresh_failed(call.endpoint.label());
                    failures.note(call, &why);
                }
                Outcome::Unanswered(why) => {
                    crate::metrics::refresh_failed(call.endpoint.label());
                    failures.note(call, &why);
                    let rest = calls.len() - i - 1;
                    if !stopping {
                        // What this flush still held, and what queued meanwhile, waits for
                        // OpenMRS to answer again, as one full refresh.
                        self.lock().require_full(FullReason::Unanswered);
                    }
                    tracing::warn!(
                        endpoint = call.endpoint.label(),
                        error = %why,
                        calls_not_sent = rest,
                        "HQ OpenMRS does not answer refresh calls; a full refresh will be asked \
                         for once it does"
                    );
                    break;
                }
            }
        }
        failures.maybe_emit();
    }

    /// Sends one call, retrying with backoff up to `attempts` times.
    async fn send(&self, call: &Call, attempts: u32) -> Outcome {
        let mut backoff = RETRY_FIRST;
        let mut attempt = 1;
        loop {
            let result = self.attempt(call).await;
            crate::metrics::refresh_request(call.endpoint.label(), matches!(result, Attempt::Done));
            let (why, away) = match result {
                Attempt::Done => return Outcome::Done,
                Attempt::Refused(why) => return Outcome::Failed(why),
                Attempt::Retry(why) => (why, false),
                Attempt::Away(why) => (why, true),
            };
            if attempt >= attempts {
                return if away {
                    Outcome::Unanswered(why)
                } else {
                    Outcome::Failed(format!("{why}, after {attempt} attempts"))
                };
            }
            tracing::debug!(endpoint = call.endpoint.label(), scope = %call.scope(), attempt, error = %why, "refresh call failed; retrying");
            tokio::select! {
                _ = self.stop.cancelled() => {
                    return Outcome::Failed(format!("{why}, interrupted by shutdown"));
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RETRY_MAX);
            attempt += 1;
        }
    }

    async fn attempt(&self, call: &Call) -> Attempt {
        let url = format!("{}/{}", self.base_url, call.endpoint.path());
        let response = self
            .client
            .post(url)
            .basic_auth(&self.settings.username, Some(&self.settings.password))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(call.body().to_string())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Attempt::Away(format!(
                    "no answer within {} ms",
                    self.settings.timeout.as_millis()
                ));
            }
            Err(e) if e.is_connect() => {
                return Attempt::Away(format!("cannot connect to {}", self.base_url));
            }
            Err(e) => return Attempt::Away(format!("request failed: {}", e.without_url())),
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Done;
        }
        let why = format!("HTTP {}", status.as_u16());
        match status.as_u16() {
            401 | 403 => Attempt::Refused(format!(
                "{why}: check hq.refresh username and password, and that the OpenMRS account \
                 may manage the search index and caches"
            )),
            404 => Attempt::Refused(format!(
                "{why}: is the webservices.rest module (2.x) installed at {}?",
                self.base_url
            )),
            408 | 429 | 502 | 503 | 504 => Attempt::Away(why),
            400..=499 => Attempt::Refused(why),
            _ => Attempt::Retry(why),
        }
    }
}

/// Failures since the last warning, by endpoint, scope and reason (never uuids).
#[derive(Default)]
struct FailureLog {
    pending: BTreeMap<(&'static str, String, String), u64>,
    last: Option<Instant>,
}

impl FailureLog {
    fn note(&mut self, call: &Call, why: &str) {
        *self
            .pending
            .entry((call.endpoint.label(), call.scope(), why.to_owned()))
            .or_default() += 1;
    }

    fn maybe_emit(&mut self) {
        if self
            .last
            .is_none_or(|at| at.elapsed() >= FAILURE_LOG_INTERVAL)
        {
            self.emit();
        }
    }

    fn emit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for ((endpoint, scope, why), count) in std::mem::take(&mut self.pending) {
            tracing::warn!(
                endpoint,
                resource = %scope,
                error = %why,
                failed_calls = count,
                "HQ OpenMRS refresh calls failed; these entities may show stale data or be \
                 missing from search until OpenMRS is refreshed"
            );
        }
        self.last = Some(Instant::now());
    }
}

impl Applier {
    /// After a batch's HQ transaction committed: notes its written rows for the refresher.
    /// Never fails: a problem finding which rows parked makes their tables refresh whole.
    pub(crate) async fn refresh_after_commit(
        &mut self,
        header: &BatchHeader,
        payload: &BatchPayload,
        outcome: &BatchOutcome,
    ) {
        let Some(refresher) = self.settings.refresh.clone() else {
            return;
        };
        let parked = if outcome.parked == 0 {
            Some(HashSet::new())
        } else {
            match parked_in_batch(&mut self.conn, header).await {
                Ok(parked) => Some(parked),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read which rows parked; refreshing their tables whole");
                    None
                }
            }
        };
        refresher.note_batch(payload, parked.as_ref());
        if outcome.released > 0 {
            refresher.note_released(outcome.released);
        }
    }

    /// After parked rows were released outside a batch (the periodic retry).
    pub(crate) fn refresh_after_release(&self, rows: u64) {
        if let Some(refresher) = &self.settings.refresh
            && rows > 0
        {
            refresher.note_released(rows);
        }
    }
}

/// The (table, identity) of the rows of this batch that are parked now.
async fn parked_in_batch(
    conn: &mut mysql_async::Conn,
    header: &BatchHeader,
) -> mysql_async::Result<HashSet<(String, String)>> {
    let rows: Vec<(String, String)> = conn
        .exec(
            "SELECT table_name, identity FROM tributary_parked_row
             WHERE site_id = ? AND epoch = ? AND sequence = ?",
            (&header.site_id, header.epoch, header.sequence),
        )
        .await?;
    Ok(rows.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use tributary_model::{Identity, Op};

    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

    /// A stand-in answering `search_index` on the search index path and `db_cache` on the
    /// cache path, recording (path, authorization) of every request.
    async fn stand_in(search_index: StatusCode, db_cache: StatusCode) -> (String, Seen) {
        let seen: Seen = Arc::default();
        let handler = move |State(seen): State<Seen>, uri: Uri, headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            seen.lock().unwrap().push((uri.path().to_owned(), auth));
            if uri.path().ends_with("searchindexupdate") {
                search_index
            } else {
                db_cache
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/openmrs", listener.local_addr().unwrap());
        let app = Router::new().fallback(handler).with_state(seen.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn settings(base_url: &str, max_attempts: u32) -> RefreshSettings {
        RefreshSettings {
            base_url: base_url.to_owned(),
            username: "tributary".into(),
            password: "pw".into(),
            endpoints: Endpoint::ALL.to_vec(),
            batch_size: 10,
            max_queued_entities: 100,
            flush_interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
            max_attempts,
            full_refresh_min_interval: Duration::from_secs(3600),
        }
    }

    fn queue_one_name(refresher: &Refresher) {
        let name = Identity::from_uuid("0b3f2d6e-1c4a-4f7e-9a63-5d2e8c1b7f40");
        refresher.lock().note("person_name", Op::Insert, &name);
    }

    async fn flush(refresher: &Refresher) {
        refresher
            .inner
            .flusher
            .flush(&mut None, &mut FailureLog::default(), false)
            .await;
    }

    #[tokio::test]
    async fn a_refused_call_is_not_retried_and_a_failing_one_is_retried_a_bounded_number_of_times()
    {
        let (url, seen) =
            stand_in(StatusCode::UNAUTHORIZED, StatusCode::INTERNAL_SERVER_ERROR).await;
        let refresher = Refresher::new(settings(&url, 2)).unwrap();
        queue_one_name(&refresher);
        flush(&refresher).await;
        let seen = seen.lock().unwrap().clone();
        let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/openmrs/ws/rest/v1/searchindexupdate",
                "/openmrs/ws/rest/v1/cleardbcache",
                "/openmrs/ws/rest/v1/cleardbcache",
            ],
            "401 once; 500 retried up to max_attempts"
        );
        assert!(
            seen.iter()
                .all(|(_, auth)| auth.as_deref() == Some("Basic dHJpYnV0YXJ5OnB3"))
        );
        assert!(refresher.lock().is_empty(), "given up, not kept forever");
    }

    #[tokio::test]
    async fn an_openmrs_that_does_not_answer_leaves_one_full_refresh_pending() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/openmrs", listener.local_addr().unwrap());
        drop(listener);
        let refresher = Refresher::new(settings(&url, 1)).unwrap();
        queue_one_name(&refresher);
        flush(&refresher).await;
        assert_eq!(
            refresher.lock().full_pending(),
            Some(FullReason::Unanswered)
        );
        let (url, seen) = stand_in(StatusCode::NO_CONTENT, StatusCode::NO_CONTENT).await;
        let refresher = Refresher::new(settings(&url, 1)).unwrap();
        refresher.lock().require_full(FullReason::Unanswered);
        flush(&refresher).await;
        assert_eq!(
            seen.lock().unwrap().len(),
            2,
            "one full refresh per endpoint"
        );
        assert!(refresher.lock().is_empty());
    }

    #[tokio::test]
    async fn close_sends_what_is_queued_and_stops_the_task() {
        let (url, seen) = stand_in(StatusCode::NO_CONTENT, StatusCode::NO_CONTENT).await;
        let refresher = Refresher::new(settings(&url, 3)).unwrap();
        refresher.start();
        queue_one_name(&refresher);
        refresher.close(Duration::from_secs(10)).await;
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert!(refresher.inner.task.lock().unwrap().is_none());
        refresher.start();
        assert!(
            refresher.inner.task.lock().unwrap().is_none(),
            "a closed refresher does not start again"
        );
    }

    #[test]
    fn a_base_url_that_is_not_http_is_refused_and_the_password_is_never_shown() {
        assert!(matches!(
            Refresher::new(settings("ftp://hq/openmrs", 1)),
            Err(RefreshError::BaseUrl(_))
        ));
        let refresher = Refresher::new(settings("http://hq/openmrs/", 1)).unwrap();
        assert_eq!(refresher.inner.flusher.base_url, "http://hq/openmrs");
        assert!(!format!("{refresher:?}").contains("\"pw\""));
    }
}
