-- Post-processing hooks (coupon_core::hooks): the store is the outbox. pending_notice
-- holds the notices not yet delivered as bits: 1 "stored", 2 "redeemed". A new coupon
-- is born with 1 (the column default: record() writes nothing more), redeem() sets 2 in
-- the same statement, and the hook runner clears each bit it delivered; NULL is
-- nothing pending.
--
-- Coupons stored before this migration have nothing pending: an upgrade does not
-- notify the past. SQLite gives existing rows a new column's default, so they are
-- cleared again.
ALTER TABLE coupon_coupons ADD COLUMN pending_notice INTEGER DEFAULT 1;
UPDATE coupon_coupons SET pending_notice = NULL;

-- The runner reads pending coupons in id order; the partial index holds only those.
CREATE INDEX coupon_coupons_pending_notice ON coupon_coupons (id) WHERE pending_notice IS NOT NULL;
