-- Minute price bars (issue 19), the prices collector's table, stored compactly: the token's
-- 4-byte id; the midpoint's open/high/low/close as twice the midpoint in millionths (a
-- midpoint of two six-decimal prices may need a seventh decimal: twice it never does), the
-- closing best bid and ask in millionths, all 4-byte integers; the trades of the minute as
-- the tape has them (count, shares, notional, last price), recomputed from the tape whenever
-- trades of that minute are added, so a second fill of the same gap changes nothing.
-- Monthly partitions, made by tape_ensure_month with the tape's and the snapshots'.
--
-- Readers' contract: the view price_bars. No row for a minute means nothing changed: carry
-- the previous close forward.
CREATE TABLE price_bar (
    minute           timestamptz NOT NULL,
    token            integer NOT NULL,
    -- 'l': built live from the trusted book; 'h': CLOB /prices-history, where the feed was blind.
    source           "char" NOT NULL DEFAULT 'l' CHECK (source IN ('l', 'h')),
    open2            integer,
    high2            integer,
    low2             integer,
    close2           integer,
    best_bid         integer,
    best_ask         integer,
    trades           integer NOT NULL DEFAULT 0,
    volume           numeric NOT NULL DEFAULT 0,
    notional         numeric NOT NULL DEFAULT 0,
    last_trade_price numeric
) PARTITION BY RANGE (minute);
CREATE TABLE price_bar_default PARTITION OF price_bar DEFAULT;
CREATE UNIQUE INDEX price_bar_key ON price_bar (token, minute);
CREATE INDEX price_bar_time ON price_bar USING brin (minute);

CREATE VIEW price_bars AS
SELECT k.asset_id, k.market, b.minute,
       trim_scale(b.open2 / 2000000.0) AS open,
       trim_scale(b.high2 / 2000000.0) AS high,
       trim_scale(b.low2 / 2000000.0) AS low,
       trim_scale(b.close2 / 2000000.0) AS close,
       trim_scale(b.best_bid / 1000000.0) AS best_bid,
       trim_scale(b.best_ask / 1000000.0) AS best_ask,
       b.last_trade_price, b.trades, b.volume, b.notional,
       CASE b.source WHEN 'l' THEN 'live' ELSE 'history' END AS source
FROM price_bar b JOIN tokens k ON k.id = b.token;

-- A month of storage, now for every partitioned table: the tape's, the snapshots' (V11) and
-- the bars'. Until this runs, snapshots wait in book_snapshot_default, as the tape's rows of
-- an unmade month do.
DO $migration$
DECLARE
    s text := pg_catalog.current_schema();
BEGIN
    EXECUTE pg_catalog.format($fn$
CREATE OR REPLACE FUNCTION %1$I.tape_ensure_month(m date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = %1$I, pg_temp AS $body$
DECLARE
    first date := pg_catalog.date_trunc('month', m)::date;
    lo timestamptz := first::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (first + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    part text := 'trade_tape_' || pg_catalog.to_char(first, 'YYYY_MM');
    other record;
    other_part text;
    made boolean := false;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('polytape: tape partitions'));
    FOR other IN SELECT * FROM (VALUES ('book_snapshot', 'taken_at'), ('price_bar', 'minute')) AS t(tbl, col) LOOP
        other_part := other.tbl || '_' || pg_catalog.to_char(first, 'YYYY_MM');
        CONTINUE WHEN pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %1$L, other_part)) IS NOT NULL;
        EXECUTE pg_catalog.format(
            'CREATE TABLE %%I.%%I (LIKE %%I.%%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
            %1$L, other_part, %1$L, other.tbl);
        EXECUTE pg_catalog.format(
            'WITH moved AS (DELETE FROM %%I.%%I WHERE %%I >= %%L AND %%I < %%L RETURNING *)
             INSERT INTO %%I.%%I SELECT * FROM moved',
            %1$L, other.tbl || '_default', other.col, lo, other.col, hi, %1$L, other_part);
        EXECUTE pg_catalog.format(
            'ALTER TABLE %%I.%%I ATTACH PARTITION %%I.%%I FOR VALUES FROM (%%L) TO (%%L)',
            %1$L, other.tbl, %1$L, other_part, lo, hi);
        made := true;
    END LOOP;
    IF pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %1$L, part)) IS NOT NULL THEN
        RETURN made;
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE TABLE %%I.%%I (LIKE %%I.trade_tape INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
        %1$L, part, %1$L);
    EXECUTE pg_catalog.format(
        'WITH moved AS (DELETE FROM %%I.trade_tape_default WHERE traded_at >= %%L AND traded_at < %%L
                        RETURNING *)
         INSERT INTO %%I.%%I SELECT * FROM moved', %1$L, lo, hi, %1$L, part);
    EXECUTE pg_catalog.format(
        'ALTER TABLE %%I.trade_tape ATTACH PARTITION %%I.%%I FOR VALUES FROM (%%L) TO (%%L)',
        %1$L, %1$L, part, lo, hi);
    INSERT INTO %1$I.tape_partitions (name, month) VALUES (part, first)
        ON CONFLICT (name) DO UPDATE
        SET created_at = pg_catalog.now(), compacted_at = NULL, dropped_at = NULL,
            late_rows_since = CASE WHEN tape_partitions.dropped_at IS NOT NULL
                                   THEN pg_catalog.now()
                                   ELSE tape_partitions.late_rows_since END;
    RETURN true;
END $body$
$fn$, s);
    EXECUTE pg_catalog.format(
        'REVOKE EXECUTE ON FUNCTION %I.tape_ensure_month(date) FROM PUBLIC', s);
    EXECUTE pg_catalog.format(
        'SELECT %I.tape_ensure_month(month) FROM %I.tape_partitions WHERE dropped_at IS NULL',
        s, s);
END
$migration$;
