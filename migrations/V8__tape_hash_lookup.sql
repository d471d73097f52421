-- The backfill looks a Data API trade's transaction hash up in the tape without a time bound:
-- a block can trail its match by far more than the seconds it usually does (a congested
-- chain, a retrying relayer), and a lookup by time alone took such a trade for missing and
-- stored it twice. A hash index keeps 4 bytes of hash code a row (the natural key, which
-- starts with the token and the time, cannot serve a lookup by hash).
CREATE INDEX trade_tape_tx ON trade_tape USING hash (tx);
