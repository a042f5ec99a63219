-- Reservation protocol v2: the store's fences.
--
-- coupon_campaigns.issued_count is the number of coupons stored for the campaign.
-- record() updates it in the same (BEGIN IMMEDIATE) transaction as the coupons and
-- never lets it pass total_quantity; the CHECK makes "stored <= stock" an invariant of
-- the database itself.
--
-- On an existing database the count is backfilled from the coupons, capped at the
-- stock: a campaign already over-issued before this migration gets issued_count =
-- total_quantity (no further coupon fits), so the CHECK holds for every row.
-- issued_count() keeps reporting COUNT(*).
ALTER TABLE coupon_campaigns
    ADD COLUMN issued_count INTEGER NOT NULL DEFAULT 0
    CHECK (issued_count >= 0 AND issued_count <= total_quantity);

UPDATE coupon_campaigns
SET issued_count = MIN(
    total_quantity,
    (SELECT COUNT(*) FROM coupon_coupons c WHERE c.campaign_id = coupon_campaigns.id)
);

-- Voided admissions: the gate gave their stock back, so their events must never be
-- stored. void() writes them under the same write lock as record(), so a coupon id is
-- stored or voided, never both. No foreign key: a void may name a campaign the store
-- does not have.
CREATE TABLE coupon_voids (
    coupon_id    BLOB PRIMARY KEY,
    campaign_id  BLOB NOT NULL,
    user_id      TEXT NOT NULL,
    nth          INTEGER NOT NULL,
    voided_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX coupon_voids_by_campaign ON coupon_voids (campaign_id);
