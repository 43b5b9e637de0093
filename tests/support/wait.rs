//! Polling for effects. Tests never sleep to wait for something to happen: they poll
//! a condition with [`wait_until`], which is the one place a short pause between polls
//! is allowed.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;

/// How long [`wait_until`] pauses between two polls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `f` every 100 ms until it returns `Ok(true)`, or fails once `timeout` has
/// passed, with an error that names `what` (and the last error `f` returned, if any).
///
/// `Ok(false)` and `Err(_)` both mean "not yet": errors are expected while something
/// is starting (connection refused, table missing, ...). Each call of `f` is itself
/// cut off at the deadline, so a hung call cannot stretch the wait.
///
/// Closures that use a value from the test borrow it through a reference that is
/// moved in: `let hq = &hq; wait_until("..", t, move || async move { hq.conn().await ... })`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut polls = 0u64;
    loop {
        polls += 1;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(POLL_INTERVAL);
        let last_error = match tokio::time::timeout(left, f()).await {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(anyhow::anyhow!(
                "the check itself did not finish before the deadline"
            )),
        };
        if Instant::now() >= deadline {
            let waited = start.elapsed();
            match last_error {
                Some(e) => bail!(
                    "timed out after {waited:.1?} ({polls} polls) waiting for {what}; last error: {e:#}"
                ),
                None => bail!("timed out after {waited:.1?} ({polls} polls) waiting for {what}"),
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
