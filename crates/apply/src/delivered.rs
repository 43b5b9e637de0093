//! Applying a batch that arrived by a stream transport (Kafka) instead of as a file in the
//! inbox: the same order check, authentication, HQ transaction and rejection path as
//! [`runner`](crate::runner), with the caller deciding what to do with its position in the
//! stream (commit the offset, or hold the partition) from the returned [`Delivery`].
//!
//! Invariants: a batch is reported `Applied`, `Duplicate` or `Rejected` only after HQ
//! committed what that means (the batch's transaction, or the rejection record), so the
//! caller may then acknowledge it to the transport; a gap is reported, recorded for `status`,
//! and never skipped; rejected batches are kept in the rejected store with their reason.

use crate::rejection::Rejection;
use tributary_batch::RejectReason;
use tributary_batch::validate_site_id;

use crate::batch_apply::{BatchOutcome, Fit, fit};
use crate::bookkeeping;
use crate::error::ApplyError;
use crate::runner::{Applier, stale_reason};

/// What became of a delivered batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Applied in one HQ transaction (rows written or parked).
    Applied(BatchOutcome),
    /// HQ already applied this (site, epoch, sequence).
    Duplicate,
    /// Rejected (never applied), recorded at HQ and kept aside with the reason.
    Rejected,
    /// An earlier batch of the site is missing: hold this one.
    Gap { expected: u64 },
    /// Another applier moved the site meanwhile: try again shortly.
    Retry,
}

impl Applier {
    /// Applies a batch delivered as (site, epoch, sequence) by a stream transport.
    pub async fn apply_delivered(
        &mut self,
        site_id: &str,
        epoch: u64,
        sequence: u64,
        sealed: &[u8],
    ) -> Result<Delivery, ApplyError> {
        if let Err(e) = validate_site_id(site_id) {
            let origin = format!("epoch {epoch} sequence {sequence}");
            self.reject_unroutable(&origin, &format!("the batch's site id is invalid: {e}"))
                .await?;
            return Ok(Delivery::Rejected);
        }
        let progress = bookkeeping::read_progress(&mut self.conn, site_id).await?;
        match fit(progress, epoch, sequence) {
            Fit::AlreadyApplied => return Ok(Delivery::Duplicate),
            Fit::Gap { expected } => {
                self.note_gap(site_id, progress, expected, sequence).await?;
                return Ok(Delivery::Gap { expected });
            }
            Fit::Stale { current_epoch } => {
                let reason = stale_reason(epoch, current_epoch);
                self.keep_rejected(site_id, epoch, sequence, sealed, &reason)
                    .await?;
                return Ok(Delivery::Rejected);
            }
            Fit::Next => {}
        }
        let (header, payload) = match self.open(site_id, epoch, sequence, sealed) {
            Ok(opened) => opened,
            Err(reason) => {
                self.keep_rejected(site_id, epoch, sequence, sealed, &reason)
                    .await?;
                return Ok(Delivery::Rejected);
            }
        };
        let (fit, outcome) = self.apply_opened(&header, &payload).await?;
        Ok(match fit {
            Fit::Next => Delivery::Applied(outcome),
            Fit::AlreadyApplied => Delivery::Duplicate,
            Fit::Gap { .. } | Fit::Stale { .. } => Delivery::Retry,
        })
    }

    /// Whether a batch held at a gap may be handled otherwise now: its site's progress at HQ
    /// reached it, passed it, or moved to a later epoch (which makes it stale).
    pub async fn gap_closed(
        &mut self,
        site_id: &str,
        epoch: u64,
        sequence: u64,
    ) -> Result<bool, ApplyError> {
        let progress = bookkeeping::read_progress(&mut self.conn, site_id).await?;
        Ok(!matches!(fit(progress, epoch, sequence), Fit::Gap { .. }))
    }

    /// Records a record that is not a usable batch (no position, invalid site id) as a
    /// rejection; `origin` says where it came from (e.g. topic, partition and offset).
    pub async fn reject_unroutable(
        &mut self,
        origin: &str,
        reason: &str,
    ) -> Result<(), ApplyError> {
        let rejection = Rejection::new(RejectReason::MalformedHeader, reason);
        tracing::error!(
            origin,
            reason = rejection.reason.as_str(),
            detail = %rejection.detail,
            "rejected a record that is not a usable batch; nothing of it was applied"
        );
        self.record_rejection("", 0, 0, origin, &rejection).await
    }

    async fn keep_rejected(
        &mut self,
        site_id: &str,
        epoch: u64,
        sequence: u64,
        sealed: &[u8],
        rejection: &Rejection,
    ) -> Result<(), ApplyError> {
        tracing::error!(
            site = site_id,
            epoch,
            sequence,
            reason = rejection.reason.as_str(),
            detail = %rejection.detail,
            "rejected batch; nothing of it was applied"
        );
        let kept = self
            .inbox
            .keep_rejected(site_id, epoch, sequence, sealed, &rejection.detail)?;
        let file_name = kept
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.record_rejection(site_id, epoch, sequence, &file_name, rejection)
            .await
    }
}
