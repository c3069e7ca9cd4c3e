//! The catalog half of the store: items as the storefront sends them, and
//! their embeddings.
//!
//! A write returns only once it is durable: an acknowledged upsert or
//! delete survives `kill -9`. Embeddings are stored beside their items,
//! tagged with the encoder that made them, so a restart loads them instead
//! of re-embedding, and a change of encoder (or of an item's text) makes
//! the item pending again.

use super::StoreError;

/// A product as the storefront sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogItem {
    pub id: String,
    pub text: String,
    pub price: Option<f32>,
    pub available: bool,
    /// Free JSON the storefront wants kept with the item (returned as given).
    pub attributes: serde_json::Value,
}

/// A stored item and its embedding, if it has been computed with the
/// encoder the store was asked about.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    pub item: CatalogItem,
    pub embedding: Option<Vec<f32>>,
}

/// An item waiting for its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingItem {
    pub id: String,
    pub text: String,
}

/// One change to the catalog, as [`CatalogStore::changes`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogChange {
    pub seq: i64,
    pub item_id: String,
    /// The store's clock, Unix milliseconds.
    pub changed_ms: i64,
}

/// How long changes are kept for [`CatalogStore::changes`]: a process that
/// falls further behind re-reads the whole catalog (`serve::catalog::sync`).
pub(crate) const CHANGES_KEPT_MS: i64 = 3_600_000;

/// The catalog's durable home. `encoder` names the encoder (its cache key)
/// whose embeddings count; others are treated as absent.
pub trait CatalogStore: Send + Sync {
    /// Inserts or replaces `items` in one transaction; an item whose text
    /// changed loses its embedding. Returns once durable.
    fn upsert(&self, items: &[CatalogItem]) -> Result<(), StoreError>;
    /// Removes an item; false if there was none. Returns once durable.
    fn delete(&self, id: &str) -> Result<bool, StoreError>;
    /// Every item, oldest write first, handed to `each` one at a time as
    /// it is read: building the in-memory index at start-up never holds
    /// every `f32` vector at once (1.5 GB at a million items).
    fn load_each(&self, encoder: &str, each: &mut dyn FnMut(StoredItem)) -> Result<(), StoreError>;
    /// Every item, oldest write first.
    fn load_all(&self, encoder: &str) -> Result<Vec<StoredItem>, StoreError> {
        let mut all = Vec::new();
        self.load_each(encoder, &mut |item| all.push(item))?;
        Ok(all)
    }
    /// Drops embeddings made by another encoder than `encoder` (the service
    /// changed encoders): those items become pending. Returns how many.
    fn forget_other_embeddings(&self, encoder: &str) -> Result<usize, StoreError>;
    /// Up to `limit` items without an embedding, oldest write first.
    fn pending(&self, limit: usize) -> Result<Vec<PendingItem>, StoreError>;
    /// Stores embeddings; an item whose text changed meanwhile is skipped
    /// (it is pending again with its new text). Returns the ids stored.
    fn set_embeddings(&self, encoder: &str, embedded: &[(PendingItem, Vec<f32>)]) -> Result<Vec<String>, StoreError>;
    /// Changes made (by any process) after `after_ms` on the store's clock,
    /// oldest first, and the store's clock now. Upserts, deletes and stored
    /// embeddings each log one change per item.
    fn changes(&self, after_ms: i64) -> Result<(Vec<CatalogChange>, i64), StoreError>;
    /// The items among `ids` that exist now (a deleted id is absent).
    fn items(&self, ids: &[String], encoder: &str) -> Result<Vec<StoredItem>, StoreError>;
}
