//! The applier behind the Kafka consumer: each record goes through
//! [`Applier::apply_delivered`], and the consumer commits its offset only when this says the
//! batch is done at HQ (applied, already applied, or rejected and recorded). A gap or a
//! concurrent applier holds the batch (the consumer reads on past it and comes back to it
//! once HQ's progress for the site says it may fit);
//! an HQ outage drops the connection and the consumer retries the batch with backoff.

use std::collections::BTreeMap;

use tributary_apply::{Applier, ApplyError, ApplySettings, Delivery, PassReport};
use tributary_kafka::{BatchHandler, Handled, Received};

pub struct KafkaApplier {
    settings: ApplySettings,
    topic: String,
    applier: Option<Applier>,
    /// What this run did (for `apply --once`).
    pub report: PassReport,
}

impl KafkaApplier {
    pub fn new(settings: ApplySettings, topic: &str) -> Self {
        KafkaApplier {
            settings,
            topic: topic.to_owned(),
            applier: None,
            report: PassReport::default(),
        }
    }

    async fn applier(&mut self) -> Result<&mut Applier, ApplyError> {
        match &mut self.applier {
            Some(applier) => Ok(applier),
            slot @ None => Ok(slot.insert(Applier::connect(self.settings.clone()).await?)),
        }
    }

    /// Retries every parked row once (end of `apply --once`).
    pub async fn retry_parked(&mut self) -> Result<u64, ApplyError> {
        self.applier().await?.retry_parked().await
    }

    async fn apply(&mut self, record: Received) -> Result<Handled, ApplyError> {
        let topic = self.topic.clone();
        let applier = self.applier().await?;
        let batch = match record {
            Received::Unreadable {
                partition,
                offset,
                problem,
            } => {
                let origin = format!("kafka {topic} partition {partition} offset {offset}");
                applier.reject_unroutable(&origin, &problem).await?;
                self.report.rejected += 1;
                return Ok(Handled::Done);
            }
            Received::Batch(batch) => batch,
        };
        let delivery = applier
            .apply_delivered(&batch.site_id, batch.epoch, batch.sequence, &batch.sealed)
            .await?;
        Ok(match delivery {
            Delivery::Applied(outcome) => {
                self.report.batches_applied += 1;
                self.report.rows.applied += outcome.applied;
                self.report.rows.parked += outcome.parked;
                self.report.rows.released += outcome.released;
                self.report.gaps.remove(&batch.site_id);
                Handled::Done
            }
            Delivery::Duplicate => {
                self.report.duplicates += 1;
                Handled::Done
            }
            Delivery::Rejected => {
                self.report.rejected += 1;
                Handled::Done
            }
            Delivery::Gap { expected } => {
                self.report.gaps.insert(batch.site_id.clone(), expected);
                Handled::Hold {
                    reason: format!(
                        "site {} waits for batch {expected} before {}",
                        batch.site_id, batch.sequence
                    ),
                }
            }
            Delivery::Retry => Handled::Hold {
                reason: "another applier moved the site meanwhile".into(),
            },
        })
    }

    /// Sites held by a gap at the end of the run.
    pub fn gaps(&self) -> &BTreeMap<String, u64> {
        &self.report.gaps
    }
}

impl BatchHandler for KafkaApplier {
    type Error = ApplyError;

    async fn handle(&mut self, record: Received) -> Result<Handled, ApplyError> {
        let result = self.apply(record).await;
        if let Err(e) = &result {
            tributary_apply::metrics::applier_error(e);
            if e.is_transient() {
                // The HQ transaction rolled back; reconnect for the retry.
                self.applier = None;
            }
        }
        result
    }

    async fn tick(&mut self) -> Result<(), ApplyError> {
        let Some(applier) = self.applier.as_mut() else {
            return Ok(());
        };
        if !applier.parked_retry_due() {
            return Ok(());
        }
        match applier.retry_parked().await {
            Ok(released) => {
                self.report.rows.released += released;
                Ok(())
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "retrying parked rows failed; reconnecting to HQ");
                self.applier = None;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn may_move(
        &mut self,
        site: &str,
        epoch: u64,
        sequence: u64,
    ) -> Result<bool, ApplyError> {
        let result = self
            .applier()
            .await?
            .gap_closed(site, epoch, sequence)
            .await;
        if result.as_ref().is_err_and(ApplyError::is_transient) {
            self.applier = None;
        }
        result
    }

    fn is_transient(error: &ApplyError) -> bool {
        error.is_transient()
    }
}
