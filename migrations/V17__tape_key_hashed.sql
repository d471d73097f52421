-- The tape's natural key, narrower (issue 28: BENCHMARKS.md, "A narrower natural key"). The
-- V6 key held every field of it — token, match time, price, size, side and the 33-byte hash
-- — about 80 bytes an index entry; and because each token's rows arrive at the end of its
-- own stretch of the index, every page split leaves a half-full page behind for good: 132
-- bytes of index a trade while a month is live, more than the row itself. The key is now
-- (token, match time, a 64-bit hash of the rest), 32 bytes an entry.
--
-- What it keeps: the same trades collide. Numbers are hashed in a canonical form
-- (trim_scale: 0.50 and 0.5 are one price, as numeric equality has it), a missing hash as an
-- empty one (NULLS NOT DISTINCT before). What it gives up: two different trades of one token
-- in the same millisecond whose other fields hash alike would be stored once — a chance of
-- 2^-64 (5e-20) for each such pair. The token and time stay leading columns, so the backfill's
-- and the chain's lookups (a token's hour of rows) and readers' "by asset and time" are
-- served as before. An expression index: no column is added to the rows, and nothing that
-- writes the tape changes (ON CONFLICT DO NOTHING takes any unique index).
CREATE UNIQUE INDEX trade_tape_key ON trade_tape (token, traded_at, (
    pg_catalog.hashtextextended(
        pg_catalog.trim_scale(price)::text || '/' || pg_catalog.trim_scale(size)::text || '/'
        || is_buy::text || '/' || coalesce(pg_catalog.encode(tx, 'hex'), ''),
        0)));
DROP INDEX trade_tape_natural_key;
