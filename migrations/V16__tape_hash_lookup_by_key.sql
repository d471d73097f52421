-- A settled trade's hash is now looked up through the natural key, by its token and an hour
-- of match time before its block (issue 28: measured in BENCHMARKS.md, "A cheaper
-- transaction lookup"). The hash index of V8 cost about 39 bytes a trade (15% of the tape)
-- and 1.45× the insert time, for lookups the natural key serves within the hour a block may
-- trail its match.
DROP INDEX IF EXISTS trade_tape_tx;
