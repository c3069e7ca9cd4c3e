-- The catalog: items as the storefront sent them, and their embeddings.
CREATE SEQUENCE items_write_order;
CREATE TABLE items (
    id         TEXT PRIMARY KEY,
    text       TEXT NOT NULL,
    price      DOUBLE PRECISION,
    available  BOOLEAN NOT NULL,
    attributes TEXT,
    -- Little-endian f32s, and the encoder that made them.
    embedding  BYTEA,
    encoder    TEXT,
    -- Write order: pending items are embedded oldest first.
    written    BIGINT NOT NULL
);
CREATE INDEX items_pending ON items (written) WHERE embedding IS NULL;
CREATE INDEX items_written ON items (written);
