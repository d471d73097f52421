-- V14: how well a stored periodic cut was vouched for (issue 26, item 5). A cut is stored
-- once a fresh `book` from the exchange vouches for it, and only the levels nobody changed
-- between the cut and that book can be compared with it (a lost delta that a later change
-- at the same level repaired would otherwise pass unseen): `levels_unchecked` is how many
-- of the cut's levels were changed meanwhile, so not checked. 0: every level was checked
-- (a fresh book itself, or a cut nothing touched before its vouching book). Readers who
-- want only books checked level by level filter on it.
ALTER TABLE book_snapshot ADD COLUMN levels_unchecked integer NOT NULL DEFAULT 0;

CREATE OR REPLACE VIEW book_snapshots AS
SELECT k.asset_id, k.market, s.taken_at,
       l.bid_prices, l.bid_sizes, l.ask_prices, l.ask_sizes,
       l.bid_prices[1] AS best_bid, l.ask_prices[1] AS best_ask,
       CASE s.source WHEN 'f' THEN 'feed' ELSE 'rest' END AS source,
       s.blind_from,
       s.levels_unchecked
FROM book_snapshot s
JOIN tokens k ON k.id = s.token
CROSS JOIN LATERAL book_levels(s.levels) l;

-- A book tape period whose segment could not be written whole (a disk full mid-period): its
-- file is recorded with what went wrong and how many rows were lost, never as complete.
ALTER TABLE book_files ADD COLUMN write_error text;

-- The book side's months leave the database the way the tape's do (issue 26, item 12):
-- `polytape archive` writes each month of book_snapshot and price_bar to Parquet, recorded
-- here; `polytape retention` drops the months it keeps no more once archived (or when told
-- --no-archive), and removes the book tape's files of those months (book_files.removed_at).
CREATE TABLE side_partitions (
    name         text PRIMARY KEY,
    parent       text NOT NULL,
    month        date NOT NULL,
    archive_path text,
    archive_rows bigint,
    archived_at  timestamptz,
    dropped_at   timestamptz
);
ALTER TABLE book_files ADD COLUMN removed_at timestamptz;
