-- The compact, partitioned tape (BENCHMARKS.md, "Storage"): a dictionary of tokens, trades
-- that reference it by a 4-byte id, hashes as 32 bytes instead of 66 characters, no
-- surrogate id, one unique index (the natural key, token first, so it also serves "by asset
-- and time") and a BRIN on time; monthly partitions, so last year's data goes with a DROP.
-- Readers keep the old shape: `trades` is now a view with the same columns.

CREATE TABLE tokens (
    id       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset_id text NOT NULL UNIQUE,
    market   text NOT NULL,
    -- The outcome this token stands for, when the markets table knew it at first sight.
    outcome  text
);

-- Column order packs the fixed-width columns first: no alignment padding.
CREATE TABLE trade_tape (
    traded_at    timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    token        integer NOT NULL,
    fee_rate_bps smallint,
    is_buy       boolean NOT NULL,
    -- 'f': the live feed; 'd': the Data API (a hole filled).
    source       "char" NOT NULL DEFAULT 'f' CHECK (source IN ('f', 'd')),
    price        numeric NOT NULL,
    size         numeric NOT NULL,
    tx           bytea
) PARTITION BY RANGE (traded_at);

-- Catches what no monthly partition holds (a trade from a month not prepared yet), so a
-- valid trade is never refused for its date; tape_ensure_month moves such rows out.
CREATE TABLE trade_tape_default PARTITION OF trade_tape DEFAULT;

-- The natural key: the feed has no trade id, so a repeat of the same event (a replay, a
-- retried batch, a recycle's overlap) collides here and is stored once.
CREATE UNIQUE INDEX trade_tape_natural_key
    ON trade_tape (token, traded_at, price, size, is_buy, tx) NULLS NOT DISTINCT;
CREATE INDEX trade_tape_time ON trade_tape USING brin (traded_at);

-- Every monthly partition polytape made, and what became of it.
CREATE TABLE tape_partitions (
    name          text PRIMARY KEY,
    month         date NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Its index rebuilt once the month was over (a live month's index is half empty).
    compacted_at  timestamptz,
    archived_at   timestamptz,
    archive_path  text,
    archive_rows  bigint,
    dropped_at    timestamptz
);

-- Makes the partition of the month holding `m` (UTC), moving into it whatever the default
-- partition holds for that month. Idempotent; safe from several instances at once. It runs
-- with the rights of the role that migrated (SECURITY DEFINER), so a writer role with only
-- INSERT and SELECT can still open a new month.
CREATE FUNCTION tape_ensure_month(m date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    first date := date_trunc('month', m)::date;
    lo timestamptz := first::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (first + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    part text := 'trade_tape_' || to_char(first, 'YYYY_MM');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('polytape: tape partitions'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE trade_tape INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format(
        'WITH moved AS (DELETE FROM trade_tape_default WHERE traded_at >= %L AND traded_at < %L
                        RETURNING *)
         INSERT INTO %I SELECT * FROM moved', lo, hi, part);
    EXECUTE format('ALTER TABLE trade_tape ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   part, lo, hi);
    INSERT INTO tape_partitions (name, month) VALUES (part, first)
        ON CONFLICT (name) DO UPDATE
        SET created_at = now(), compacted_at = NULL, archived_at = NULL, archive_path = NULL,
            archive_rows = NULL, dropped_at = NULL;
    RETURN true;
END $$;

-- The existing data: its months (and this month and the next two), its tokens, its trades.
SELECT tape_ensure_month(m::date)
FROM (SELECT DISTINCT date_trunc('month', traded_at AT TIME ZONE 'UTC') AS m FROM trades
      UNION
      SELECT date_trunc('month', now() AT TIME ZONE 'UTC') + k * interval '1 month'
      FROM generate_series(0, 2) k) months;

INSERT INTO tokens (asset_id, market, outcome)
SELECT DISTINCT ON (t.asset_id) t.asset_id, t.market,
       m.outcomes[array_position(m.token_ids, t.asset_id)]
FROM trades t LEFT JOIN markets m ON m.condition_id = t.market
WHERE (t.transaction_hash IS NULL OR t.transaction_hash ~ '^0x([0-9a-fA-F]{2})*$')
  AND (t.fee_rate_bps IS NULL OR t.fee_rate_bps BETWEEN -32768 AND 32767)
ORDER BY t.asset_id, t.traded_at;

-- A row the compact tape cannot hold exactly (a hash that is not hex, a fee out of range) is
-- kept in trades_rejected, never changed.
INSERT INTO trades_rejected (sqlstate, message, asset_id, market, price, size, side,
                             fee_rate_bps, traded_at, transaction_hash, received_at)
SELECT '22023', 'migration to the compact tape: transaction hash is not hex, or fee out of range',
       asset_id, market, price::text, size::text, side, fee_rate_bps, traded_at,
       transaction_hash, received_at
FROM trades
WHERE transaction_hash !~ '^0x([0-9a-fA-F]{2})*$'
   OR fee_rate_bps NOT BETWEEN -32768 AND 32767;

INSERT INTO trade_tape (traded_at, received_at, token, fee_rate_bps, is_buy, source, price,
                        size, tx)
SELECT t.traded_at, t.received_at, k.id, t.fee_rate_bps::smallint, t.side = 'BUY',
       CASE t.source WHEN 'data_api' THEN 'd' ELSE 'f' END, t.price, t.size,
       decode(substr(t.transaction_hash, 3), 'hex')
FROM trades t JOIN tokens k ON k.asset_id = t.asset_id
WHERE (t.transaction_hash IS NULL OR t.transaction_hash ~ '^0x([0-9a-fA-F]{2})*$')
  AND (t.fee_rate_bps IS NULL OR t.fee_rate_bps BETWEEN -32768 AND 32767);

DROP TABLE trades;

-- The readers' contract: the old columns, names and types.
CREATE VIEW trades AS
SELECT k.asset_id,
       k.market,
       t.price,
       t.size,
       CASE WHEN t.is_buy THEN 'BUY' ELSE 'SELL' END AS side,
       t.fee_rate_bps::integer AS fee_rate_bps,
       t.traded_at,
       '0x' || encode(t.tx, 'hex') AS transaction_hash,
       t.received_at,
       CASE t.source WHEN 'd' THEN 'data_api' ELSE 'feed' END AS source
FROM trade_tape t JOIN tokens k ON k.id = t.token;

-- INSERT INTO trades still works (one row at a time, for hand-made rows and old scripts;
-- polytape itself COPYs into trade_tape). A row already stored is skipped: the count says 0.
CREATE FUNCTION trades_insert() RETURNS trigger
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
            NEW.side = 'BUY', CASE NEW.source WHEN 'data_api' THEN 'd' ELSE 'f' END,
            NEW.price, NEW.size, decode(substr(NEW.transaction_hash, 3), 'hex'))
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER trades_insert INSTEAD OF INSERT ON trades
    FOR EACH ROW EXECUTE FUNCTION trades_insert();
