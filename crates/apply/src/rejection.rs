//! Why HQ refuses a batch: a reason from the closed vocabulary shared with the batch crate
//! (its stable name is recorded, logged and counted), and the detail a person reads.

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
