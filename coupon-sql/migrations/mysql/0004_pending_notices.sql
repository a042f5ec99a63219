-- Post-processing hooks (coupon_core::hooks): the store is the outbox. pending_notice
-- holds the notices not yet delivered as bits: 1 "stored", 2 "redeemed". A new coupon
-- is born with 1 (the column default: record() writes nothing more), redeem() sets 2 in
-- the same statement, and the hook runner clears each bit it delivered; NULL is
-- nothing pending.
--
-- Coupons stored before this migration have nothing pending: an upgrade does not
-- notify the past. The column is added without a default first, so they keep NULL.
ALTER TABLE coupon_coupons ADD COLUMN pending_notice SMALLINT NULL;
ALTER TABLE coupon_coupons ALTER COLUMN pending_notice SET DEFAULT 1;

-- The runner reads pending coupons in id order (MySQL has no partial index: NULLs
-- sort first and are skipped by the range).
CREATE INDEX coupon_coupons_pending_notice ON coupon_coupons (pending_notice, id);
