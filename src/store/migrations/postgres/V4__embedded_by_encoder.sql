-- Every start-up drops the embeddings another encoder made
-- (forget_other_embeddings). Without an index that is a scan of the whole
-- table, vectors included: 5 s of a million-item restart on SQLite. Over
-- this small index it reads only the encoder names (0.16 s).
CREATE INDEX IF NOT EXISTS items_embedded_by_encoder ON items (encoder) WHERE embedding IS NOT NULL;
