//! Work repeated on a period until shutdown: the reconciler's passes, the hook runner's.

use std::future::Future;
use std::time::Duration;

/// Runs `pass` once per `every` until `shutdown` completes: the first pass at once when
/// `at_once`, else one period after the call. A pass that runs long delays the next one
/// and never overlaps it; shutdown does not wait for a pass to finish.
pub(crate) async fn run_every<F, Fut>(every: Duration, at_once: bool, shutdown: impl Future<Output = ()>, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if !at_once {
        // The first tick completes at once.
        tick.tick().await;
    }
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = pass() => {}
        }
    }
}
