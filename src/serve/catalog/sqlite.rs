//! The default catalog store: one SQLite file (`catalog.data_dir`/
//! `catalog.sqlite3`) in WAL mode with `synchronous = FULL`, so a write is
//! on disk when its transaction commits, and readers never block the writer.
//! One connection behind a mutex: writes are serial anyway, and the store is
//! read only at start-up and by ingestion (requests, `GET`s included, are
//! served from the in-memory index).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection};

use super::store::{CatalogItem, CatalogStore, CatalogStoreError, PendingItem, StoredItem};

pub const FILE_NAME: &str = "catalog.sqlite3";

pub struct SqliteStore {
    connection: Mutex<Connection>,
    path: PathBuf,
}

const SCHEMA: &str = "
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
";

impl SqliteStore {
    /// Opens (or creates) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, CatalogStoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| CatalogStoreError::Io { path: data_dir.to_path_buf(), source })?;
        let path = data_dir.join(FILE_NAME);
        let connection = Connection::open(&path)?;
        let mode: String = connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "the catalog store could not use WAL mode; writes stay durable");
        }
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        Ok(Self { connection: Mutex::new(connection), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(id: &str, blob: &[u8]) -> Result<Vec<f32>, CatalogStoreError> {
    if !blob.len().is_multiple_of(4) {
        return Err(CatalogStoreError::Corrupt { id: id.to_string(), what: "embedding" });
    }
    Ok(blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

const SELECT: &str = "SELECT id, text, price, available, attributes, embedding, encoder FROM items";

fn read_row(row: &rusqlite::Row<'_>, encoder: &str) -> rusqlite::Result<Result<StoredItem, CatalogStoreError>> {
    let id: String = row.get(0)?;
    let attributes: Option<String> = row.get(4)?;
    let blob: Option<Vec<u8>> = row.get(5)?;
    let made_by: Option<String> = row.get(6)?;
    let attributes = match attributes.map(|a| serde_json::from_str(&a)) {
        None => serde_json::Value::Null,
        Some(Ok(value)) => value,
        Some(Err(_)) => return Ok(Err(CatalogStoreError::Corrupt { id, what: "attributes" })),
    };
    let embedding = match (blob, made_by.as_deref() == Some(encoder)) {
        (Some(blob), true) => match from_blob(&id, &blob) {
            Ok(vector) => Some(vector),
            Err(e) => return Ok(Err(e)),
        },
        _ => None,
    };
    let item = CatalogItem {
        id,
        text: row.get(1)?,
        price: row.get::<_, Option<f64>>(2)?.map(|p| p as f32),
        available: row.get(3)?,
        attributes,
    };
    Ok(Ok(StoredItem { item, embedding }))
}

impl CatalogStore for SqliteStore {
    fn upsert(&self, items: &[CatalogItem]) -> Result<(), CatalogStoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        {
            let next: i64 = tx.query_row("SELECT COALESCE(MAX(written), 0) + 1 FROM items", [], |r| r.get(0))?;
            // A changed text clears the embedding; an unchanged one keeps it.
            let mut upsert = tx.prepare_cached(
                "INSERT INTO items (id, text, price, available, attributes, embedding, encoder, written)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6)
                 ON CONFLICT (id) DO UPDATE SET
                   embedding = CASE WHEN items.text = excluded.text THEN items.embedding ELSE NULL END,
                   encoder = CASE WHEN items.text = excluded.text THEN items.encoder ELSE NULL END,
                   written = CASE WHEN items.text = excluded.text THEN items.written ELSE excluded.written END,
                   text = excluded.text, price = excluded.price, available = excluded.available,
                   attributes = excluded.attributes",
            )?;
            for (n, item) in items.iter().enumerate() {
                let attributes = (!item.attributes.is_null()).then(|| item.attributes.to_string());
                upsert.execute(params![
                    item.id,
                    item.text,
                    item.price.map(f64::from),
                    item.available,
                    attributes,
                    next + n as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn delete(&self, id: &str) -> Result<bool, CatalogStoreError> {
        Ok(self.lock().execute("DELETE FROM items WHERE id = ?1", [id])? > 0)
    }

    fn load_all(&self, encoder: &str) -> Result<Vec<StoredItem>, CatalogStoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!("{SELECT} ORDER BY written"))?;
        let rows = statement.query_map([], |row| read_row(row, encoder))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    fn forget_other_embeddings(&self, encoder: &str) -> Result<usize, CatalogStoreError> {
        Ok(self.lock().execute(
            "UPDATE items SET embedding = NULL, encoder = NULL WHERE embedding IS NOT NULL AND encoder IS NOT ?1",
            [encoder],
        )?)
    }

    fn pending(&self, limit: usize) -> Result<Vec<PendingItem>, CatalogStoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached("SELECT id, text FROM items WHERE embedding IS NULL ORDER BY written LIMIT ?1")?;
        let rows =
            statement.query_map(params![limit as i64], |row| Ok(PendingItem { id: row.get(0)?, text: row.get(1)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_embeddings(
        &self,
        encoder: &str,
        embedded: &[(PendingItem, Vec<f32>)],
    ) -> Result<Vec<String>, CatalogStoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let mut stored = Vec::with_capacity(embedded.len());
        {
            let mut update =
                tx.prepare_cached("UPDATE items SET embedding = ?1, encoder = ?2 WHERE id = ?3 AND text = ?4")?;
            for (item, vector) in embedded {
                if update.execute(params![to_blob(vector), encoder, item.id, item.text])? > 0 {
                    stored.push(item.id.clone());
                }
            }
        }
        tx.commit()?;
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, text: &str) -> CatalogItem {
        CatalogItem {
            id: id.into(),
            text: text.into(),
            price: Some(2.5),
            available: true,
            attributes: serde_json::json!({"colour": "red"}),
        }
    }

    /// One stored item, read back the way start-up reads the store.
    fn get(store: &SqliteStore, id: &str, encoder: &str) -> Option<StoredItem> {
        store.load_all(encoder).unwrap().into_iter().find(|s| s.item.id == id)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoprank-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn items_and_embeddings_survive_reopening_and_a_text_change_makes_an_item_pending() {
        let dir = temp_dir("reopen");
        {
            let store = SqliteStore::open(&dir).unwrap();
            store.upsert(&[item("a", "red mug"), item("b", "blue cup")]).unwrap();
            let pending = store.pending(10).unwrap();
            assert_eq!(pending.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
            let stored = store.set_embeddings("enc", &[(pending[0].clone(), vec![0.5, -1.0])]).unwrap();
            assert_eq!(stored, ["a"]);
        }
        let store = SqliteStore::open(&dir).unwrap();
        let a = get(&store, "a", "enc").unwrap();
        assert_eq!(a.item, item("a", "red mug"));
        assert_eq!(a.embedding, Some(vec![0.5, -1.0]));
        assert_eq!(get(&store, "a", "other encoder").unwrap().embedding, None, "another encoder's vector");
        assert_eq!(store.forget_other_embeddings("enc").unwrap(), 0);
        // Same text: the embedding stays; new text: it goes, and an embedding
        // computed for the old text is not stored over the new one.
        store.upsert(&[CatalogItem { price: Some(3.0), ..item("a", "red mug") }]).unwrap();
        assert!(get(&store, "a", "enc").unwrap().embedding.is_some());
        let old = PendingItem { id: "b".into(), text: "blue cup".into() };
        store.upsert(&[item("b", "navy cup")]).unwrap();
        assert!(store.set_embeddings("enc", &[(old, vec![1.0, 0.0])]).unwrap().is_empty());
        assert_eq!(store.pending(10).unwrap(), [PendingItem { id: "b".into(), text: "navy cup".into() }]);
        assert_eq!(store.forget_other_embeddings("new encoder").unwrap(), 1, "a's vector goes");
        assert_eq!(store.pending(10).unwrap().len(), 2);
        assert!(store.delete("a").unwrap());
        assert!(!store.delete("a").unwrap());
        assert_eq!(store.load_all("enc").unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
