-- The catalog: items as the storefront sent them, and their embeddings.
CREATE TABLE IF NOT EXISTS items (
    id         TEXT PRIMARY KEY,
    text       TEXT NOT NULL,
    price      REAL,
    available  INTEGER NOT NULL,
    attributes TEXT,
    -- Little-endian f32s, and the encoder that made them.
    embedding  BLOB,
    encoder    TEXT,
    -- Write order: pending items are embedded oldest first.
    written    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS items_pending ON items (written) WHERE embedding IS NULL;
CREATE INDEX IF NOT EXISTS items_written ON items (written);
