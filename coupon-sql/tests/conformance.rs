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
