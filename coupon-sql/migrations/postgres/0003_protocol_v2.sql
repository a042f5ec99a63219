-- Reservation protocol v2: the store's fences.
--
-- coupon_campaigns.issued_count is the number of coupons stored for the campaign.
-- record() updates it in the same transaction as the coupons, holding the campaign
-- row's lock, and never lets it pass total_quantity; the CHECK makes "stored <= stock"
-- an invariant of the database itself.
--
-- On an existing database the count is backfilled from the coupons, capped at the
-- stock: a campaign already over-issued before this migration gets issued_count =
-- total_quantity (no further coupon fits), so the row still satisfies the CHECK and
-- can still be updated (closed, ...). issued_count() keeps reporting COUNT(*), the
-- true number. NOT VALID: the constraint is checked for every new or updated row
-- without scanning the existing ones now.
ALTER TABLE coupon_campaigns ADD COLUMN issued_count BIGINT NOT NULL DEFAULT 0;

UPDATE coupon_campaigns k
SET issued_count = LEAST(c.n, k.total_quantity)
FROM (SELECT campaign_id, COUNT(*) AS n FROM coupon_coupons GROUP BY campaign_id) c
WHERE c.campaign_id = k.id;

ALTER TABLE coupon_campaigns
    ADD CONSTRAINT coupon_campaigns_issued_within_stock
    CHECK (issued_count >= 0 AND issued_count <= total_quantity) NOT VALID;

-- Voided admissions: the gate gave their stock back, so their events must never be
-- stored. void() writes them under the same campaign lock as record(), so a coupon id
-- is stored or voided, never both. No foreign key: a void may name a campaign the
-- store does not have.
CREATE TABLE coupon_voids (
    coupon_id    UUID PRIMARY KEY,
    campaign_id  UUID NOT NULL,
    user_id      TEXT NOT NULL,
    nth          INTEGER NOT NULL,
    voided_at    TIMESTAMPTZ NOT NULL
);

CREATE INDEX coupon_voids_by_campaign ON coupon_voids (campaign_id);
