-- Where the tape may have holes: the feed has no replay, so trades sent while a socket was
-- down are gone from it. One row per socket loss: the tokens it held, from the last data
-- frame before the loss to the moment they were subscribed again.
CREATE TABLE gaps (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection integer NOT NULL,
    from_ts    timestamptz NOT NULL,
    to_ts      timestamptz NOT NULL,
    reason     text NOT NULL,
    asset_ids  text[] NOT NULL
);

CREATE INDEX gaps_time ON gaps (from_ts, to_ts);
