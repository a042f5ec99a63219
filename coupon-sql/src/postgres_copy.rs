//! New coupons as one binary `COPY` (PostgreSQL's `COPY ... FROM STDIN (FORMAT binary)`):
//! the fastest way the server takes rows, with no statement to parse and no per-row
//! conflict arbitration. `record` uses it under the campaigns' locks when every row would
//! be stored unless the store already holds it; a row it does hold fails the `COPY` with a
//! unique violation, and `record` starts the batch again by insert ([`crate::PgStore`]).
//!
//! The format (PostgreSQL docs, "COPY", "Binary Format"): a fixed header, per row a
//! 16-bit field count and each field as a 32-bit length (−1 for NULL) and its binary
//! value, then a 16-bit −1.

use chrono::{DateTime, TimeZone, Utc};
use coupon_core::IssueEvent;

use crate::common::seq_of;

/// The statement the rows of [`CouponRows`] are sent to, columns in the order they are written.
pub(crate) const COPY_COUPONS: &str = "COPY coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, \
     valid_until, admission_seq, pending_notice) FROM STDIN (FORMAT binary)";

/// Columns per row of [`COPY_COUPONS`].
const FIELDS: i16 = 9;

/// Signature, flags (no OIDs) and header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The rows of a binary `COPY` into `coupon_coupons`, built in memory.
pub(crate) struct CouponRows {
    buf: Vec<u8>,
}

impl CouponRows {
    /// Room for about `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER.len() + rows * 160 + 2);
        buf.extend_from_slice(HEADER);
        Self { buf }
    }

    /// Adds the coupon of `e`; `pending_notice` as `record` writes it.
    pub fn push(&mut self, e: &IssueEvent, pending_notice: Option<i16>) {
        self.buf.extend_from_slice(&FIELDS.to_be_bytes());
        self.field(e.coupon_id.as_uuid().as_bytes());
        self.field(e.campaign_id.as_uuid().as_bytes());
        self.field(e.user_id.as_str().as_bytes());
        self.field(&(e.nth as i32).to_be_bytes());
        self.field(e.event_id.as_uuid().as_bytes());
        self.field(&micros_since_2000(e.issued_at).to_be_bytes());
        self.field(&micros_since_2000(e.valid_until).to_be_bytes());
        match seq_of(e) {
            Some(seq) => self.field(&seq.to_be_bytes()),
            None => self.null(),
        }
        match pending_notice {
            Some(n) => self.field(&n.to_be_bytes()),
            None => self.null(),
        }
    }

    /// The finished `COPY` data.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }

    fn field(&mut self, value: &[u8]) {
        // Values here are at most a user id long, far below i32::MAX.
        self.buf.extend_from_slice(&(value.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(value);
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }
}

/// A `timestamptz` on the wire: microseconds since 2000-01-01 00:00:00 UTC.
fn micros_since_2000(t: DateTime<Utc>) -> i64 {
    let epoch = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid date");
    // Saturates past ±292,000 years, as far as PostgreSQL's range goes anyway.
    (t - epoch)
        .num_microseconds()
        .unwrap_or(if t > epoch { i64::MAX } else { i64::MIN })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_is_counted_in_microseconds_from_the_year_2000() {
        let t = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap() + chrono::Duration::microseconds(7);
        assert_eq!(micros_since_2000(t), 1_000_007);
        let before = Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(micros_since_2000(before), -1_000_000);
    }

    #[test]
    fn no_rows_is_a_header_and_a_trailer() {
        let data = CouponRows::with_capacity(0).finish();
        assert_eq!(&data[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(data.len(), 19 + 2);
        assert_eq!(&data[19..], &[0xff, 0xff]);
    }
}
