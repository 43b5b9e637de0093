//! The applier loop over the directory inbox: for each site, batches in (epoch, sequence)
//! order; duplicates acknowledged, gaps held and reported, bad batches rejected, good ones
//! applied and then acknowledged (deleted from the inbox only after HQ committed them).

use crate::batch_apply::{BatchOutcome, BatchWriting, Fit, apply_batch};
use crate::bookkeeping::{self, CREATE_TABLES};
use crate::error::ApplyError;
use crate::new_rows::{IdNumbering, STATEMENT_CACHE};
use crate::parked_age::AgeWatch;
use crate::rejection::Rejection;
use crate::resolver::Resolver;
use crate::settings::ApplySettings;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tributary_batch::RejectReason;
use tributary_batch::{BatchHeader, Keyring};
use tributary_model::BatchPayload;
use tributary_schema::{Catalog, SchemaMap};
use tributary_transport::{DirectoryInbox, InboxEntry};

const RETRY_MAX: Duration = Duration::from_secs(30);
/// Parked rows one periodic retry looks at (oldest first), bounding the transaction.
const PARKED_RETRY_LIMIT: u32 = 5_000;

/// What one pass over the inbox did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub batches_applied: u64,
    pub rows: BatchOutcome,
    pub duplicates: u64,
    pub rejected: u64,
    /// Sites held by a gap, with the sequence they wait for.
    pub gaps: BTreeMap<String, u64>,
}

pub struct Applier {
    pub(crate) settings: ApplySettings,
    pub(crate) conn: Conn,
    pub(crate) schema: SchemaMap,
    pub(crate) resolver: Resolver,
    /// The directory inbox; with a stream transport (Kafka), where rejected batches are kept.
    pub(crate) inbox: DirectoryInbox,
    reported_gaps: BTreeMap<String, u64>,
    last_parked_retry: Instant,
    /// Where the next periodic retry page of parked rows starts.
    parked_retry_cursor: u64,
    /// Parked rows' gauges and the report of rows parked too long.
    parked_ages: AgeWatch,
    /// How HQ numbers a multi-row INSERT (`None`: new rows are inserted one by one).
    id_numbering: Option<IdNumbering>,
    /// The site keys, shared with the threads that open batches ahead of applying them.
    keyring: Arc<Keyring>,
}

/// A batch being opened (authenticated, decrypted, decoded) on a blocking thread while the one
/// before it is applied: the applier's decoding then runs beside HQ's work instead of between.
struct OpeningAhead {
    epoch: u64,
    sequence: u64,
    opened: tokio::task::JoinHandle<Opened>,
}

type Opened = Result<(BatchHeader, BatchPayload), Rejection>;

impl Applier {
    /// Connects to HQ, creates Tributary's bookkeeping tables if needed, and reads HQ's schema.
    pub async fn connect(settings: ApplySettings) -> Result<Applier, ApplyError> {
        let opts = OptsBuilder::from_opts(settings.hq.clone())
            .init(vec!["SET time_zone = '+00:00'"])
            .stmt_cache_size(STATEMENT_CACHE);
        let mut conn = Conn::new(opts).await?;
        let id_numbering = IdNumbering::of(&mut conn).await?;
        if id_numbering.is_none() {
            tracing::warn!(
                "HQ's innodb_autoinc_lock_mode is 2 (interleaved): new rows are inserted one \
                 statement each, which is slower; mode 1 lets them be inserted in groups"
            );
        }
        for ddl in CREATE_TABLES {
            conn.query_drop(*ddl).await?;
        }
        let catalog = Catalog::introspect(&mut conn, &settings.database).await?;
        let schema = SchemaMap::build(&catalog, &settings.policy)?;
        crate::row_state_upgrade::prepare(&mut conn, &schema).await?;
        settings
            .conflicts
            .check_tables(&schema)
            .map_err(ApplyError::Config)?;
        let inbox = DirectoryInbox::open(&settings.inbox_dir)?;
        let mut parked_ages = AgeWatch::new(settings.parked_report_age);
        parked_ages.read(&mut conn).await?;
        if let Some(refresher) = &settings.refresh {
            refresher.start();
        }
        let settings_keyring = settings.keyring.clone();
        Ok(Applier {
            resolver: Resolver::new(settings.resolver_cache_entries),
            settings,
            conn,
            schema,
            inbox,
            reported_gaps: BTreeMap::new(),
            last_parked_retry: Instant::now(),
            parked_retry_cursor: 0,
            parked_ages,
            id_numbering,
            keyring: Arc::new(settings_keyring),
        })
    }

    /// One pass: every site, as far as its batches go in order.
    pub async fn apply_available(&mut self) -> Result<PassReport, ApplyError> {
        let mut report = PassReport::default();
        for site in self.inbox.sites()? {
            self.apply_site(&site, &mut report).await?;
        }
        if self.last_parked_retry.elapsed() >= self.settings.retry_parked_interval {
            report.rows.released += self.retry_parked().await?;
        }
        Ok(report)
    }

    /// Re-reads HQ's schema and retries every parked row (oldest first, bounded per call):
    /// what an operator fixed at HQ, or parents created at HQ directly, release rows without
    /// waiting for another batch. Returns how many rows were released.
    pub async fn retry_parked(&mut self) -> Result<u64, ApplyError> {
        self.last_parked_retry = Instant::now();
        let catalog = Catalog::introspect(&mut self.conn, &self.settings.database).await?;
        self.schema = SchemaMap::build(&catalog, &self.settings.policy)?;
        let (released, next) = crate::batch_apply::retry_parked(
            &mut self.conn,
            &self.schema,
            &self.settings.conflicts,
            &mut self.resolver,
            self.parked_retry_cursor,
            PARKED_RETRY_LIMIT,
            self.settings.record_applied,
        )
        .await?;
        self.parked_retry_cursor = next;
        self.parked_ages.read(&mut self.conn).await?;
        let total = released.values().sum();
        if total > 0 {
            tracing::info!(released = total, "released parked rows on retry");
            self.refresh_after_release(total);
        }
        Ok(total)
    }

    async fn apply_site(&mut self, site: &str, report: &mut PassReport) -> Result<(), ApplyError> {
        let entries = self.inbox.pending(site)?;
        let mut ahead: Option<OpeningAhead> = None;
        // Batches of epochs below this one are passed over: a later epoch superseded them.
        let mut superseded_below = 0;
        for (index, entry) in entries.iter().enumerate() {
            if entry.epoch < superseded_below {
                continue;
            }
            let progress = bookkeeping::read_progress(&mut self.conn, site).await?;
            match crate::batch_apply::fit(progress, entry.epoch, entry.sequence) {
                Fit::AlreadyApplied => {
                    self.inbox.acknowledge(entry)?;
                    report.duplicates += 1;
                    continue;
                }
                Fit::Gap { expected } => {
                    if let Some(later) = later_epoch_start(progress, &entries[index..]) {
                        tracing::info!(
                            site,
                            held_epoch = entry.epoch,
                            waiting_for = expected,
                            later_epoch = later,
                            "the site started a later epoch (a re-seed): what is left of the \
                             held epoch is superseded"
                        );
                        superseded_below = later;
                        continue;
                    }
                    report.gaps.insert(site.to_owned(), expected);
                    self.note_gap(site, progress, expected, entry.sequence)
                        .await?;
                    return Ok(());
                }
                Fit::Stale { current_epoch } => {
                    let reason = stale_reason(entry.epoch, current_epoch);
                    self.reject(entry, &reason).await?;
                    report.rejected += 1;
                    continue;
                }
                Fit::Next => {}
            }
            let prefetched = match ahead.take() {
                Some(a) if (a.epoch, a.sequence) == (entry.epoch, entry.sequence) => {
                    a.opened.await.ok()
                }
                _ => None,
            };
            let opened = match prefetched {
                Some(opened) => opened,
                // A transient read error (a share that dropped for a moment) leaves the batch
                // for the next pass and holds only this site; a file that can never be read
                // (too large) is rejected.
                None => match self.inbox.read(entry) {
                    Ok(bytes) => self.open(&entry.site_id, entry.epoch, entry.sequence, &bytes),
                    Err(e) if e.is_transient() => {
                        tracing::warn!(site, sequence = entry.sequence, error = %e, "cannot read batch now; trying again on the next pass");
                        return Ok(());
                    }
                    Err(e) => {
                        let rejection =
                            Rejection::new(RejectReason::PayloadTooLarge, e.to_string());
                        self.reject(entry, &rejection).await?;
                        report.rejected += 1;
                        return Ok(());
                    }
                },
            };
            let (header, payload) = match opened {
                Ok(opened) => opened,
                Err(reason) => {
                    self.reject(entry, &reason).await?;
                    report.rejected += 1;
                    return Ok(());
                }
            };
            ahead = entries
                .get(index + 1)
                .and_then(|next| self.open_ahead(next));
            let (fit, outcome) = self.apply_opened(&header, &payload).await?;
            if matches!(fit, Fit::Gap { .. } | Fit::Stale { .. }) {
                // Another applier moved this site meanwhile: keep the batch, look again later.
                return Ok(());
            }
            if fit == Fit::Next {
                report.batches_applied += 1;
                report.rows.applied += outcome.applied;
                report.rows.parked += outcome.parked;
                report.rows.released += outcome.released;
            }
            self.inbox.acknowledge(entry)?;
            free_elsewhere(payload);
        }
        Ok(())
    }

    /// Starts opening `entry` on a blocking thread (None when it cannot be read now: it is
    /// then read, and its error handled, when its turn comes).
    fn open_ahead(&self, entry: &InboxEntry) -> Option<OpeningAhead> {
        let bytes = self.inbox.read(entry).ok()?;
        let keyring = Arc::clone(&self.keyring);
        let (site_id, epoch, sequence) = (entry.site_id.clone(), entry.epoch, entry.sequence);
        Some(OpeningAhead {
            epoch,
            sequence,
            opened: tokio::task::spawn_blocking(move || {
                open_batch(&keyring, &site_id, epoch, sequence, &bytes)
            }),
        })
    }

    /// A gap holds the site: logged and recorded once per missing sequence (visible in
    /// `tributary status` as `waiting_for_sequence`).
    pub(crate) async fn note_gap(
        &mut self,
        site: &str,
        progress: Option<bookkeeping::Progress>,
        expected: u64,
        next_available: u64,
    ) -> Result<(), ApplyError> {
        if self.reported_gaps.get(site) != Some(&expected) {
            tracing::warn!(
                site,
                waiting_for = expected,
                next_available,
                "gap in the site's batch sequence; holding later batches until it is filled"
            );
            bookkeeping::record_gap(&mut self.conn, site, progress, expected).await?;
            self.reported_gaps.insert(site.to_owned(), expected);
        }
        Ok(())
    }

    /// Applies an opened, authenticated batch in one HQ transaction (whatever arrived it:
    /// the inbox or Kafka), and notes it when it was the site's next.
    pub(crate) async fn apply_opened(
        &mut self,
        header: &BatchHeader,
        payload: &BatchPayload,
    ) -> Result<(Fit, BatchOutcome), ApplyError> {
        let (fit, outcome) = apply_batch(
            &mut self.conn,
            &self.schema,
            &self.settings.conflicts,
            BatchWriting {
                numbering: self.id_numbering,
                record_applied: self.settings.record_applied,
            },
            &mut self.resolver,
            header,
            payload,
        )
        .await?;
        if fit == Fit::Next {
            // Committed: HQ OpenMRS may now be asked to refresh what it wrote.
            self.refresh_after_commit(header, payload, &outcome).await;
            self.note_applied(header, payload, &outcome);
            if outcome.parked > 0 || outcome.released > 0 || outcome.conflicts > 0 {
                self.parked_ages.after_change(&mut self.conn).await?;
            }
        }
        Ok((fit, outcome))
    }

    fn note_applied(
        &mut self,
        header: &BatchHeader,
        payload: &BatchPayload,
        outcome: &BatchOutcome,
    ) {
        self.reported_gaps.remove(&header.site_id);
        let newest_commit = payload.transactions.iter().map(|t| t.committed_at).max();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        crate::metrics::batch_applied(&header.site_id, outcome.applied, newest_commit, now);
        if let Some(health) = &payload.health {
            crate::metrics::site_health(&header.site_id, health);
        }
        tracing::info!(
            site = %header.site_id,
            epoch = header.epoch,
            sequence = header.sequence,
            applied = outcome.applied,
            parked = outcome.parked,
            released = outcome.released,
            "applied batch"
        );
    }

    /// Whether the periodic retry of parked rows is due.
    pub fn parked_retry_due(&self) -> bool {
        self.last_parked_retry.elapsed() >= self.settings.retry_parked_interval
    }

    /// Authenticates and decodes a batch that claims to be (site, epoch, sequence) (its file
    /// name, or its Kafka headers); the error is the rejection reason.
    pub(crate) fn open(&self, site_id: &str, epoch: u64, sequence: u64, bytes: &[u8]) -> Opened {
        open_batch(&self.keyring, site_id, epoch, sequence, bytes)
    }

    async fn reject(
        &mut self,
        entry: &InboxEntry,
        rejection: &Rejection,
    ) -> Result<(), ApplyError> {
        tracing::error!(site = %entry.site_id, epoch = entry.epoch, sequence = entry.sequence, reason = rejection.reason.as_str(), detail = %rejection.detail, "rejected batch; nothing of it was applied");
        let moved = self.inbox.reject(entry, &rejection.detail)?;
        let file_name = moved
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.record_rejection(
            &entry.site_id,
            entry.epoch,
            entry.sequence,
            &file_name,
            rejection,
        )
        .await
    }
}

/// The epoch of the first batch in `entries` (in epoch and sequence order) that starts a
/// later epoch than the held one and that HQ would take next: the start of a re-seed, which
/// sends the whole site again and so supersedes whatever the held epoch still lacks.
fn later_epoch_start(
    progress: Option<bookkeeping::Progress>,
    entries: &[InboxEntry],
) -> Option<u64> {
    let held = entries.first()?.epoch;
    entries
        .iter()
        .find(|e| e.epoch > held)
        .filter(|e| crate::batch_apply::fit(progress, e.epoch, e.sequence) == Fit::Next)
        .map(|e| e.epoch)
}

/// Why a batch of an older epoch is rejected.
pub(crate) fn stale_reason(epoch: u64, current_epoch: u64) -> Rejection {
    Rejection::new(
        RejectReason::StaleEpoch,
        format!(
            "batch of epoch {epoch} is older than epoch {current_epoch}, which HQ already applies \
             for this site: either it was left over when the site was re-seeded into a later \
             epoch (nothing is missing: the re-seed sent the whole site again), or the site's \
             capture state was reset or restored with its clock behind (then re-seed the site)"
        ),
    )
}

/// Runs the applier until `shutdown`; transient failures reconnect with backoff.
pub async fn run_apply(
    settings: ApplySettings,
    shutdown: CancellationToken,
) -> Result<(), ApplyError> {
    let mut backoff = settings.poll_interval;
    let mut applier: Option<Applier> = None;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let result = match applier.as_mut() {
            Some(a) => a
                .apply_available()
                .await
                .map(|r| r.batches_applied > 0 || r.duplicates > 0),
            None => Applier::connect(settings.clone()).await.map(|a| {
                applier = Some(a);
                true
            }),
        };
        let wait = match result {
            Ok(true) => {
                backoff = settings.poll_interval;
                continue;
            }
            Ok(false) => settings.poll_interval,
            Err(e) if e.is_transient() => {
                crate::metrics::applier_error(&e);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "applier interrupted; retrying");
                applier = None;
                backoff = (backoff * 2).min(RETRY_MAX);
                backoff
            }
            Err(e) => {
                crate::metrics::applier_error(&e);
                return Err(e);
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Authenticates and decodes a batch that claims to be (site, epoch, sequence); the error is
/// the rejection reason.
/// Frees an applied payload on a blocking thread: a batch is thousands of small allocations,
/// and freeing them took a tenth of the thread that waits on HQ.
fn free_elsewhere(payload: BatchPayload) {
    drop(tokio::task::spawn_blocking(move || drop(payload)));
}

fn open_batch(keyring: &Keyring, site_id: &str, epoch: u64, sequence: u64, bytes: &[u8]) -> Opened {
    let (header, json) =
        tributary_batch::open(bytes, keyring).map_err(|e| Rejection::from_open(&e))?;
    if header.site_id != site_id || header.epoch != epoch || header.sequence != sequence {
        return Err(Rejection::new(
            RejectReason::MisplacedBatch,
            format!(
                "authenticated header says site '{}' epoch {} sequence {}, but the batch arrived as \
                 site '{site_id}' epoch {epoch} sequence {sequence}; a batch was renamed, copied into \
                 the wrong place or relabelled",
                header.site_id, header.epoch, header.sequence,
            ),
        ));
    }
    let payload: BatchPayload = serde_json::from_slice(&json)
        // The position only: serde's message may quote payload values.
        .map_err(|e| {
            Rejection::new(
                RejectReason::MalformedPayload,
                format!(
                    "authenticated payload is not a valid batch payload ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        })?;
    if payload.row_count() != header.row_count as usize {
        return Err(Rejection::new(
            RejectReason::RowCountMismatch,
            format!(
                "header counts {} rows but the payload holds {}",
                header.row_count,
                payload.row_count()
            ),
        ));
    }
    Ok((header, payload))
}
