-- Campaigns and issued coupons (SQLite, the embedded default). Ids are 16-byte BLOB
-- UUIDs, times INTEGER microseconds since the Unix epoch (UTC), so comparisons in SQL
-- are numeric. UNIQUE (campaign_id, user_id, nth) is the last guard.
CREATE TABLE coupon_campaigns (
    id               BLOB PRIMARY KEY,
    name             TEXT NOT NULL,
    total_quantity   INTEGER NOT NULL CHECK (total_quantity > 0),
    per_user_limit   INTEGER NOT NULL CHECK (per_user_limit > 0),
    issue_starts_at  INTEGER NOT NULL,
    issue_ends_at    INTEGER NOT NULL,
    valid_until      INTEGER NULL,
    valid_days       INTEGER NULL,
    min_order_amount INTEGER NULL,
    discount         TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('draft', 'open', 'closed')),
    created_at       INTEGER NOT NULL
) STRICT;

CREATE TABLE coupon_coupons (
    id           BLOB PRIMARY KEY,
    campaign_id  BLOB NOT NULL REFERENCES coupon_campaigns (id),
    user_id      TEXT NOT NULL,
    nth          INTEGER NOT NULL CHECK (nth > 0),
    event_id     BLOB NOT NULL,
    issued_at    INTEGER NOT NULL,
    valid_until  INTEGER NOT NULL,
    state        TEXT NOT NULL DEFAULT 'issued' CHECK (state IN ('issued', 'redeemed')),
    redeemed_at  INTEGER NULL,
    order_id     TEXT NULL,
    UNIQUE (campaign_id, user_id, nth)
) STRICT;

CREATE INDEX coupon_coupons_by_user ON coupon_coupons (user_id, issued_at DESC);
