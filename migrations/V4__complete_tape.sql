-- Where each trade came from: the live feed, or the Data API's settled tape (a filled hole).
ALTER TABLE trades ADD COLUMN source text NOT NULL DEFAULT 'feed'
    CHECK (source IN ('feed', 'data_api'));

-- What became of each hole: filled (when, how many trades it added), or still open (how many
-- tries, the last error, when to try again).
ALTER TABLE gaps
    ADD COLUMN filled_at       timestamptz,
    ADD COLUMN filled_trades   integer,
    ADD COLUMN fill_attempts   integer NOT NULL DEFAULT 0,
    ADD COLUMN fill_error      text,
    ADD COLUMN next_attempt_at timestamptz;
CREATE INDEX gaps_open ON gaps (to_ts) WHERE filled_at IS NULL;
