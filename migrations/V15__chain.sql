-- The chain (issue 27): Polygon's OrderFilled logs are the settlement record. polytape reads
-- them up to `finalized`, adds what its tape lacks (source 'c', `chain` in the view), and
-- proves the tape equal to them per market and hour.

-- A third source. The constraint is dropped on every partition too: a partition made by
-- LIKE … INCLUDING CONSTRAINTS holds its own copy, which the parent's DROP leaves behind.
ALTER TABLE trade_tape DROP CONSTRAINT IF EXISTS trade_tape_source_check;
DO $$
DECLARE p regclass;
BEGIN
    FOR p IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'trade_tape'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS trade_tape_source_check', p);
    END LOOP;
END $$;
ALTER TABLE trade_tape ADD CONSTRAINT trade_tape_source_check CHECK (source IN ('f', 'd', 'c'));

CREATE OR REPLACE VIEW trades AS
SELECT k.asset_id,
       k.market,
       t.price,
       t.size,
       CASE WHEN t.is_buy THEN 'BUY' ELSE 'SELL' END AS side,
       t.fee_rate_bps::integer AS fee_rate_bps,
       t.traded_at,
       '0x' || encode(t.tx, 'hex') AS transaction_hash,
       t.received_at,
       CASE t.source WHEN 'd' THEN 'data_api' WHEN 'c' THEN 'chain' ELSE 'feed' END AS source
FROM trade_tape t JOIN tokens k ON k.id = t.token;

CREATE OR REPLACE FUNCTION trades_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tok integer;
    n integer;
BEGIN
    IF NEW.side IS NULL OR NEW.side NOT IN ('BUY', 'SELL') THEN
        RAISE check_violation USING MESSAGE = format('side must be BUY or SELL, not %L', NEW.side);
    END IF;
    IF NEW.transaction_hash !~ '^0x([0-9a-fA-F]{2})*$' THEN
        RAISE invalid_parameter_value
            USING MESSAGE = format('transaction_hash %L is not 0x and hex', NEW.transaction_hash);
    END IF;
    PERFORM tape_ensure_month((NEW.traded_at AT TIME ZONE 'UTC')::date);
    INSERT INTO tokens (asset_id, market) VALUES (NEW.asset_id, NEW.market)
        ON CONFLICT (asset_id) DO NOTHING;
    SELECT id INTO tok FROM tokens WHERE asset_id = NEW.asset_id;
    INSERT INTO trade_tape (traded_at, received_at, token, fee_rate_bps, is_buy, source, price,
                            size, tx)
    VALUES (NEW.traded_at, coalesce(NEW.received_at, now()), tok, NEW.fee_rate_bps,
            NEW.side = 'BUY',
            CASE NEW.source WHEN 'data_api' THEN 'd' WHEN 'chain' THEN 'c' ELSE 'f' END,
            NEW.price, NEW.size, decode(substr(NEW.transaction_hash, 3), 'hex'))
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

-- Where the reader got to: every log of blocks up to `block` is in chain_fills (or was, and
-- has been checked). One row per chain read ('polygon': the live reader).
CREATE TABLE chain_cursor (
    name        text PRIMARY KEY,
    block       bigint NOT NULL,
    block_time  timestamptz NOT NULL,
    -- The first block read: tape time before it (and the settlement lag after it) cannot be
    -- proven, since fills matched then settled before the reader began.
    first_block bigint NOT NULL,
    first_time  timestamptz NOT NULL,
    -- Tape time up to which chain_checks count (exclusive).
    checked_to  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The taker legs read and not yet counted into chain_checks: each fill once, on its taker
-- side. A row leaves once its tape time is checked, so the table holds minutes, not history.
CREATE TABLE chain_fills (
    block      bigint NOT NULL,
    log_index  integer NOT NULL,
    tx         bytea NOT NULL,
    asset_id   text NOT NULL,
    market     text NOT NULL,
    is_buy     boolean NOT NULL,
    -- Six-decimal units, exact.
    shares     bigint NOT NULL,
    usdc       bigint NOT NULL,
    block_time timestamptz NOT NULL,
    -- 'p' not compared yet, 'm' the tape has it, 'a' added to the tape from the chain,
    -- 'x' the tape has the transaction on this token with other shares or USDC.
    state      "char" NOT NULL DEFAULT 'p' CHECK (state IN ('p', 'm', 'a', 'x')),
    -- The tape row it is (its match time): the hour it is counted in.
    tape_at    timestamptz,
    -- Matched to a tape row without a hash (by asset, side, price, size and time).
    hashless   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (block, log_index)
);
CREATE INDEX chain_fills_tx ON chain_fills (tx);
-- The fills still to compare, in block order (the reader takes them a batch at a time).
CREATE INDEX chain_fills_pending ON chain_fills (block, log_index) WHERE state = 'p';

-- The proof, per market and hour of match time: what the chain settled, what the tape holds.
-- verified: every tape fill settled and every chain fill on the tape, with equal shares and
-- USDC per transaction and token. checked_from/checked_to: the part of the hour counted so
-- far (an hour is complete once checked_to reaches its end).
CREATE TABLE chain_checks (
    market       text NOT NULL,
    hour         timestamptz NOT NULL,
    chain_fills  integer NOT NULL DEFAULT 0,
    tape_fills   integer NOT NULL DEFAULT 0,
    added        integer NOT NULL DEFAULT 0,
    unsettled    integer NOT NULL DEFAULT 0,
    mismatched   integer NOT NULL DEFAULT 0,
    checked_from timestamptz NOT NULL,
    checked_to   timestamptz NOT NULL,
    checked_at   timestamptz NOT NULL DEFAULT now(),
    verified     boolean GENERATED ALWAYS AS
                     (chain_fills = tape_fills AND unsettled = 0 AND mismatched = 0) STORED,
    PRIMARY KEY (market, hour)
);

-- Tape trades the chain never settled: flagged here, never deleted from the tape.
CREATE TABLE chain_unsettled (
    asset_id         text NOT NULL,
    market           text NOT NULL,
    traded_at        timestamptz NOT NULL,
    price            numeric NOT NULL,
    size             numeric NOT NULL,
    side             text NOT NULL,
    transaction_hash text,
    source           text NOT NULL,
    found_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX chain_unsettled_key
    ON chain_unsettled (asset_id, traded_at, price, size, side, transaction_hash) NULLS NOT DISTINCT;
