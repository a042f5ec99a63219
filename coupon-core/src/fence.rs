//! The void fence: the one way stock goes back to the gate (`docs/PROTOCOL.md` §4).

use crate::domain::{CampaignId, ReservationKey, VoidOutcome};
use crate::error::BackendError;
use crate::gate::IssueGate;
use crate::store::IssueStore;

/// What [`void_then_release`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fenced {
    /// Admissions voided in the store whose stock the gate gave back.
    pub released: u64,
    /// Admissions the store had stored: settled in the gate, never released.
    pub settled: u64,
}

/// Voids `keys` in the store first (so their events can never be stored afterwards),
/// then releases the voided ones in the gate and settles the ones the store already holds.
pub(crate) async fn void_then_release(
    gate: &dyn IssueGate,
    store: &dyn IssueStore,
    campaign_id: &CampaignId,
    keys: &[ReservationKey],
) -> Result<Fenced, BackendError> {
    let mut done = Fenced::default();
    if keys.is_empty() {
        return Ok(done);
    }
    let outcomes = store.void(campaign_id, keys).await?;
    let mut stored = Vec::new();
    for (key, outcome) in keys.iter().zip(outcomes) {
        match outcome {
            // The gate releases exactly this admission, or nothing if it is gone.
            VoidOutcome::Voided => done.released += u64::from(gate.release(campaign_id, key).await?),
            VoidOutcome::Stored => stored.push(key.clone()),
        }
    }
    if !stored.is_empty() {
        done.settled = gate.settle(campaign_id, &stored).await?;
    }
    Ok(done)
}
