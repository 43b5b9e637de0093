//! Why HQ refuses a batch: a reason from the closed vocabulary shared with the batch crate
//! (its stable name is recorded, logged and counted), and the detail a person reads; and
//! the one place a rejection is recorded at HQ and counted in the metrics.

use crate::bookkeeping;
use crate::error::ApplyError;
use crate::runner::Applier;
use tributary_batch::{BatchError, RejectReason};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// What exactly was wrong and what to do; names objects, never row values.
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }

    /// A batch that did not open; every error `open` returns has a reason.
    pub fn from_open(error: &BatchError) -> Rejection {
        Rejection::new(
            error
                .reject_reason()
                .unwrap_or(RejectReason::MalformedHeader),
            error.to_string(),
        )
    }
}

impl Applier {
    /// Records a rejection in `tributary_rejected_batch` and, once HQ has it, counts it in
    /// `tributary_apply_batches_rejected_total` (once per batch and reason, however often the
    /// batch is delivered again). Every rejection path ends here.
    pub(crate) async fn record_rejection(
        &mut self,
        site_id: &str,
        epoch: u64,
        sequence: u64,
        file_name: &str,
        rejection: &Rejection,
    ) -> Result<(), ApplyError> {
        let new = bookkeeping::record_rejected(
            &mut self.conn,
            site_id,
            epoch,
            sequence,
            file_name,
            rejection,
        )
        .await?;
        if new {
            crate::metrics::batch_rejected(&self.settings.keyring, site_id, rejection.reason);
        }
        Ok(())
    }
}
