-- Closed markets without a strict verdict yet (proposed, disputed, unreadable): asked again
-- with a doubling delay, up to a day, instead of every round forever.
CREATE TABLE resolution_attempts (
    condition_id    text PRIMARY KEY REFERENCES markets (condition_id),
    attempts        integer NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    last_reason     text NOT NULL
);
