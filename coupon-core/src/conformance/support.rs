//! Helpers shared by the suites, and the macros that turn them into tests.

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};

use crate::domain::{
    Admission, Campaign, CampaignId, CampaignState, CouponId, IssueEvent, NewCampaign, ReservationKey, UserId, Validity,
};
use crate::gate::IssueGate;

/// Now, at millisecond precision (what every backend keeps for ledger times).
pub fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(now)
}

/// An open campaign with a fresh id whose window is the hour around now.
pub fn open_campaign(total_quantity: u64, per_user_limit: u32) -> Campaign {
    let now = now_ms();
    let mut c = Campaign::from_new(
        NewCampaign::new(
            "conformance",
            total_quantity,
            now - Duration::hours(1),
            now + Duration::hours(1),
        )
        .with_per_user_limit(per_user_limit)
        .with_validity(Validity::DaysAfterIssue(30))
        .with_discount("10%"),
        now,
    );
    c.state = CampaignState::Open;
    c
}

/// A user id unique to `campaign`'s test, so suites can share one server.
pub fn user(campaign: &CampaignId, i: usize) -> UserId {
    UserId::new(format!("u{i}-{}", &campaign.to_string()[24..])).expect("valid user id")
}

/// Admits `user` as a fresh admission (a new coupon id) at `at`; panics on a backend error.
pub async fn admit(gate: &dyn IssueGate, campaign: &CampaignId, user: &UserId, at: DateTime<Utc>) -> Admission {
    admit_keyed(gate, campaign, user, at).await.0
}

/// Like [`admit`], also giving the admission's ledger key (`nth` 0 when not admitted).
pub async fn admit_keyed(
    gate: &dyn IssueGate,
    campaign: &CampaignId,
    user: &UserId,
    at: DateTime<Utc>,
) -> (Admission, ReservationKey) {
    let coupon_id = CouponId::new();
    let admission = gate.admit(campaign, user, &coupon_id, at).await.expect("admit");
    let nth = match admission {
        Admission::Admitted { nth, .. } => nth,
        _ => 0,
    };
    let key = ReservationKey {
        coupon_id,
        user_id: user.clone(),
        nth,
    };
    (admission, key)
}

/// The event of an admission, as the issuer would publish it.
pub fn event_of(campaign: &Campaign, key: &ReservationKey, at: DateTime<Utc>) -> IssueEvent {
    IssueEvent::for_admission(campaign, key.coupon_id, key.user_id.clone(), key.nth, at)
}

/// The event for `user`'s `nth` coupon of `campaign` at `at`.
pub fn event(campaign: &Campaign, user: &UserId, nth: u32, at: DateTime<Utc>) -> IssueEvent {
    IssueEvent::new(campaign, user.clone(), nth, at)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($module:ident, $make:expr, [$($name:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(backend) = $make else { return };
                $crate::conformance::$module::$name(backend).await;
            }
        )*
    };
}

/// Generates one `#[tokio::test]` per gate check. `$make` is an expression (it may
/// use `.await`) giving `Option<Arc<dyn IssueGate>>`; `None` skips (the harness says why).
///
/// ```ignore
/// coupon_core::gate_conformance!(Some(std::sync::Arc::new(MemoryGate::new()) as Arc<dyn IssueGate>));
/// ```
#[macro_export]
macro_rules! gate_conformance {
    ($make:expr) => {
        $crate::__conformance_tests!(
            gate,
            $make,
            [
                admits_until_sold_out,
                one_coupon_per_user,
                per_user_limit_above_one,
                window_and_unknown_campaign,
                open_is_idempotent,
                release_returns_stock_once,
                ledger_records_admissions_and_settle_clears_them,
                settled_entries_are_never_released,
                restore_rebuilds_a_lost_campaign,
                restore_only_adds,
                numbers_admissions_and_fences_until_restore,
                close_is_final,
                restore_reports_only_the_stock_it_took,
                admit_many_answers_in_order,
                concurrent_admissions_never_oversell,
                campaigns_are_independent,
            ]
        );
    };
}

/// Generates one `#[tokio::test]` per event-log check. `$make` gives
/// `Option<Arc<dyn EventLog>>`, a log of its own (a fresh topic) for each test.
#[macro_export]
macro_rules! log_conformance {
    ($make:expr) => {
        $crate::__conformance_tests!(
            log,
            $make,
            [
                publish_consume_commit,
                uncommitted_batch_is_redelivered,
                groups_are_independent,
                oldest_uncommitted_tracks_commits,
                dead_letters_carry_headers,
                raw_payloads_pass_through,
                concurrent_publishers_lose_nothing,
            ]
        );
    };
}

/// Generates one `#[tokio::test]` per store check. `$make` gives `Option<Arc<dyn IssueStore>>`.
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::__conformance_tests!(
            store,
            $make,
            [
                campaign_round_trip,
                missing_campaign_is_none,
                duplicate_campaign_is_rejected,
                campaign_state_follows_lifecycle,
                record_is_idempotent,
                record_rejects_invalid_events_and_keeps_the_rest,
                empty_batch_records_nothing,
                overlapping_concurrent_batches_store_once,
                coupons_of_user_newest_first,
                redeem_outcomes,
                concurrent_redemptions_have_one_winner,
                a_redemption_racing_the_coupon_being_stored_is_never_told_already_redeemed,
                holders_and_stored_keys,
                void_fences_off_late_events,
                void_and_record_race_one_wins,
                the_store_never_exceeds_the_stock,
                admission_numbers_are_stored_once,
                stored_coupons_have_a_notice_pending_until_cleared,
                a_redemption_raises_its_notice_and_clearing_one_keeps_the_other,
            ]
        );
    };
}

/// `admission` with its time cleared, to compare answers whatever the gate's clock said.
pub fn untimed(admission: Admission) -> Admission {
    match admission {
        Admission::Admitted {
            nth, remaining, seq, ..
        } => Admission::Admitted {
            nth,
            remaining,
            seq,
            admitted_at: chrono::DateTime::UNIX_EPOCH,
        },
        other => other,
    }
}
