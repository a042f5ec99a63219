-- Reservation protocol v2: the store's fences (MySQL 8.0.16+ / MariaDB 10.2+ for CHECK).
--
-- coupon_campaigns.issued_count is the number of coupons stored for the campaign.
-- record() updates it in the same transaction as the coupons, holding the campaign
-- row's lock, and never lets it pass total_quantity; the CHECK makes "stored <= stock"
-- an invariant of the database itself.
--
-- On an existing database the count is backfilled from the coupons, capped at the
-- stock: a campaign already over-issued before this migration gets issued_count =
-- total_quantity (no further coupon fits), so adding the CHECK (which both servers
-- verify against existing rows) cannot fail. issued_count() keeps reporting COUNT(*).
ALTER TABLE coupon_campaigns ADD COLUMN issued_count BIGINT NOT NULL DEFAULT 0;

UPDATE coupon_campaigns k
JOIN (SELECT campaign_id, COUNT(*) AS n FROM coupon_coupons GROUP BY campaign_id) c ON c.campaign_id = k.id
SET k.issued_count = LEAST(c.n, k.total_quantity);

ALTER TABLE coupon_campaigns
    ADD CONSTRAINT coupon_campaigns_issued_within_stock
    CHECK (issued_count >= 0 AND issued_count <= total_quantity);

-- Voided admissions: the gate gave their stock back, so their events must never be
-- stored. void() writes them under the same campaign lock as record(), so a coupon id
-- is stored or voided, never both. No foreign key: a void may name a campaign the
-- store does not have.
CREATE TABLE coupon_voids (
    coupon_id    BINARY(16) NOT NULL PRIMARY KEY,
    campaign_id  BINARY(16) NOT NULL,
    user_id      VARCHAR(128) NOT NULL,
    nth          INT NOT NULL,
    voided_at    DATETIME(6) NOT NULL,
    KEY coupon_voids_by_campaign (campaign_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
