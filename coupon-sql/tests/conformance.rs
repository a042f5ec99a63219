//! The coupon-core store conformance suite on PostgreSQL, MariaDB (both ways of
//! finding new rows) and SQLite. It covers replays, overlapping concurrent batches,
//! 64 concurrent redemptions of one coupon, and invalid events.

mod common;

mod postgres {
    coupon_core::store_conformance!(super::common::postgres().await);
}

mod mysql {
    coupon_core::store_conformance!(super::common::mysql().await);
}

mod mysql_token_path {
    coupon_core::store_conformance!(super::common::mysql_token_path().await);
}

mod sqlite {
    coupon_core::store_conformance!(super::common::sqlite().await);
}

/// With stored notices off (the default), `record` writes coupons with nothing pending,
/// so the pending-notice index costs the insert nothing; a redemption raises its notice
/// either way.
mod stored_notices_off {
    use std::sync::Arc;

    use coupon_core::conformance::{event, now_ms, open_campaign, user};
    use coupon_core::{IssueStore, Notice, RedeemOutcome, Redemption};
    use coupon_sql::{MySqlStore, PgStore, SqliteStore, StoreConfig};
    use coupon_testkit::{Service, service, unique_name};

    async fn only_redemptions_raise_notices(store: Arc<dyn IssueStore>) {
        let c = open_campaign(5, 1);
        store.create_campaign(&c).await.unwrap();
        let t = now_ms();
        let events = [event(&c, &user(&c.id, 0), 1, t), event(&c, &user(&c.id, 1), 1, t)];
        store.record(&events).await.unwrap();
        let before =
            coupon_core::CouponId::from_uuid(uuid::Uuid::from_u128(events[0].coupon_id.as_uuid().as_u128() - 1));
        let pending_of_mine = || async {
            store
                .pending_notices(Some(before), 1_000)
                .await
                .unwrap()
                .into_iter()
                .filter(|p| events.iter().any(|e| e.coupon_id == p.coupon.id))
                .map(|p| (p.coupon.id, p.notices))
                .collect::<Vec<_>>()
        };
        assert!(
            pending_of_mine().await.is_empty(),
            "nothing pending for a stored coupon"
        );
        let r = Redemption {
            coupon_id: events[1].coupon_id,
            user_id: events[1].user_id.clone(),
            order_id: "order-off".into(),
            order_amount: 1,
            at: t,
        };
        assert!(matches!(
            store.redeem(&r).await.unwrap(),
            RedeemOutcome::Redeemed { .. }
        ));
        assert_eq!(
            pending_of_mine().await,
            vec![(events[1].coupon_id, vec![Notice::Redeemed])]
        );
    }

    #[tokio::test]
    async fn postgres() {
        let Some(url) = service(Service::Postgres).await else {
            return;
        };
        only_redemptions_raise_notices(Arc::new(PgStore::connect(&StoreConfig::from_url(url)).await.unwrap())).await;
    }

    #[tokio::test]
    async fn mysql() {
        let Some(url) = service(Service::Mysql).await else {
            return;
        };
        only_redemptions_raise_notices(Arc::new(
            MySqlStore::connect(&StoreConfig::from_url(url)).await.unwrap(),
        ))
        .await;
    }

    #[tokio::test]
    async fn sqlite() {
        let path = std::env::temp_dir().join(format!("{}.db", unique_name("coupon-notices-off")));
        let url = format!("sqlite://{}", path.display());
        only_redemptions_raise_notices(Arc::new(
            SqliteStore::connect(&StoreConfig::from_url(url)).await.unwrap(),
        ))
        .await;
    }
}
