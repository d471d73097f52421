-- Order-book snapshots (issue 18), the orderbooks collector's table, stored compactly: the
-- token's 4-byte id, and both sides' levels in one small binary value (`levels`, decoded by
-- book_levels below): prices and sizes as integers of a per-snapshot decimal unit, prices as
-- differences from the best, every number a variable-length integer. A typical book of ten
-- levels a side takes ~60 bytes of it instead of ~400 as numeric arrays. Partitioned by month
-- like the tape (tape_ensure_month makes its months, V13); the natural key makes a
-- repeat (a replayed spool, two sockets overlapping in a recycle) one row.
--
-- Readers' contract: the view book_snapshots.
CREATE TABLE book_snapshot (
    taken_at   timestamptz NOT NULL,
    -- When a resync's or reconnection's snapshot ends a window without a trusted book, the
    -- window's start (NULL otherwise): what `polytape audit` counts as blind minutes.
    blind_from timestamptz,
    token      integer NOT NULL,
    -- 'f': a book rebuilt from the feed; 'r': fetched from CLOB REST.
    source     "char" NOT NULL DEFAULT 'f' CHECK (source IN ('f', 'r')),
    levels     bytea NOT NULL
) PARTITION BY RANGE (taken_at);
CREATE TABLE book_snapshot_default PARTITION OF book_snapshot DEFAULT;
CREATE UNIQUE INDEX book_snapshot_key ON book_snapshot (token, taken_at, source);
CREATE INDEX book_snapshot_time ON book_snapshot USING brin (taken_at);

-- The levels of a snapshot, decoded: version byte 1, the price unit's and the size unit's
-- decimal places, the bid and ask counts, the bid prices (the best, then each one's distance
-- below the previous), the ask prices (the best, then each one's distance above), the bid
-- sizes, the ask sizes; every count, price and size an unsigned LEB128 integer.
CREATE FUNCTION book_levels(levels bytea,
    OUT bid_prices numeric[], OUT bid_sizes numeric[],
    OUT ask_prices numeric[], OUT ask_sizes numeric[])
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    pos int := 3;
    n_bids int;
    n_asks int;
    price_unit numeric;
    size_unit numeric;
    v bigint;
    shift int;
    b int;
    prev bigint;
    vals bigint[] := '{}';
    i int;
BEGIN
    IF get_byte(levels, 0) <> 1 THEN
        RAISE EXCEPTION 'book_levels: unknown encoding %', get_byte(levels, 0);
    END IF;
    price_unit := 10::numeric ^ (-get_byte(levels, 1));
    size_unit := 10::numeric ^ (-get_byte(levels, 2));
    -- Every integer of the value, in order.
    WHILE pos < length(levels) LOOP
        v := 0;
        shift := 0;
        LOOP
            b := get_byte(levels, pos);
            pos := pos + 1;
            v := v | ((b & 127)::bigint << shift);
            shift := shift + 7;
            EXIT WHEN b < 128;
        END LOOP;
        vals := vals || v;
    END LOOP;
    n_bids := vals[1];
    n_asks := vals[2];
    bid_prices := '{}'; bid_sizes := '{}'; ask_prices := '{}'; ask_sizes := '{}';
    prev := 0;
    FOR i IN 1..n_bids LOOP
        prev := CASE WHEN i = 1 THEN vals[2 + i] ELSE prev - vals[2 + i] END;
        bid_prices := bid_prices || trim_scale(prev * price_unit);
    END LOOP;
    FOR i IN 1..n_asks LOOP
        prev := CASE WHEN i = 1 THEN vals[2 + n_bids + i] ELSE prev + vals[2 + n_bids + i] END;
        ask_prices := ask_prices || trim_scale(prev * price_unit);
    END LOOP;
    FOR i IN 1..n_bids LOOP
        bid_sizes := bid_sizes || trim_scale(vals[2 + n_bids + n_asks + i] * size_unit);
    END LOOP;
    FOR i IN 1..n_asks LOOP
        ask_sizes := ask_sizes || trim_scale(vals[2 + 2 * n_bids + n_asks + i] * size_unit);
    END LOOP;
END $$;

-- The readers' contract (issue 18): one row per snapshot, levels best first.
CREATE VIEW book_snapshots AS
SELECT k.asset_id, k.market, s.taken_at,
       l.bid_prices, l.bid_sizes, l.ask_prices, l.ask_sizes,
       l.bid_prices[1] AS best_bid, l.ask_prices[1] AS best_ask,
       CASE s.source WHEN 'f' THEN 'feed' ELSE 'rest' END AS source,
       s.blind_from
FROM book_snapshot s
JOIN tokens k ON k.id = s.token
CROSS JOIN LATERAL book_levels(s.levels) l;
