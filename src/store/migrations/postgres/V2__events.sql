-- Feedback events from the storefront. `seq` keeps arrival order, the
-- tie-break between events of the same timestamp.
CREATE TABLE events (
    seq         BIGSERIAL PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    ts_ms       BIGINT NOT NULL,
    request_id  TEXT,
    -- The A/B variant named by request_id, kept for the report.
    variant     TEXT,
    quantity    DOUBLE PRECISION,
    price       DOUBLE PRECISION,
    received_ms BIGINT NOT NULL
);
-- No other index: each one costs every insert, and the readers (a retrain,
-- the A/B report) scan the whole table anyway.
