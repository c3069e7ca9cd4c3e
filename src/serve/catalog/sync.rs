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

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::index::CatalogIndex;
use super::ingest::IngestSignal;
use crate::store::catalog::CatalogStore;
use crate::store::StoreError;

/// How far back each poll looks, for transactions that committed late.
pub const LOOK_BACK_MS: i64 = 30_000;

/// Tells the sync thread to stop, waking it from its wait.
#[derive(Default)]
pub struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    pub fn stop(&self) {
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

pub struct CatalogSync {
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
    pub fn run(self, mut since_ms: i64) {
        let mut applied: HashMap<i64, i64> = HashMap::new();
        while !self.stop.wait(self.every) {
            match self.poll(since_ms, &mut applied) {
                Ok(now) => since_ms = now,
                Err(error) => tracing::warn!(%error, "following the catalog's changes failed; retrying"),
            }
        }
    }

    /// Applies the changes after `since_ms` not yet applied; returns the
    /// store's clock at the poll.
    fn poll(&self, since_ms: i64, applied: &mut HashMap<i64, i64>) -> Result<i64, StoreError> {
        let (changes, now) = self.store.changes(since_ms - LOOK_BACK_MS)?;
        let mut ids: Vec<String> = Vec::new();
        for change in changes {
            if applied.insert(change.seq, change.changed_ms).is_none() && !ids.contains(&change.item_id) {
                ids.push(change.item_id);
            }
        }
        applied.retain(|_, changed| *changed > since_ms - 2 * LOOK_BACK_MS);
        if ids.is_empty() {
            return Ok(now);
        }
        let _one_writer = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let current: HashMap<String, _> =
            self.store.items(&ids, &self.encoder_key)?.into_iter().map(|s| (s.item.id.clone(), s)).collect();
        let mut pending = false;
        for id in &ids {
            match current.get(id) {
                None => self.index.delete(id),
                Some(stored) => {
                    self.index.upsert(std::slice::from_ref(&stored.item));
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
            }
        }
        tracing::debug!(items = ids.len(), "catalog changes from the store applied");
        if pending {
            // Items still waiting for an embedding: this replica may embed them too.
            self.ingest.notify();
        }
        Ok(now)
    }
}
