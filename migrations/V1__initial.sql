-- polytape schema, version 1.
--
-- Prices and sizes are `numeric`: the feed sends exact decimal strings and a float would
-- silently change them.

CREATE TABLE markets (
    condition_id      text PRIMARY KEY,
    gamma_id          text,
    question          text,
    slug              text,
    outcomes          text[] NOT NULL DEFAULT '{}',
    -- Feed asset ids, index-aligned with `outcomes`.
    token_ids         text[] NOT NULL DEFAULT '{}',
    active            boolean NOT NULL DEFAULT false,
    closed            boolean NOT NULL DEFAULT false,
    accepting_orders  boolean NOT NULL DEFAULT false,
    enable_order_book boolean NOT NULL DEFAULT false,
    neg_risk          boolean NOT NULL DEFAULT false,
    end_date          timestamptz,
    version           text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The listener's question: "which tokens are open for trading right now?"
CREATE INDEX markets_open ON markets (condition_id)
    WHERE closed = false AND enable_order_book = true;

CREATE TABLE trades (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset_id         text NOT NULL,
    market           text NOT NULL,
    price            numeric NOT NULL,
    size             numeric NOT NULL,
    side             text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    fee_rate_bps     integer,
    traded_at        timestamptz NOT NULL,
    transaction_hash text,
    received_at      timestamptz NOT NULL DEFAULT now()
);

-- The natural key: the feed has no trade id, so a repeat of the same event (a replay after a
-- reconnect, a retried batch) must collide here and be stored once. Time first on purpose:
-- trades arrive in time order, so the index grows at its right edge instead of splitting
-- pages all over a tree keyed by 77-digit asset ids.
CREATE UNIQUE INDEX trades_natural_key
    ON trades (traded_at, asset_id, price, size, side, transaction_hash) NULLS NOT DISTINCT;

-- "By asset and time" (and "by market and time" through markets.token_ids, see README).
CREATE INDEX trades_asset_time ON trades (asset_id, traded_at);

CREATE TABLE resolutions (
    condition_id     text PRIMARY KEY REFERENCES markets (condition_id),
    kind             text NOT NULL CHECK (kind IN ('winner', 'split')),
    winning_token_id text,
    winning_outcome  text,
    -- For a split: the outcome prices as Gamma gave them.
    outcome_prices   text[],
    observed_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'winner') = (winning_token_id IS NOT NULL))
);
