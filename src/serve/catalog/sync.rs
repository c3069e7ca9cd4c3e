//! Following the catalog when other processes write it: with several
//! replicas on one PostgreSQL, an item put through one replica must become
//! retrievable through all of them. Every `catalog.sync_secs` this thread
//! asks the store which items changed (the store logs each upsert, delete
//! and stored embedding), fetches those items as they are now, and applies
//! them to the in-memory index.
//!
//! The store's clock orders changes, but a transaction may commit a moment
//! after its change was stamped, so each poll looks back [`LOOK_BACK_MS`]
//! and skips the changes it has already applied (by sequence number).
//! Applying a change means "make the index hold the item as the store
//! holds it now", so applying one twice, or a replica's own write coming
//! back, does no harm.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::index::CatalogIndex;
use super::ingest::IngestSignal;
use crate::store::catalog::{CatalogItem, CatalogStore, StoredItem, CHANGES_KEPT_MS};
use crate::store::StoreError;

/// How far back each poll looks, for transactions that committed late.
pub(crate) const LOOK_BACK_MS: i64 = 30_000;

/// Items fetched and applied under one hold of the writing lock.
const SYNC_CHUNK: usize = 500;

/// Tells the sync thread to stop, waking it from its wait.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    pub(crate) fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Waits `timeout` or until stopped; true if stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (stopped, _) =
            self.wake.wait_timeout_while(stopped, timeout, |stopped| !*stopped).unwrap_or_else(|p| p.into_inner());
        *stopped
    }
}

pub(crate) struct CatalogSync {
    pub store: Arc<dyn CatalogStore>,
    pub index: Arc<CatalogIndex>,
    pub encoder_key: String,
    pub every: Duration,
    pub stop: Arc<StopSignal>,
    /// Woken when synced items still need an embedding.
    pub ingest: Arc<IngestSignal>,
    /// Held while applying, so local writes and synced ones do not interleave.
    pub writing: Arc<Mutex<()>>,
}

impl CatalogSync {
    /// Polls until stopped, from the store's clock `since_ms` on (read
    /// before the catalog was loaded, so nothing falls between).
    pub(crate) fn run(self, mut since_ms: i64) {
        let mut applied: HashMap<i64, i64> = HashMap::new();
        while !self.stop.wait(self.every) {
            match self.poll(since_ms, &mut applied) {
                Ok(now) => since_ms = now,
                Err(error) => tracing::warn!(%error, "following the catalog's changes failed; retrying"),
            }
        }
    }

    /// Applies the changes after `since_ms` not yet applied; returns the
    /// store's clock at the poll. Changes count as applied only once they
    /// are, so a failed poll is retried whole.
    fn poll(&self, since_ms: i64, applied: &mut HashMap<i64, i64>) -> Result<i64, StoreError> {
        let (changes, now) = self.store.changes(since_ms - LOOK_BACK_MS)?;
        if now - since_ms > CHANGES_KEPT_MS - LOOK_BACK_MS {
            // Behind by more than the store keeps: some changes are gone.
            self.reload_all()?;
            applied.clear();
            return Ok(now);
        }
        let fresh: Vec<_> = changes.into_iter().filter(|change| !applied.contains_key(&change.seq)).collect();
        let mut seen = HashSet::new();
        let ids: Vec<String> = fresh
            .iter()
            .filter(|change| seen.insert(change.item_id.as_str()))
            .map(|change| change.item_id.clone())
            .collect();
        for chunk in ids.chunks(SYNC_CHUNK) {
            self.apply(chunk)?;
        }
        applied.extend(fresh.iter().map(|change| (change.seq, change.changed_ms)));
        applied.retain(|_, changed| *changed > now - 2 * LOOK_BACK_MS);
        if !ids.is_empty() {
            tracing::debug!(items = ids.len(), "catalog changes from the store applied");
        }
        Ok(now)
    }

    /// Makes the index hold `ids` as the store holds them now. The writing
    /// lock is held per chunk, so local writes wait for one chunk at most.
    fn apply(&self, ids: &[String]) -> Result<(), StoreError> {
        let _one_writer = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let current: HashMap<String, _> =
            self.store.items(ids, &self.encoder_key)?.into_iter().map(|s| (s.item.id.clone(), s)).collect();
        // One write (one lexical commit) for the chunk's deletes and one for
        // its upserts: the ids are distinct, so their order does not matter.
        let gone: Vec<&str> = ids.iter().map(String::as_str).filter(|id| !current.contains_key(*id)).collect();
        self.index.delete_all(&gone);
        let changed: Vec<&StoredItem> = ids.iter().filter_map(|id| current.get(id)).collect();
        let items: Vec<CatalogItem> = changed.iter().map(|s| s.item.clone()).collect();
        self.index.upsert(&items);
        let mut pending = false;
        for stored in changed {
            let id = stored.item.id.as_str();
            match &stored.embedding {
                Some(vector) => {
                    let held = self.index.read().get(id).is_some_and(|(_, v)| v.is_some());
                    if !held {
                        self.index.set_vector(id, &stored.item.text, vector);
                    }
                }
                None => pending = true,
            }
        }
        if pending {
            // Items still waiting for an embedding: this replica may embed them too.
            self.ingest.notify();
        }
        Ok(())
    }

    /// Re-reads the whole catalog: every stored item is applied, and every
    /// held item the store no longer has is dropped.
    fn reload_all(&self) -> Result<(), StoreError> {
        tracing::warn!("this replica fell behind the catalog's change log; re-reading the whole catalog");
        let stored = self.store.load_all(&self.encoder_key)?;
        let ids: HashSet<&str> = stored.iter().map(|s| s.item.id.as_str()).collect();
        let gone: Vec<String> = self.index.read().ids().filter(|id| !ids.contains(id)).map(str::to_string).collect();
        for chunk in gone.chunks(SYNC_CHUNK) {
            let _one_writer = self.writing.lock().unwrap_or_else(|p| p.into_inner());
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            self.index.delete_all(&chunk);
        }
        for chunk in stored.chunks(SYNC_CHUNK) {
            let _one_writer = self.writing.lock().unwrap_or_else(|p| p.into_inner());
            let items: Vec<CatalogItem> = chunk.iter().map(|s| s.item.clone()).collect();
            self.index.upsert(&items);
            for item in chunk {
                let held = self.index.read().get(&item.item.id).is_some_and(|(_, v)| v.is_some());
                if let (Some(vector), false) = (&item.embedding, held) {
                    self.index.set_vector(&item.item.id, &item.item.text, vector);
                }
            }
        }
        Ok(())
    }
}
