-- Campaigns and issued coupons (MySQL 8 / MariaDB 10.5+). Ids are BINARY(16) UUIDs,
-- times DATETIME(6) in UTC. UNIQUE (campaign_id, user_id, nth) is the last guard.
CREATE TABLE coupon_campaigns (
    id               BINARY(16) NOT NULL PRIMARY KEY,
    name             VARCHAR(200) NOT NULL,
    total_quantity   BIGINT NOT NULL,
    per_user_limit   INT NOT NULL,
    issue_starts_at  DATETIME(6) NOT NULL,
    issue_ends_at    DATETIME(6) NOT NULL,
    valid_until      DATETIME(6) NULL,
    valid_days       INT NULL,
    min_order_amount BIGINT NULL,
    discount         VARCHAR(200) NOT NULL,
    state            VARCHAR(16) NOT NULL,
    created_at       DATETIME(6) NOT NULL,
    CHECK (total_quantity > 0),
    CHECK (per_user_limit > 0),
    CHECK (state IN ('draft', 'open', 'closed'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE coupon_coupons (
    id           BINARY(16) NOT NULL PRIMARY KEY,
    campaign_id  BINARY(16) NOT NULL,
    user_id      VARCHAR(128) NOT NULL,
    nth          INT NOT NULL,
    event_id     BINARY(16) NOT NULL,
    issued_at    DATETIME(6) NOT NULL,
    valid_until  DATETIME(6) NOT NULL,
    state        VARCHAR(16) NOT NULL DEFAULT 'issued',
    redeemed_at  DATETIME(6) NULL,
    order_id     VARCHAR(200) NULL,
    -- Which record() call inserted the row: lets MySQL (no RETURNING) tell new rows from old.
    record_token BINARY(16) NULL,
    UNIQUE KEY coupon_coupons_one_per_slot (campaign_id, user_id, nth),
    KEY coupon_coupons_by_user (user_id, issued_at),
    KEY coupon_coupons_by_token (record_token),
    CONSTRAINT coupon_coupons_campaign FOREIGN KEY (campaign_id) REFERENCES coupon_campaigns (id),
    CHECK (nth > 0),
    CHECK (state IN ('issued', 'redeemed'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
