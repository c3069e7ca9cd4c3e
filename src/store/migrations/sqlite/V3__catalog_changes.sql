-- Which items changed when (written, embedded or deleted), so that other
-- processes on the same store can follow the catalog. Kept for an hour.
CREATE TABLE catalog_changes (
    seq        INTEGER PRIMARY KEY,
    item_id    TEXT NOT NULL,
    changed_ms INTEGER NOT NULL
);
CREATE INDEX catalog_changes_time ON catalog_changes (changed_ms);
