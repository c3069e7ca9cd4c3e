//! The store for several replicas: PostgreSQL through a bounded pool of
//! synchronous connections (`store.max_connections`, waiting at most
//! `store.connect_timeout_secs` for one). Each write is one transaction, so
//! it is durable when this returns; events go in with one `UNNEST` insert
//! per request batch, so a batch of 500 is one round trip.
//!
//! The client is synchronous (`postgres`): the store is called from the
//! ingestion and event-writer threads, the blocking pool and the CLI,
//! never from an async task.

use std::str::FromStr;

use ::postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;

use super::catalog::{CatalogChange, CatalogItem, CatalogStore, PendingItem, StoredItem, CHANGES_KEPT_MS};
use super::event_log::{EventKind, EventStore, FeedbackEvent, VariantCount};
use super::{from_blob, now_ms, to_blob, PoolLimits, Store, StoreError};

mod migrations {
    refinery::embed_migrations!("src/store/migrations/postgres");
}

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// The advisory lock key migrations run under ("shoprank" in ASCII).
const MIGRATION_LOCK: i64 = 0x73686f7072616e6b;

pub(crate) struct PostgresStore {
    /// Always `Some` until dropped (see `Drop`).
    pool: Option<Pool>,
    /// The URL without its password, for logs.
    described: String,
}

/// The synchronous client closes its connection with its own runtime's
/// `block_on`, which panics on a thread inside a tokio runtime (a server
/// shutting down drops the store there): the pool is dropped on a thread
/// of its own.
impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::Builder::new()
                .name("shoprank-store-close".into())
                .spawn(move || drop(pool))
                .map(|t| t.join());
        }
    }
}

impl PostgresStore {
    /// Connects, and migrates the schema (under an advisory lock, so
    /// replicas starting together migrate once).
    pub(crate) fn open(url: &str, limits: PoolLimits) -> Result<Self, StoreError> {
        let config = ::postgres::Config::from_str(url).map_err(|e| StoreError::Url(format!("store.url: {e}")))?;
        let described = describe(&config);
        let pool = r2d2::Pool::builder()
            .max_size(limits.max_connections)
            .min_idle(Some(0))
            .connection_timeout(limits.connect_timeout)
            .build(PostgresConnectionManager::new(config, NoTls))?;
        let mut client = pool.get()?;
        // Replicas starting together must not migrate at once (refinery
        // takes no lock): a session-level advisory lock makes them queue,
        // and the later ones find the schema current.
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let migrated = migrations::migrations::runner().run(&mut *client);
        client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])?;
        migrated?;
        drop(client);
        Ok(Self { pool: Some(pool), described })
    }

    fn client(&self) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>, StoreError> {
        Ok(self.pool.as_ref().expect("the pool lives until the store is dropped").get()?)
    }
}

fn describe(config: &::postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(::postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(::postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("postgres://{}@{host}:{port}/{}", config.get_user().unwrap_or(""), config.get_dbname().unwrap_or(""))
}

impl Store for PostgresStore {
    fn describe(&self) -> String {
        self.described.clone()
    }
}

const ITEM_COLUMNS: &str = "id, text, price, available, attributes, embedding, encoder";

fn read_item(row: &::postgres::Row, encoder: &str) -> Result<StoredItem, StoreError> {
    let id: String = row.try_get(0)?;
    let attributes = match row.try_get::<_, Option<String>>(4)?.map(|a| serde_json::from_str(&a)) {
        None => serde_json::Value::Null,
        Some(Ok(value)) => value,
        Some(Err(_)) => return Err(StoreError::Corrupt { id, what: "attributes" }),
    };
    let blob: Option<Vec<u8>> = row.try_get(5)?;
    let made_by: Option<String> = row.try_get(6)?;
    let embedding = match (blob, made_by.as_deref() == Some(encoder)) {
        (Some(blob), true) => Some(from_blob(&id, &blob)?),
        _ => None,
    };
    let item = CatalogItem {
        text: row.try_get(1)?,
        price: row.try_get::<_, Option<f64>>(2)?.map(|p| p as f32),
        available: row.try_get(3)?,
        attributes,
        id,
    };
    Ok(StoredItem { item, embedding })
}

/// Logs that `ids` changed, in the writing transaction (the database's
/// clock stamps them), and forgets changes older than [`CHANGES_KEPT_MS`].
fn log_changes(tx: &mut ::postgres::Transaction<'_>, ids: &[&str]) -> Result<(), ::postgres::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    tx.execute("INSERT INTO catalog_changes (item_id) SELECT UNNEST($1::text[])", &[&ids])?;
    tx.execute(
        "DELETE FROM catalog_changes
         WHERE changed_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1",
        &[&CHANGES_KEPT_MS],
    )?;
    Ok(())
}

impl CatalogStore for PostgresStore {
    fn upsert(&self, items: &[CatalogItem]) -> Result<(), StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        // A changed text clears the embedding; an unchanged one keeps it.
        let upsert = tx.prepare(
            "INSERT INTO items (id, text, price, available, attributes, embedding, encoder, written)
             VALUES ($1, $2, $3, $4, $5, NULL, NULL, nextval('items_write_order'))
             ON CONFLICT (id) DO UPDATE SET
               embedding = CASE WHEN items.text = excluded.text THEN items.embedding ELSE NULL END,
               encoder = CASE WHEN items.text = excluded.text THEN items.encoder ELSE NULL END,
               written = CASE WHEN items.text = excluded.text THEN items.written ELSE excluded.written END,
               text = excluded.text, price = excluded.price, available = excluded.available,
               attributes = excluded.attributes",
        )?;
        for item in items {
            let attributes = (!item.attributes.is_null()).then(|| item.attributes.to_string());
            tx.execute(&upsert, &[&item.id, &item.text, &item.price.map(f64::from), &item.available, &attributes])?;
        }
        log_changes(&mut tx, &items.iter().map(|item| item.id.as_str()).collect::<Vec<_>>())?;
        tx.commit()?;
        Ok(())
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        let found = tx.execute("DELETE FROM items WHERE id = $1", &[&id])? > 0;
        if found {
            log_changes(&mut tx, &[id])?;
        }
        tx.commit()?;
        Ok(found)
    }

    fn load_each(&self, encoder: &str, each: &mut dyn FnMut(StoredItem)) -> Result<(), StoreError> {
        let mut client = self.client()?;
        // Streamed row by row (a portal), not collected first.
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items ORDER BY written");
        let mut rows = client.query_raw(sql.as_str(), std::iter::empty::<&(dyn ::postgres::types::ToSql + Sync)>())?;
        while let Some(row) = ::postgres::fallible_iterator::FallibleIterator::next(&mut rows)? {
            each(read_item(&row, encoder)?);
        }
        Ok(())
    }

    fn forget_other_embeddings(&self, encoder: &str) -> Result<usize, StoreError> {
        let changed = self.client()?.execute(
            "UPDATE items SET embedding = NULL, encoder = NULL
             WHERE embedding IS NOT NULL AND encoder IS DISTINCT FROM $1",
            &[&encoder],
        )?;
        Ok(changed as usize)
    }

    fn pending(&self, limit: usize) -> Result<Vec<PendingItem>, StoreError> {
        let rows = self.client()?.query(
            "SELECT id, text FROM items WHERE embedding IS NULL ORDER BY written LIMIT $1",
            &[&(limit as i64)],
        )?;
        rows.iter().map(|row| Ok(PendingItem { id: row.try_get(0)?, text: row.try_get(1)? })).collect()
    }

    fn set_embeddings(&self, encoder: &str, embedded: &[(PendingItem, Vec<f32>)]) -> Result<Vec<String>, StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        let update = tx.prepare("UPDATE items SET embedding = $1, encoder = $2 WHERE id = $3 AND text = $4")?;
        let mut stored = Vec::with_capacity(embedded.len());
        for (item, vector) in embedded {
            if tx.execute(&update, &[&to_blob(vector), &encoder, &item.id, &item.text])? > 0 {
                stored.push(item.id.clone());
            }
        }
        log_changes(&mut tx, &stored.iter().map(String::as_str).collect::<Vec<_>>())?;
        tx.commit()?;
        Ok(stored)
    }

    fn changes(&self, after_ms: i64) -> Result<(Vec<CatalogChange>, i64), StoreError> {
        let mut client = self.client()?;
        let now: i64 =
            client.query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint", &[])?.try_get(0)?;
        let rows = client.query(
            "SELECT seq, item_id, changed_ms FROM catalog_changes WHERE changed_ms > $1 ORDER BY seq",
            &[&after_ms],
        )?;
        let changes = rows
            .iter()
            .map(|row| {
                Ok(CatalogChange { seq: row.try_get(0)?, item_id: row.try_get(1)?, changed_ms: row.try_get(2)? })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((changes, now))
    }

    fn items(&self, ids: &[String], encoder: &str) -> Result<Vec<StoredItem>, StoreError> {
        let rows = self.client()?.query(&format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = ANY($1)"), &[&ids])?;
        rows.iter().map(|row| read_item(row, encoder)).collect()
    }
}

const EVENT_COLUMNS: &str = "event_id, user_id, item_id, kind, ts_ms, request_id, variant, quantity, price";

impl EventStore for PostgresStore {
    fn append(&self, batches: &[&[FeedbackEvent]]) -> Result<Vec<Vec<bool>>, StoreError> {
        let received = now_ms();
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        let insert = tx.prepare(&format!(
            "INSERT INTO events ({EVENT_COLUMNS}, received_ms)
             SELECT e.*, $10 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[],
                                         $6::text[], $7::text[], $8::float8[], $9::float8[]) AS e
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id"
        ))?;
        let mut stored = Vec::with_capacity(batches.len());
        for batch in batches {
            let column = |f: fn(&FeedbackEvent) -> Option<String>| batch.iter().map(f).collect::<Vec<_>>();
            let ids = column(|e| Some(e.event_id.clone()));
            let users = column(|e| Some(e.user_id.clone()));
            let items = column(|e| Some(e.item_id.clone()));
            let kinds = column(|e| Some(e.kind.as_str().to_string()));
            let requests = column(|e| e.request_id.clone());
            let variants = column(|e| e.variant.clone());
            let times: Vec<i64> = batch.iter().map(|e| e.timestamp_ms).collect();
            let quantities: Vec<Option<f64>> = batch.iter().map(|e| e.quantity).collect();
            let prices: Vec<Option<f64>> = batch.iter().map(|e| e.price).collect();
            let rows = tx.query(
                &insert,
                &[&ids, &users, &items, &kinds, &times, &requests, &variants, &quantities, &prices, &received],
            )?;
            let mut inserted = std::collections::HashSet::with_capacity(rows.len());
            for row in &rows {
                inserted.insert(row.try_get::<_, String>(0)?);
            }
            // An id twice in one batch is inserted once: the first is new.
            stored.push(batch.iter().map(|e| inserted.remove(&e.event_id)).collect());
        }
        tx.commit()?;
        Ok(stored)
    }

    fn scan(&self, kinds: &[EventKind], each: &mut dyn FnMut(FeedbackEvent)) -> Result<(), StoreError> {
        use ::postgres::fallible_iterator::FallibleIterator;
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let mut client = self.client()?;
        // A read-only transaction keeps one snapshot; the portal streams rows
        // in pages, so a log of millions is never held twice.
        let mut tx = client.build_transaction().read_only(true).start()?;
        let query = format!("SELECT {EVENT_COLUMNS} FROM events WHERE kind = ANY($1) ORDER BY ts_ms, seq");
        let portal = tx.bind(query.as_str(), &[&kinds])?;
        loop {
            let mut rows = tx.query_portal_raw(&portal, 50_000)?;
            let mut seen = 0;
            while let Some(row) = rows.next()? {
                seen += 1;
                let event_id: String = row.try_get(0)?;
                let kind: String = row.try_get(3)?;
                let kind =
                    EventKind::parse(&kind).ok_or(StoreError::Corrupt { id: event_id.clone(), what: "event kind" })?;
                each(FeedbackEvent {
                    event_id,
                    user_id: row.try_get(1)?,
                    item_id: row.try_get(2)?,
                    kind,
                    timestamp_ms: row.try_get(4)?,
                    request_id: row.try_get(5)?,
                    variant: row.try_get(6)?,
                    quantity: row.try_get(7)?,
                    price: row.try_get(8)?,
                });
            }
            if seen == 0 {
                break;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn variant_counts(&self) -> Result<Vec<VariantCount>, StoreError> {
        let rows = self.client()?.query(
            "SELECT variant, kind, COUNT(*) FROM events WHERE variant IS NOT NULL
             GROUP BY variant, kind ORDER BY variant, kind",
            &[],
        )?;
        rows.iter()
            .map(|row| {
                let variant: String = row.try_get(0)?;
                let kind: String = row.try_get(1)?;
                let kind =
                    EventKind::parse(&kind).ok_or(StoreError::Corrupt { id: variant.clone(), what: "event kind" })?;
                Ok(VariantCount { variant, kind, events: row.try_get::<_, i64>(2)? as u64 })
            })
            .collect()
    }

    fn event_count(&self) -> Result<u64, StoreError> {
        Ok(self.client()?.query_one("SELECT COUNT(*) FROM events", &[])?.try_get::<_, i64>(0)? as u64)
    }

    fn erase_user(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        let deleted = tx.execute("DELETE FROM events WHERE user_id = $1", &[&user_id])?;
        tx.commit()?;
        Ok(deleted)
    }
}
