-- Post-processing hooks (coupon_core::hooks): the store is the outbox. pending_notice
-- holds the notices not yet delivered as bits: 1 "stored", 2 "redeemed"; NULL is
-- nothing pending. record() writes 1 when the store raises stored notices
-- (StoreConfig::stored_notices, off by default), redeem() sets 2 in the same
-- statement, and the hook runner clears each bit it delivered. Coupons stored before
-- this migration have nothing pending: an upgrade does not notify the past.
ALTER TABLE coupon_coupons ADD COLUMN pending_notice SMALLINT NULL;

-- The runner reads pending coupons in id order. MySQL and MariaDB have no partial index:
-- this one holds every row (NULLs sort first and are skipped by the range).
CREATE INDEX coupon_coupons_pending_notice ON coupon_coupons (pending_notice, id);
