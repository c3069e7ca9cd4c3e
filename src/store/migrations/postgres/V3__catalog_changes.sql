-- Which items changed when (written, embedded or deleted), so that every
-- replica can follow the catalog. Kept for an hour. The time is the
-- database's clock, the one clock all replicas share.
CREATE TABLE catalog_changes (
    seq        BIGSERIAL PRIMARY KEY,
    item_id    TEXT NOT NULL,
    changed_ms BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
);
CREATE INDEX catalog_changes_time ON catalog_changes (changed_ms);
