-- Campaigns and issued coupons. The UNIQUE (campaign_id, user_id, nth) key is the
-- last guard against duplicates: with nth limited to 1..per_user_limit it enforces
-- the per-user limit in the database itself.
CREATE TABLE coupon_campaigns (
    id               UUID PRIMARY KEY,
    name             TEXT NOT NULL,
    total_quantity   BIGINT NOT NULL CHECK (total_quantity > 0),
    per_user_limit   INTEGER NOT NULL CHECK (per_user_limit > 0),
    issue_starts_at  TIMESTAMPTZ NOT NULL,
    issue_ends_at    TIMESTAMPTZ NOT NULL,
    valid_until      TIMESTAMPTZ NULL,
    valid_days       INTEGER NULL,
    min_order_amount BIGINT NULL,
    discount         TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('draft', 'open', 'closed')),
    created_at       TIMESTAMPTZ NOT NULL,
    CHECK (issue_ends_at > issue_starts_at),
    CHECK ((valid_until IS NULL) <> (valid_days IS NULL))
);

CREATE TABLE coupon_coupons (
    id           UUID PRIMARY KEY,
    campaign_id  UUID NOT NULL REFERENCES coupon_campaigns (id),
    user_id      TEXT NOT NULL,
    nth          INTEGER NOT NULL CHECK (nth > 0),
    event_id     UUID NOT NULL,
    issued_at    TIMESTAMPTZ NOT NULL,
    valid_until  TIMESTAMPTZ NOT NULL,
    state        TEXT NOT NULL DEFAULT 'issued' CHECK (state IN ('issued', 'redeemed')),
    redeemed_at  TIMESTAMPTZ NULL,
    order_id     TEXT NULL,
    CONSTRAINT coupon_coupons_one_per_slot UNIQUE (campaign_id, user_id, nth)
);

CREATE INDEX coupon_coupons_by_user ON coupon_coupons (user_id, issued_at DESC);
