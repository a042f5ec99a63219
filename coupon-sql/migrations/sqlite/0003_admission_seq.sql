-- Protocol v2, part 2: the gate numbers admissions per campaign and each event carries
-- its number. A number stored twice for a campaign proves the gate went back in time
-- (a restart from an older snapshot, a failover to a lagging replica): record() then
-- fences the second coupon (sequence_reused) and the recorder fences the campaign in
-- the gate until a sync. Coupons from before have no number (NULL never collides).
ALTER TABLE coupon_coupons ADD COLUMN admission_seq INTEGER;

CREATE UNIQUE INDEX coupon_coupons_admission_seq ON coupon_coupons (campaign_id, admission_seq);
