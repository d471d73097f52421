-- The full-resolution book tape's files (issue 18): one row per Parquet file, written once
-- the file is complete under its final name. A file covers [period_start, period_end) of
-- receive time and opens with a snapshot of every book held at its start.
CREATE TABLE book_files (
    path         text PRIMARY KEY,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    rows         bigint NOT NULL,
    assets       integer NOT NULL,
    bytes        bigint NOT NULL,
    sha256       text NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX book_files_period ON book_files (period_start);
