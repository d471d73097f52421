-- Trades the database refused for their data (classes 22 and 23): kept with the error, never
-- only logged. Values are text as they arrived, so a value the trades table refuses can
-- still be kept here.
CREATE TABLE trades_rejected (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rejected_at      timestamptz NOT NULL DEFAULT now(),
    sqlstate         text NOT NULL,
    message          text NOT NULL,
    asset_id         text,
    market           text,
    price            text,
    size             text,
    side             text,
    fee_rate_bps     integer,
    traded_at        timestamptz,
    transaction_hash text,
    received_at      timestamptz
);

-- One row per run of a listener: a run that never said it stopped, and whose heartbeat went
-- quiet, crashed; the tokens it held had no socket from its last sign of life on.
CREATE TABLE sessions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at       timestamptz NOT NULL DEFAULT now(),
    heartbeat_at     timestamptz NOT NULL DEFAULT now(),
    stopped_at       timestamptz,
    crashed          boolean NOT NULL DEFAULT false,
    host             text,
    pid              integer,
    spool_dir        text,
    asset_ids        text[] NOT NULL DEFAULT '{}',
    last_received_at timestamptz
);
CREATE INDEX sessions_open ON sessions (heartbeat_at) WHERE stopped_at IS NULL;

-- Gap records are replayed from the spool after a crash: a natural key stores each once. A
-- gap that covers every connection (a crashed session, a full spool) has no connection.
ALTER TABLE gaps ALTER COLUMN connection DROP NOT NULL;
DELETE FROM gaps a USING gaps b
 WHERE a.id > b.id AND a.connection IS NOT DISTINCT FROM b.connection
   AND a.from_ts = b.from_ts AND a.to_ts = b.to_ts AND a.reason = b.reason;
CREATE UNIQUE INDEX gaps_natural ON gaps (connection, from_ts, to_ts, reason) NULLS NOT DISTINCT;
