//! The sealing worker: compresses, seals and publishes serialised batches on a thread of its
//! own, in order, while the capture loop decodes, annotates and serialises the next batch.
//!
//! Durability is unchanged (each batch is staged and fsynced, then checkpointed, then
//! committed, see [`crate::checkpoint`]): only *who* waits for the disk changes. One job runs
//! while at most one more waits, so memory stays within a few batches and a slow disk slows
//! capture down rather than letting work pile up. The first failure poisons the worker: later
//! jobs are skipped (a batch must never be committed after an earlier one failed), and the
//! failure is reported to the publisher's next call, which ends the session; the session's
//! resume starts again from what is on disk.

use crate::checkpoint::StateDir;
use crate::error::CaptureError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tributary_batch::SiteKey;
use tributary_transport::Outbox;

/// What the worker writes to: the capture state, the outbox and the sealing key.
pub(crate) struct Sink {
    pub state: StateDir,
    pub outbox: Box<dyn Outbox>,
    pub key: SiteKey,
    pub budget: crate::spool_budget::SpoolBudget,
}

type Work = Box<dyn FnOnce(&mut Sink) -> Result<(), CaptureError> + Send>;

enum Job {
    Work(Work),
    /// Answered once every earlier job has run (or been skipped).
    Barrier(SyncSender<()>),
}

/// Jobs waiting behind the running one.
const QUEUE: usize = 1;

pub(crate) struct Sealer {
    jobs: Option<SyncSender<Job>>,
    poisoned: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<CaptureError>>>,
    thread: Option<JoinHandle<()>>,
}

impl Sealer {
    pub fn start(sink: Sink) -> Result<Sealer, CaptureError> {
        let (jobs, receiver) = sync_channel(QUEUE);
        let poisoned = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let thread = std::thread::Builder::new()
            .name("tributary-sealer".into())
            .spawn({
                let (poisoned, failure) = (Arc::clone(&poisoned), Arc::clone(&failure));
                move || run(sink, receiver, &poisoned, &failure)
            })
            .map_err(|e| CaptureError::State {
                path: "sealing worker".into(),
                detail: e.to_string(),
            })?;
        Ok(Sealer {
            jobs: Some(jobs),
            poisoned,
            failure,
            thread: Some(thread),
        })
    }

    /// Queues `work` behind earlier jobs; fails at once when an earlier job failed.
    pub fn submit(
        &self,
        work: impl FnOnce(&mut Sink) -> Result<(), CaptureError> + Send + 'static,
    ) -> Result<(), CaptureError> {
        self.check()?;
        self.send(Job::Work(Box::new(work)))
    }

    /// Runs `work` after every earlier job and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Sink) -> Result<T, CaptureError> + Send + 'static,
    ) -> Result<T, CaptureError> {
        let (reply, answer) = sync_channel(1);
        self.submit(move |sink| {
            // The result, error or not, goes to the caller, who is waiting for it and queues
            // nothing meanwhile: the worker need not stop.
            let _ = reply.send(work(sink));
            Ok(())
        })?;
        answer.recv().unwrap_or_else(|_| Err(self.take_failure()))
    }

    /// Waits until every queued job has run, then reports the first failure, if any.
    pub fn sync(&self) -> Result<(), CaptureError> {
        self.drain();
        self.check()
    }

    /// Waits for the queue to empty and clears any failure: the caller is about to start
    /// again from what is on disk.
    pub fn restart(&self) {
        self.drain();
        self.reset();
    }

    fn drain(&self) {
        let (reply, answer) = sync_channel(1);
        if self.send(Job::Barrier(reply)).is_ok() {
            let _ = answer.recv();
        }
    }

    fn reset(&self) {
        if let Ok(mut failure) = self.failure.lock() {
            *failure = None;
        }
        self.poisoned.store(false, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), CaptureError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(self.take_failure());
        }
        Ok(())
    }

    fn take_failure(&self) -> CaptureError {
        self.failure
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .unwrap_or(CaptureError::Stopped)
    }

    fn send(&self, job: Job) -> Result<(), CaptureError> {
        self.jobs
            .as_ref()
            .ok_or(CaptureError::Stopped)?
            .send(job)
            .map_err(|_| CaptureError::Stopped)
    }
}

impl Drop for Sealer {
    /// Finishes the queued jobs (batches handed over are published) before the worker ends.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    mut sink: Sink,
    jobs: Receiver<Job>,
    poisoned: &AtomicBool,
    failure: &Mutex<Option<CaptureError>>,
) {
    for job in jobs {
        match job {
            Job::Barrier(reply) => {
                let _ = reply.send(());
            }
            Job::Work(_) if poisoned.load(Ordering::SeqCst) => {}
            Job::Work(work) => {
                if let Err(e) = work(&mut sink) {
                    poisoned.store(true, Ordering::SeqCst);
                    if let Ok(mut slot) = failure.lock() {
                        slot.get_or_insert(e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn sealer(dir: &std::path::Path) -> Sealer {
        let outbox =
            tributary_transport::DirectoryOutbox::open(&dir.join("batches"), "clinic-a").unwrap();
        Sealer::start(Sink {
            state: StateDir::open(&dir.join("state")).unwrap(),
            budget: crate::spool_budget::SpoolBudget::open(outbox.dir(), Default::default())
                .unwrap(),
            outbox: Box::new(outbox),
            key: SiteKey::generate("clinic-a").unwrap(),
        })
        .unwrap()
    }

    fn failure() -> CaptureError {
        CaptureError::State {
            path: "disk".into(),
            detail: "full".into(),
        }
    }

    #[test]
    fn jobs_run_in_order_and_sync_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = sealer(dir.path());
        let order = Arc::new(Mutex::new(Vec::new()));
        for i in 0..5 {
            let order = Arc::clone(&order);
            sealer
                .submit(move |_| {
                    order.lock().unwrap().push(i);
                    Ok(())
                })
                .unwrap();
        }
        sealer.sync().unwrap();
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(sealer.run(|_| Ok(7)).unwrap(), 7);
    }

    #[test]
    fn after_a_failure_later_jobs_are_skipped_until_restart() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = sealer(dir.path());
        let ran = Arc::new(AtomicUsize::new(0));
        sealer.submit(|_| Err(failure())).unwrap();
        let later = Arc::clone(&ran);
        // Queued behind the failing job (or refused, if the failure is already known).
        let _ = sealer.submit(move |_| {
            later.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let err = sealer.sync().unwrap_err();
        assert!(matches!(err, CaptureError::State { .. }), "{err}");
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "nothing runs after a failure"
        );
        assert!(sealer.submit(|_| Ok(())).is_err(), "still poisoned");
        sealer.restart();
        let after = Arc::clone(&ran);
        sealer
            .run(move |_| {
                after.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn dropping_the_sealer_finishes_queued_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        {
            let sealer = sealer(dir.path());
            for _ in 0..3 {
                let ran = Arc::clone(&ran);
                sealer
                    .submit(move |_| {
                        ran.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .unwrap();
            }
        }
        assert_eq!(ran.load(Ordering::SeqCst), 3);
    }
}
