-- Post-processing hooks (coupon_core::hooks): the store is the outbox. pending_notice
-- holds the notices not yet delivered as bits: 1 "stored", 2 "redeemed"; NULL is
-- nothing pending. record() writes 1 when the store raises stored notices
-- (StoreConfig::stored_notices, off by default), redeem() sets 2 in the same
-- statement, and the hook runner clears each bit it delivered. Coupons stored before
-- this migration have nothing pending: an upgrade does not notify the past.
ALTER TABLE coupon_coupons ADD COLUMN pending_notice SMALLINT NULL;

-- The runner reads pending coupons in id order. The partial index holds only those, so
-- with stored notices off a new coupon costs the insert nothing more.
CREATE INDEX coupon_coupons_pending_notice ON coupon_coupons (id) WHERE pending_notice IS NOT NULL;
