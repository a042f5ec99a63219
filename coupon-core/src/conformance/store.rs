//! Checks every [`IssueStore`] must pass.

use std::sync::Arc;

use chrono::Duration;

use super::support::{event, now_ms, open_campaign, user};
use crate::domain::{
    Campaign, CampaignState, CouponId, CouponState, Fence, RecordOutcome, RedeemOutcome, Redemption, RejectReason,
    ReservationKey, Validity, VoidOutcome,
};
use crate::error::ErrorKind;
use crate::hooks::{Notice, PendingNotices};
use crate::store::IssueStore;

async fn stored_campaign(store: &dyn IssueStore, total: u64, limit: u32) -> Campaign {
    let c = open_campaign(total, limit);
    store.create_campaign(&c).await.unwrap();
    c
}

/// A campaign reads back exactly as created.
pub async fn campaign_round_trip(store: Arc<dyn IssueStore>) {
    let mut c = open_campaign(1_000, 2).with_min_order(15_000);
    c.state = CampaignState::Draft;
    c.validity = Validity::Until(c.issue_ends_at + Duration::days(7));
    store.create_campaign(&c).await.unwrap();
    assert_eq!(store.campaign(&c.id).await.unwrap(), Some(c.clone()));
    let mut relative = open_campaign(5, 1);
    relative.validity = Validity::DaysAfterIssue(14);
    store.create_campaign(&relative).await.unwrap();
    assert_eq!(store.campaign(&relative.id).await.unwrap(), Some(relative));
}

/// Unknown ids read as none.
pub async fn missing_campaign_is_none(store: Arc<dyn IssueStore>) {
    let c = open_campaign(1, 1);
    assert_eq!(store.campaign(&c.id).await.unwrap(), None);
    assert_eq!(
        store.set_campaign_state(&c.id, CampaignState::Open).await.unwrap(),
        None
    );
    assert_eq!(store.coupon(&CouponId::new()).await.unwrap(), None);
    assert_eq!(store.issued_count(&c.id).await.unwrap(), 0);
}

/// Creating the same campaign twice is refused, and the first stays.
pub async fn duplicate_campaign_is_rejected(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 10, 1).await;
    let mut twin = c.clone();
    twin.name = "twin".into();
    let err = store.create_campaign(&twin).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Rejected, "{err}");
    assert_eq!(store.campaign(&c.id).await.unwrap().unwrap().name, c.name);
}

/// Draft -> open -> closed; no way back.
pub async fn campaign_state_follows_lifecycle(store: Arc<dyn IssueStore>) {
    let mut c = open_campaign(10, 1);
    c.state = CampaignState::Draft;
    store.create_campaign(&c).await.unwrap();
    let set = |s| {
        let store = store.clone();
        async move { store.set_campaign_state(&c.id, s).await.unwrap().unwrap().state }
    };
    assert!(
        !store.open_campaigns().await.unwrap().contains(&c.id),
        "a draft is not open"
    );
    assert_eq!(set(CampaignState::Open).await, CampaignState::Open);
    assert!(
        store.open_campaigns().await.unwrap().contains(&c.id),
        "listed once open"
    );
    assert_eq!(
        set(CampaignState::Draft).await,
        CampaignState::Open,
        "refused: stays open"
    );
    assert_eq!(set(CampaignState::Closed).await, CampaignState::Closed);
    assert!(
        !store.open_campaigns().await.unwrap().contains(&c.id),
        "no longer listed once closed"
    );
    assert_eq!(
        set(CampaignState::Open).await,
        CampaignState::Closed,
        "refused: stays closed"
    );
}

/// Replaying a batch changes nothing.
pub async fn record_is_idempotent(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 100, 1).await;
    let batch: Vec<_> = (0..10).map(|i| event(&c, &user(&c.id, i), 1, now_ms())).collect();
    assert_eq!(store.record(&batch).await.unwrap(), vec![RecordOutcome::Stored; 10]);
    assert_eq!(store.record(&batch).await.unwrap(), vec![RecordOutcome::Duplicate; 10]);
    // The same (campaign, user, nth) under another coupon id is not a redelivery: a
    // different admission found its slot taken (F2), a loud fence, never a duplicate.
    let again = event(&c, &user(&c.id, 0), 1, now_ms());
    assert_eq!(
        store.record(std::slice::from_ref(&again)).await.unwrap(),
        vec![RecordOutcome::Fenced {
            fence: Fence::SlotTaken
        }]
    );
    assert_eq!(store.coupon(&again.coupon_id).await.unwrap(), None);
    assert_eq!(store.issued_count(&c.id).await.unwrap(), 10);
    let coupon = store.coupon(&batch[3].coupon_id).await.unwrap().unwrap();
    assert_eq!(coupon, crate::domain::Coupon::from_event(&batch[3]));
}

/// Invalid events are refused one by one, with a reason; the valid ones are stored.
pub async fn record_rejects_invalid_events_and_keeps_the_rest(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 100, 2).await;
    let mut draft = open_campaign(10, 1);
    draft.state = CampaignState::Draft;
    store.create_campaign(&draft).await.unwrap();
    let unknown = open_campaign(10, 1);
    let ok = event(&c, &user(&c.id, 0), 1, now_ms());
    let batch = vec![
        event(&unknown, &user(&c.id, 1), 1, now_ms()),
        ok.clone(),
        event(&c, &user(&c.id, 2), 3, now_ms()),
        event(&c, &user(&c.id, 3), 0, now_ms()),
        event(&draft, &user(&c.id, 4), 1, now_ms()),
        event(&c, &user(&c.id, 5), 1, c.issue_ends_at + Duration::seconds(1)),
        event(&c, &user(&c.id, 6), 2, now_ms()),
    ];
    let rejected = |reason| RecordOutcome::Rejected { reason };
    assert_eq!(
        store.record(&batch).await.unwrap(),
        vec![
            rejected(RejectReason::UnknownCampaign),
            RecordOutcome::Stored,
            rejected(RejectReason::NthOutOfRange),
            rejected(RejectReason::NthOutOfRange),
            rejected(RejectReason::CampaignNotOpened),
            rejected(RejectReason::OutsideWindow),
            RecordOutcome::Stored,
        ]
    );
    assert_eq!(store.issued_count(&c.id).await.unwrap(), 2);
    assert_eq!(store.issued_count(&draft.id).await.unwrap(), 0);
    for rejected in [&batch[0], &batch[2], &batch[4], &batch[5]] {
        assert_eq!(
            store.coupon(&rejected.coupon_id).await.unwrap(),
            None,
            "nothing written for a rejected event"
        );
    }
}

/// An empty batch is fine and writes nothing.
pub async fn empty_batch_records_nothing(store: Arc<dyn IssueStore>) {
    assert!(store.record(&[]).await.unwrap().is_empty());
}

/// Two recorders writing overlapping batches at once leave exactly one row per coupon.
pub async fn overlapping_concurrent_batches_store_once(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 1_000, 1).await;
    let all: Vec<_> = (0..400).map(|i| event(&c, &user(&c.id, i), 1, now_ms())).collect();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            // Each task writes 200 events, overlapping its neighbours by half.
            let mine: Vec<_> = all.iter().cycle().skip(t * 100).take(200).cloned().collect();
            tokio::spawn(async move {
                let mut stored = 0;
                for chunk in mine.chunks(50) {
                    stored += store
                        .record(chunk)
                        .await
                        .unwrap()
                        .into_iter()
                        .filter(|o| *o == RecordOutcome::Stored)
                        .count();
                }
                stored
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap();
    }
    assert_eq!(stored, 400, "each coupon reported stored exactly once");
    assert_eq!(store.issued_count(&c.id).await.unwrap(), 400);
}

/// A user's coupons across campaigns, newest first.
pub async fn coupons_of_user_newest_first(store: Arc<dyn IssueStore>) {
    let (a, b) = (
        stored_campaign(&*store, 10, 1).await,
        stored_campaign(&*store, 10, 1).await,
    );
    let u = user(&a.id, 0);
    let t = now_ms();
    let older = event(&a, &u, 1, t - Duration::seconds(10));
    let newer = event(&b, &u, 1, t);
    store.record(&[older.clone(), newer.clone()]).await.unwrap();
    store.record(&[event(&a, &user(&a.id, 1), 1, t)]).await.unwrap();
    let mine = store.coupons_of_user(&u).await.unwrap();
    assert_eq!(
        mine.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![newer.coupon_id, older.coupon_id]
    );
    assert!(mine.iter().all(|c| c.state == CouponState::Issued && c.user_id == u));
    assert!(store.coupons_of_user(&user(&b.id, 9)).await.unwrap().is_empty());
}

/// Each redemption failure is its own outcome; success happens once.
pub async fn redeem_outcomes(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 10, 1).await;
    let mut c_min = open_campaign(10, 1).with_min_order(10_000);
    c_min.validity = Validity::Until(c_min.issue_ends_at + Duration::days(1));
    store.create_campaign(&c_min).await.unwrap();
    let u = user(&c.id, 0);
    let t = now_ms();
    let e = event(&c, &u, 1, t);
    let e_min = event(&c_min, &u, 1, t);
    store.record(&[e.clone(), e_min.clone()]).await.unwrap();
    let r = |coupon_id, user_id: &crate::domain::UserId, amount, at| Redemption {
        coupon_id,
        user_id: user_id.clone(),
        order_id: "order-1".into(),
        order_amount: amount,
        at,
    };
    let stranger = user(&c.id, 1);
    assert_eq!(
        store.redeem(&r(CouponId::new(), &u, 1, t)).await.unwrap(),
        RedeemOutcome::NotFound
    );
    assert_eq!(
        store.redeem(&r(e.coupon_id, &stranger, 1, t)).await.unwrap(),
        RedeemOutcome::NotFound,
        "not the owner"
    );
    assert_eq!(
        store
            .redeem(&r(e.coupon_id, &u, 1, t - Duration::seconds(1)))
            .await
            .unwrap(),
        RedeemOutcome::NotYetValid
    );
    assert_eq!(
        store.redeem(&r(e.coupon_id, &u, 1, e.valid_until)).await.unwrap(),
        RedeemOutcome::Expired
    );
    assert_eq!(
        store.redeem(&r(e_min.coupon_id, &u, 9_999, t)).await.unwrap(),
        RedeemOutcome::ConditionNotMet {
            min_order_amount: 10_000
        }
    );
    let at = t + Duration::seconds(1);
    match store.redeem(&r(e_min.coupon_id, &u, 10_000, at)).await.unwrap() {
        RedeemOutcome::Redeemed { coupon } => {
            assert_eq!(coupon.state, CouponState::Redeemed);
            assert_eq!(coupon.redeemed_at, Some(at));
            assert_eq!(coupon.order_id.as_deref(), Some("order-1"));
        }
        other => panic!("expected a redemption, got {other:?}"),
    }
    // F16: the same order again (its answer was lost): the same success, unchanged.
    match store
        .redeem(&r(e_min.coupon_id, &u, 10_000, at + Duration::seconds(5)))
        .await
        .unwrap()
    {
        RedeemOutcome::Redeemed { coupon } => {
            assert_eq!(coupon.redeemed_at, Some(at), "the first redemption's time");
            assert_eq!(coupon.order_id.as_deref(), Some("order-1"));
        }
        other => panic!("a retry of the same order is the same success, got {other:?}"),
    }
    let mut other_order = r(e_min.coupon_id, &u, 10_000, at);
    other_order.order_id = "order-2".into();
    assert_eq!(
        store.redeem(&other_order).await.unwrap(),
        RedeemOutcome::AlreadyRedeemed
    );
    let mut strangers_retry = r(e_min.coupon_id, &stranger, 10_000, at);
    strangers_retry.order_id = "order-1".into();
    assert_eq!(store.redeem(&strangers_retry).await.unwrap(), RedeemOutcome::NotFound);
    let stored = store.coupon(&e_min.coupon_id).await.unwrap().unwrap();
    assert_eq!(stored.state, CouponState::Redeemed);
    assert_eq!(
        store.coupon(&e.coupon_id).await.unwrap().unwrap().state,
        CouponState::Issued,
        "failed attempts changed nothing"
    );
}

/// 64 concurrent redemptions of one coupon: exactly one wins, the rest are told it was used.
pub async fn concurrent_redemptions_have_one_winner(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 10, 1).await;
    let u = user(&c.id, 0);
    let e = event(&c, &u, 1, now_ms());
    store.record(std::slice::from_ref(&e)).await.unwrap();
    let at = now_ms() + Duration::seconds(1);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            let r = Redemption {
                coupon_id: e.coupon_id,
                user_id: u.clone(),
                order_id: format!("order-{i}"),
                order_amount: 100,
                at,
            };
            tokio::spawn(async move { store.redeem(&r).await.unwrap() })
        })
        .collect();
    let (mut won, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            RedeemOutcome::Redeemed { .. } => won += 1,
            RedeemOutcome::AlreadyRedeemed => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((won, refused), (1, 63));
}

/// F16: a user redeeming a coupon while the recorder stores it (the answer "issued" came
/// first, the row a moment later) hears "not found" before the row exists and
/// "redeemed" after, never "already redeemed": nobody else redeemed it.
pub async fn a_redemption_racing_the_coupon_being_stored_is_never_told_already_redeemed(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 200, 1).await;
    let at = now_ms() + Duration::seconds(1);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let e = event(&c, &user(&c.id, i), 1, now_ms());
            tokio::spawn(async move {
                let r = Redemption {
                    coupon_id: e.coupon_id,
                    user_id: e.user_id.clone(),
                    order_id: format!("order-{i}"),
                    order_amount: 100,
                    at,
                };
                let recorder = {
                    let store = store.clone();
                    tokio::spawn(async move { store.record(std::slice::from_ref(&e)).await.unwrap() })
                };
                let mut answers = Vec::new();
                loop {
                    let stored = recorder.is_finished();
                    let answer = store.redeem(&r).await.unwrap();
                    let done = !matches!(answer, RedeemOutcome::NotFound);
                    assert!(done || !stored, "stored, yet not found");
                    answers.push(answer);
                    if done {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                recorder.await.unwrap();
                answers
            })
        })
        .collect();
    for t in tasks {
        let answers = t.await.unwrap();
        match answers.last() {
            Some(RedeemOutcome::Redeemed { .. }) => {}
            other => panic!("expected redeemed after {} attempts, got {other:?}", answers.len()),
        }
    }
}

/// Holders list every stored slot; stored_keys answers per admission (coupon id).
pub async fn holders_and_stored_keys(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 10, 3).await;
    let (a, b) = (user(&c.id, 0), user(&c.id, 1));
    let t = now_ms();
    let events = [event(&c, &a, 1, t), event(&c, &a, 3, t), event(&c, &b, 1, t)];
    store.record(&events).await.unwrap();
    let holders = store.holders(&c.id).await.unwrap();
    assert_eq!(holders, vec![(a.clone(), 1), (a.clone(), 3), (b.clone(), 1)]);
    let keys = [
        events[1].reservation_key(),
        ReservationKey {
            coupon_id: CouponId::new(),
            ..events[1].reservation_key()
        },
        events[2].reservation_key(),
        ReservationKey {
            coupon_id: CouponId::new(),
            user_id: user(&c.id, 2),
            nth: 1,
        },
    ];
    assert_eq!(
        store.stored_keys(&c.id, &keys).await.unwrap(),
        vec![true, false, true, false],
        "another admission of a stored slot is not stored"
    );
    assert!(store.stored_keys(&c.id, &[]).await.unwrap().is_empty());
    assert_eq!(store.issued_count(&c.id).await.unwrap(), 3);
}

/// Void fences an admission off: voided coupons are never stored afterwards, stored
/// ones are never voided, and both answers are stable (F3, F10).
pub async fn void_fences_off_late_events(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 10, 2).await;
    let t = now_ms();
    let stored = event(&c, &user(&c.id, 0), 1, t);
    let late = event(&c, &user(&c.id, 1), 1, t);
    store.record(std::slice::from_ref(&stored)).await.unwrap();
    let keys = [stored.reservation_key(), late.reservation_key()];
    assert_eq!(
        store.void(&c.id, &keys).await.unwrap(),
        vec![VoidOutcome::Stored, VoidOutcome::Voided]
    );
    assert_eq!(
        store.void(&c.id, &keys).await.unwrap(),
        vec![VoidOutcome::Stored, VoidOutcome::Voided],
        "idempotent"
    );
    assert_eq!(store.voided_count(&c.id).await.unwrap(), 1);
    // The late event, and any replay of it, is refused.
    for _ in 0..2 {
        assert_eq!(
            store.record(std::slice::from_ref(&late)).await.unwrap(),
            vec![RecordOutcome::Fenced { fence: Fence::Voided }]
        );
    }
    assert_eq!(store.coupon(&late.coupon_id).await.unwrap(), None);
    // The stored one is still a plain redelivery.
    assert_eq!(
        store.record(std::slice::from_ref(&stored)).await.unwrap(),
        vec![RecordOutcome::Duplicate]
    );
    // The voided admission's slot is free for the user's next admission.
    let next = event(&c, &user(&c.id, 1), 1, t);
    assert_eq!(store.record(&[next]).await.unwrap(), vec![RecordOutcome::Stored]);
    assert_eq!(store.issued_count(&c.id).await.unwrap(), 2);
    assert!(store.void(&c.id, &[]).await.unwrap().is_empty());
}

/// A void racing a record of the same coupon: exactly one of them wins, never both.
pub async fn void_and_record_race_one_wins(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 1_000, 1).await;
    let events: Vec<_> = (0..200).map(|i| event(&c, &user(&c.id, i), 1, now_ms())).collect();
    let keys: Vec<_> = events.iter().map(|e| e.reservation_key()).collect();
    let (recorder, voider) = (store.clone(), store.clone());
    let evs = events.clone();
    let record = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for chunk in evs.chunks(20) {
            outcomes.extend(recorder.record(chunk).await.unwrap());
        }
        outcomes
    });
    let cid = c.id;
    let void = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for chunk in keys.chunks(15).rev() {
            let mut part = voider.void(&cid, chunk).await.unwrap();
            outcomes.splice(0..0, part.drain(..));
        }
        outcomes
    });
    let (recorded, voided) = (record.await.unwrap(), void.await.unwrap());
    let mut stored = 0;
    for (i, (r, v)) in recorded.iter().zip(&voided).enumerate() {
        match (r, v) {
            (RecordOutcome::Stored, VoidOutcome::Stored) => stored += 1,
            (RecordOutcome::Fenced { fence: Fence::Voided }, VoidOutcome::Voided) => {}
            other => panic!("event {i}: record and void disagree: {other:?}"),
        }
        let in_store = store.coupon(&events[i].coupon_id).await.unwrap().is_some();
        assert_eq!(in_store, matches!(v, VoidOutcome::Stored), "event {i}");
    }
    assert_eq!(store.issued_count(&c.id).await.unwrap(), stored);
    assert_eq!(store.voided_count(&c.id).await.unwrap(), 200 - stored);
}

/// The store never holds more coupons than the stock, whatever it is sent (F6); the
/// earlier events of a batch win.
pub async fn the_store_never_exceeds_the_stock(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 5, 1).await;
    let first: Vec<_> = (0..3).map(|i| event(&c, &user(&c.id, i), 1, now_ms())).collect();
    assert_eq!(store.record(&first).await.unwrap(), vec![RecordOutcome::Stored; 3]);
    let second: Vec<_> = (3..7).map(|i| event(&c, &user(&c.id, i), 1, now_ms())).collect();
    let exhausted = RecordOutcome::Fenced {
        fence: Fence::StockExhausted,
    };
    assert_eq!(
        store.record(&second).await.unwrap(),
        vec![
            RecordOutcome::Stored,
            RecordOutcome::Stored,
            exhausted.clone(),
            exhausted.clone()
        ]
    );
    assert_eq!(store.issued_count(&c.id).await.unwrap(), 5);
    assert_eq!(store.coupon(&second[2].coupon_id).await.unwrap(), None);
    // Redeliveries of stored coupons are still duplicates, not refused.
    assert_eq!(store.record(&first).await.unwrap(), vec![RecordOutcome::Duplicate; 3]);
    // Concurrent batches cannot overshoot either.
    let c = stored_campaign(&*store, 50, 1).await;
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            let batch: Vec<_> = (0..40)
                .map(|i| event(&c, &user(&c.id, t * 40 + i), 1, now_ms()))
                .collect();
            tokio::spawn(async move { store.record(&batch).await.unwrap() })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap().iter().filter(|o| **o == RecordOutcome::Stored).count();
    }
    assert_eq!(stored, 50);
    assert_eq!(store.issued_count(&c.id).await.unwrap(), 50);
}

/// An admission number is stored at most once per campaign (F4): a second coupon with
/// the same number, before or in the same batch, is `sequence_reused` and writes
/// nothing; a redelivery stays a duplicate; events without a number never collide; the
/// same number in another campaign is fine.
pub async fn admission_numbers_are_stored_once(store: Arc<dyn IssueStore>) {
    let (c, other) = (
        stored_campaign(&*store, 10, 1).await,
        stored_campaign(&*store, 10, 1).await,
    );
    let t = now_ms();
    let numbered = |c: &Campaign, u: usize, seq: u64| event(c, &user(&c.id, u), 1, t).with_admission_seq(seq);
    let first = numbered(&c, 0, 1);
    assert_eq!(
        store.record(std::slice::from_ref(&first)).await.unwrap(),
        vec![RecordOutcome::Stored]
    );
    let reused = RecordOutcome::Fenced {
        fence: Fence::SequenceReused,
    };
    let batch = vec![
        first.clone(),
        numbered(&c, 1, 1),
        numbered(&c, 2, 2),
        numbered(&c, 3, 2),
        event(&c, &user(&c.id, 4), 1, t),
        event(&c, &user(&c.id, 5), 1, t),
        numbered(&other, 0, 1),
    ];
    assert_eq!(
        store.record(&batch).await.unwrap(),
        vec![
            RecordOutcome::Duplicate,
            reused.clone(),
            RecordOutcome::Stored,
            reused,
            RecordOutcome::Stored,
            RecordOutcome::Stored,
            RecordOutcome::Stored,
        ]
    );
    for fenced in [&batch[1], &batch[3]] {
        assert_eq!(store.coupon(&fenced.coupon_id).await.unwrap(), None);
    }
    assert_eq!(store.issued_count(&c.id).await.unwrap(), 4);
    assert_eq!(store.highest_admission_seq(&c.id).await.unwrap(), 2);
    assert_eq!(store.highest_admission_seq(&other.id).await.unwrap(), 1);
    let empty = stored_campaign(&*store, 1, 1).await;
    assert_eq!(store.highest_admission_seq(&empty.id).await.unwrap(), 0);
}

/// The pending notices from just below the least of `ids` to the greatest, read in
/// pages of `page`, checking the order. (Coupon ids are time-ordered, so a shared
/// database's other coupons are mostly outside the range.)
async fn pending_around(store: &dyn IssueStore, ids: &[CouponId], page: usize) -> Vec<PendingNotices> {
    let (Some(least), Some(greatest)) = (ids.iter().min(), ids.iter().max()) else {
        return Vec::new();
    };
    let start = CouponId::from_uuid(uuid::Uuid::from_u128(least.as_uuid().as_u128() - 1));
    let mut all: Vec<PendingNotices> = Vec::new();
    loop {
        let after = all.last().map_or(start, |p| p.coupon.id);
        let next = store.pending_notices(Some(after), page).await.unwrap();
        assert!(next.len() <= page, "a page holds at most its limit");
        assert!(
            next.first().is_none_or(|p| p.coupon.id > after),
            "a page starts after its cursor"
        );
        let done = next.len() < page || next.last().is_some_and(|p| p.coupon.id >= *greatest);
        all.extend(next);
        if done {
            break;
        }
    }
    let order: Vec<CouponId> = all.iter().map(|p| p.coupon.id).collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "pending notices come in coupon id order"
    );
    all
}

/// The pending notices of the coupons in `ids` (other tests may share the store).
async fn pending_of(store: &dyn IssueStore, ids: &[CouponId]) -> Vec<(CouponId, Vec<Notice>)> {
    let mut mine: Vec<(CouponId, Vec<Notice>)> = pending_around(store, ids, 2)
        .await
        .into_iter()
        .filter(|p| ids.contains(&p.coupon.id))
        .map(|p| (p.coupon.id, p.notices))
        .collect();
    mine.sort();
    mine
}

/// A stored coupon has its "stored" notice pending until it is cleared; what was not
/// stored (rejected, voided, beyond the stock) has none.
pub async fn stored_coupons_have_a_notice_pending_until_cleared(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 3, 1).await;
    let t = now_ms();
    let events: Vec<_> = (0..5).map(|i| event(&c, &user(&c.id, i), 1, t)).collect();
    let voided = events[0].reservation_key();
    store.void(&c.id, std::slice::from_ref(&voided)).await.unwrap();
    let mut rejected = event(&c, &user(&c.id, 9), 1, t);
    rejected.nth = 0;
    let mut batch = events.clone();
    batch.push(rejected.clone());
    store.record(&batch).await.unwrap();
    let stored: Vec<CouponId> = events[1..4].iter().map(|e| e.coupon_id).collect();
    let all: Vec<CouponId> = batch.iter().map(|e| e.coupon_id).collect();
    let mut expected: Vec<(CouponId, Vec<Notice>)> = stored.iter().map(|id| (*id, vec![Notice::Stored])).collect();
    expected.sort();
    assert_eq!(pending_of(&*store, &all).await, expected, "exactly the stored coupons");
    let page = pending_around(&*store, &stored, 100).await;
    let read = page.iter().find(|p| p.coupon.id == stored[0]).expect("pending");
    assert_eq!(Some(&read.coupon), store.coupon(&stored[0]).await.unwrap().as_ref());

    store.clear_notices(Notice::Stored, &stored[..2]).await.unwrap();
    assert_eq!(
        pending_of(&*store, &all).await,
        vec![(stored[2], vec![Notice::Stored])],
        "cleared notices are gone, the rest stay"
    );
    store.clear_notices(Notice::Stored, &stored).await.unwrap();
    store.clear_notices(Notice::Stored, &stored).await.unwrap();
    assert!(pending_of(&*store, &all).await.is_empty(), "clearing is idempotent");
    store.record(&events).await.unwrap();
    assert!(pending_of(&*store, &all).await.is_empty(), "a replay raises nothing");
}

/// A redemption raises the "redeemed" notice with it; clearing one notice keeps the other.
pub async fn a_redemption_raises_its_notice_and_clearing_one_keeps_the_other(store: Arc<dyn IssueStore>) {
    let c = stored_campaign(&*store, 5, 1).await;
    let u = user(&c.id, 0);
    let t = now_ms();
    let (early, late) = (event(&c, &u, 1, t), event(&c, &user(&c.id, 1), 1, t));
    store.record(&[early.clone(), late.clone()]).await.unwrap();
    let ids = [early.coupon_id, late.coupon_id];
    store.clear_notices(Notice::Stored, &[early.coupon_id]).await.unwrap();
    let redeem = |e: &crate::domain::IssueEvent| Redemption {
        coupon_id: e.coupon_id,
        user_id: e.user_id.clone(),
        order_id: "order-7".into(),
        order_amount: 1,
        at: t,
    };
    for e in [&early, &late] {
        assert!(matches!(
            store.redeem(&redeem(e)).await.unwrap(),
            RedeemOutcome::Redeemed { .. }
        ));
    }
    let mut expected = vec![
        (early.coupon_id, vec![Notice::Redeemed]),
        (late.coupon_id, vec![Notice::Stored, Notice::Redeemed]),
    ];
    expected.sort();
    assert_eq!(pending_of(&*store, &ids).await, expected);
    let redeemed = pending_around(&*store, &ids, 100).await;
    let read = redeemed
        .iter()
        .find(|p| p.coupon.id == late.coupon_id)
        .expect("pending");
    assert_eq!(read.coupon.state, CouponState::Redeemed, "the coupon as it is now");
    assert_eq!(read.coupon.order_id.as_deref(), Some("order-7"));

    store.clear_notices(Notice::Redeemed, &ids).await.unwrap();
    assert_eq!(
        pending_of(&*store, &ids).await,
        vec![(late.coupon_id, vec![Notice::Stored])],
        "clearing \"redeemed\" keeps a \"stored\" not yet delivered"
    );
    store.clear_notices(Notice::Stored, &ids).await.unwrap();
    assert!(pending_of(&*store, &ids).await.is_empty());
    let other_order = Redemption {
        order_id: "order-8".into(),
        ..redeem(&late)
    };
    assert!(
        !matches!(
            store.redeem(&other_order).await.unwrap(),
            RedeemOutcome::Redeemed { .. }
        ),
        "a refused redemption raises nothing"
    );
    assert!(pending_of(&*store, &ids).await.is_empty());
}
