//! The default store: one embedded SQLite file (`shoprank.sqlite3` in the
//! `store.url` directory) in WAL mode with `synchronous = FULL`, so a write
//! is on disk when its transaction commits, and readers never block the
//! writer. One connection behind a mutex: writes are serial anyway, and the
//! server reads the store only at start-up and for ingestion (requests,
//! `GET`s included, are served from memory).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, TransactionBehavior};

use super::catalog::{CatalogChange, CatalogItem, CatalogStore, PendingItem, StoredItem, CHANGES_KEPT_MS};
use super::event_log::{EventKind, EventStore, FeedbackEvent, VariantCount};
use super::{from_blob, now_ms, to_blob, Store, StoreError};

pub(crate) const FILE_NAME: &str = "shoprank.sqlite3";
/// Held (flock) while the schema is migrated.
const MIGRATION_LOCK_FILE: &str = "shoprank.sqlite3.migrating";
/// The file's name before it held events too; opened if it is there.
const FORMER_FILE_NAME: &str = "catalog.sqlite3";

mod migrations {
    refinery::embed_migrations!("src/store/migrations/sqlite");
}

pub struct SqliteStore {
    connection: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (or creates) the store in `data_dir` and migrates its schema.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io { path: data_dir.to_path_buf(), source })?;
        let former = data_dir.join(FORMER_FILE_NAME);
        let path =
            if former.exists() && !data_dir.join(FILE_NAME).exists() { former } else { data_dir.join(FILE_NAME) };
        // Processes (or threads) opening a new store together must not set
        // it up at once: refinery takes no lock, and SQLite's own locks cover
        // one statement, not "read the applied versions, then apply". The
        // lock is released when `lock` is dropped, on return.
        let lock_path = data_dir.join(MIGRATION_LOCK_FILE);
        let lock =
            std::fs::File::create(&lock_path).map_err(|source| StoreError::Io { path: lock_path.clone(), source })?;
        lock.lock().map_err(|source| StoreError::Io { path: lock_path, source })?;
        let mut connection = Connection::open(&path)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "the store could not use WAL mode; writes stay durable");
        }
        connection.pragma_update(None, "synchronous", "FULL")?;
        migrations::migrations::runner().run(&mut connection)?;
        drop(lock);
        Ok(Self { connection: Mutex::new(connection), path })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}

const SELECT: &str = "SELECT id, text, price, available, attributes, embedding, encoder FROM items";

/// Logs that `ids` changed, in the writing transaction, and forgets
/// changes older than [`CHANGES_KEPT_MS`].
fn log_changes<'a>(tx: &rusqlite::Transaction<'_>, ids: impl IntoIterator<Item = &'a str>) -> rusqlite::Result<()> {
    let now = now_ms();
    let mut insert = tx.prepare_cached("INSERT INTO catalog_changes (item_id, changed_ms) VALUES (?1, ?2)")?;
    for id in ids {
        insert.execute(params![id, now])?;
    }
    tx.execute("DELETE FROM catalog_changes WHERE changed_ms < ?1", [now - CHANGES_KEPT_MS])?;
    Ok(())
}

fn read_row(row: &rusqlite::Row<'_>, encoder: &str) -> rusqlite::Result<Result<StoredItem, StoreError>> {
    let id: String = row.get(0)?;
    let attributes: Option<String> = row.get(4)?;
    let blob: Option<Vec<u8>> = row.get(5)?;
    let made_by: Option<String> = row.get(6)?;
    let attributes = match attributes.map(|a| serde_json::from_str(&a)) {
        None => serde_json::Value::Null,
        Some(Ok(value)) => value,
        Some(Err(_)) => return Ok(Err(StoreError::Corrupt { id, what: "attributes" })),
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
    fn upsert(&self, items: &[CatalogItem]) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
        log_changes(&tx, items.iter().map(|item| item.id.as_str()))?;
        tx.commit()?;
        Ok(())
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = tx.execute("DELETE FROM items WHERE id = ?1", [id])? > 0;
        if found {
            log_changes(&tx, [id])?;
        }
        tx.commit()?;
        Ok(found)
    }

    fn load_each(&self, encoder: &str, each: &mut dyn FnMut(StoredItem)) -> Result<(), StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!("{SELECT} ORDER BY written"))?;
        let rows = statement.query_map([], |row| read_row(row, encoder))?;
        for row in rows {
            each(row??);
        }
        Ok(())
    }

    fn forget_other_embeddings(&self, encoder: &str) -> Result<usize, StoreError> {
        Ok(self.lock().execute(
            "UPDATE items SET embedding = NULL, encoder = NULL WHERE embedding IS NOT NULL AND encoder IS NOT ?1",
            [encoder],
        )?)
    }

    fn pending(&self, limit: usize) -> Result<Vec<PendingItem>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached("SELECT id, text FROM items WHERE embedding IS NULL ORDER BY written LIMIT ?1")?;
        let rows =
            statement.query_map(params![limit as i64], |row| Ok(PendingItem { id: row.get(0)?, text: row.get(1)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_embeddings(&self, encoder: &str, embedded: &[(PendingItem, Vec<f32>)]) -> Result<Vec<String>, StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
        log_changes(&tx, stored.iter().map(String::as_str))?;
        tx.commit()?;
        Ok(stored)
    }

    fn changes(&self, after_ms: i64) -> Result<(Vec<CatalogChange>, i64), StoreError> {
        let now = now_ms();
        let connection = self.lock();
        let mut statement = connection.prepare_cached(
            "SELECT seq, item_id, changed_ms FROM catalog_changes WHERE changed_ms > ?1 ORDER BY seq",
        )?;
        let rows = statement.query_map([after_ms], |row| {
            Ok(CatalogChange { seq: row.get(0)?, item_id: row.get(1)?, changed_ms: row.get(2)? })
        })?;
        Ok((rows.collect::<Result<_, _>>()?, now))
    }

    fn items(&self, ids: &[String], encoder: &str) -> Result<Vec<StoredItem>, StoreError> {
        let connection = self.lock();
        let mut out = Vec::with_capacity(ids.len());
        // SQLite binds at most 32,766 parameters per statement.
        for chunk in ids.chunks(1_000) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut statement = connection.prepare(&format!("{SELECT} WHERE id IN ({marks})"))?;
            let mut rows = statement.query(rusqlite::params_from_iter(chunk))?;
            while let Some(row) = rows.next()? {
                out.push(read_row(row, encoder)??);
            }
        }
        Ok(out)
    }
}

const EVENT_COLUMNS: &str = "event_id, user_id, item_id, kind, ts_ms, request_id, variant, quantity, price";

fn read_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<FeedbackEvent, StoreError>> {
    let event_id: String = row.get(0)?;
    let kind: String = row.get(3)?;
    let Some(kind) = EventKind::parse(&kind) else {
        return Ok(Err(StoreError::Corrupt { id: event_id, what: "event kind" }));
    };
    Ok(Ok(FeedbackEvent {
        event_id,
        user_id: row.get(1)?,
        item_id: row.get(2)?,
        kind,
        timestamp_ms: row.get(4)?,
        request_id: row.get(5)?,
        variant: row.get(6)?,
        quantity: row.get(7)?,
        price: row.get(8)?,
    }))
}

impl EventStore for SqliteStore {
    fn append(&self, batches: &[&[FeedbackEvent]]) -> Result<Vec<Vec<bool>>, StoreError> {
        let received = now_ms();
        let mut connection = self.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stored = Vec::with_capacity(batches.len());
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO events ({EVENT_COLUMNS}, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (event_id) DO NOTHING"
            ))?;
            for batch in batches {
                let mut new = Vec::with_capacity(batch.len());
                for e in *batch {
                    let inserted = insert.execute(params![
                        e.event_id,
                        e.user_id,
                        e.item_id,
                        e.kind.as_str(),
                        e.timestamp_ms,
                        e.request_id,
                        e.variant,
                        e.quantity,
                        e.price,
                        received
                    ])?;
                    new.push(inserted > 0);
                }
                stored.push(new);
            }
        }
        tx.commit()?;
        Ok(stored)
    }

    fn scan(&self, kinds: &[EventKind], each: &mut dyn FnMut(FeedbackEvent)) -> Result<(), StoreError> {
        let connection = self.lock();
        let kinds: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
        let mut statement = connection.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE kind IN ({}) ORDER BY ts_ms, seq",
            kinds.join(",")
        ))?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            each(read_event(row)??);
        }
        Ok(())
    }

    fn variant_counts(&self) -> Result<Vec<VariantCount>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT variant, kind, COUNT(*) FROM events WHERE variant IS NOT NULL GROUP BY variant, kind ORDER BY variant, kind",
        )?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (variant, kind, events) = row?;
            let kind =
                EventKind::parse(&kind).ok_or(StoreError::Corrupt { id: variant.clone(), what: "event kind" })?;
            out.push(VariantCount { variant, kind, events: events as u64 });
        }
        Ok(out)
    }

    fn event_count(&self) -> Result<u64, StoreError> {
        Ok(self.lock().query_row("SELECT COUNT(*) FROM events", [], |row| row.get::<_, i64>(0))? as u64)
    }

    fn erase_user(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let deleted = tx.execute("DELETE FROM events WHERE user_id = ?1", [user_id])?;
        tx.commit()?;
        Ok(deleted as u64)
    }
}
