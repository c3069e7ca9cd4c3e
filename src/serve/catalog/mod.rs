//! The catalog shoprank keeps: items a storefront puts through
//! `/v1/catalog/items`, stored durably (`crate::store`, SQLite by default),
//! embedded once in the background ([`ingest`]) and held in memory for
//! retrieval ([`index`]). `POST /recommend` without candidates retrieves
//! from it (see `serve::retrieve`).
//!
//! A write is acknowledged only after the store has committed it; the
//! in-memory index follows, then the ingestion thread is woken. Writes
//! made through other processes on the same store (replicas) reach the
//! index through [`sync`] within `catalog.sync_secs`. At start-up
//! the index is rebuilt from the store, stored embeddings included, so a
//! restart re-embeds nothing but the items still pending; above
//! `catalog.exact_scan_max` the inverted file's cells come from the file
//! beside an embedded store ([`ann`]), written back at shutdown, and the
//! lexical index is reopened from beside it and reconciled with the store
//! (`model::lexical`).

pub(crate) mod ann;
pub(crate) mod attributes;
pub(crate) mod index;
pub(crate) mod ingest;
pub(crate) mod sync;
pub(crate) mod vectors;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use self::index::{CatalogIndex, IndexOptions};
use self::ingest::{IngestSignal, IngestWorker};
use self::sync::{CatalogSync, StopSignal};
use crate::config::CatalogSettings;
use crate::serve::embed::Embedder;
use crate::serve::metrics::Metrics;
use crate::store::catalog::{CatalogItem, CatalogStore};
use crate::store::StoreError;

pub struct Catalog {
    store: Arc<dyn CatalogStore>,
    index: Arc<CatalogIndex>,
    /// One write at a time, store then index: the index applies writes in
    /// the order the store committed them, and the size check holds. The
    /// sync thread takes it too while it applies other processes' writes.
    writing: Arc<Mutex<()>>,
    signal: Arc<IngestSignal>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    stop_sync: Arc<StopSignal>,
    sync: Mutex<Option<std::thread::JoinHandle<()>>>,
    metrics: Metrics,
}

impl Catalog {
    /// A catalog over any store: loads the index, starts the ingestion
    /// thread. `saved_in`: the directory where the inverted file
    /// (`catalog.ivf`) and the lexical index (`lexical/`) are kept between
    /// restarts (an embedded store's; `None`: built at each start-up).
    pub(crate) fn with_store(
        store: Arc<dyn CatalogStore>,
        settings: &CatalogSettings,
        saved_in: Option<PathBuf>,
        embedder: Arc<Embedder>,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        let started = Instant::now();
        let encoder_key = embedder.encoder().embedding_key();
        let dim = embedder.encoder().dim();
        // The store's clock before loading: the sync thread follows changes
        // from here, so none falls between the load and the first poll.
        let (_, loaded_at) = store.changes(i64::MAX)?;
        let dropped = store.forget_other_embeddings(&encoder_key)?;
        if dropped > 0 {
            tracing::info!(items = dropped, encoder = %encoder_key, "catalog embeddings of another encoder dropped: re-embedding");
        }
        let options = IndexOptions {
            dim,
            exact_scan_max: settings.exact_scan_max,
            lexical: settings.lexical_index,
            ann_probe: settings.ann_probe,
            ann_file: saved_in.as_ref().map(|dir| dir.join("catalog.ivf")),
            lexical_dir: saved_in.as_ref().map(|dir| dir.join("lexical")),
            encoder_key: encoder_key.clone(),
        };
        let index = Arc::new(CatalogIndex::load(&options, |each| store.load_each(&encoder_key, each))?);
        let (items, embedded) = index.counts();
        tracing::info!(items, embedded, secs = started.elapsed().as_secs_f64(), "catalog loaded");
        metrics.catalog_items.set(items as i64);
        metrics.catalog_pending.set((items - embedded) as i64);
        let signal = Arc::new(IngestSignal::default());
        let writing = Arc::new(Mutex::new(()));
        let stop_sync = Arc::new(StopSignal::default());
        let sync = (settings.sync_secs > 0)
            .then(|| {
                let sync = CatalogSync {
                    store: store.clone(),
                    index: index.clone(),
                    encoder_key: encoder_key.clone(),
                    every: std::time::Duration::from_secs(settings.sync_secs),
                    stop: stop_sync.clone(),
                    ingest: signal.clone(),
                    writing: writing.clone(),
                };
                std::thread::Builder::new().name("shoprank-catalog-sync".into()).spawn(move || sync.run(loaded_at))
            })
            .transpose()
            .map_err(|source| StoreError::Io { path: "the catalog sync thread".into(), source })?;
        let worker = IngestWorker {
            store: store.clone(),
            index: index.clone(),
            embedder,
            encoder_key,
            batch: settings.ingest_batch_items,
            signal: signal.clone(),
            metrics: metrics.clone(),
        };
        let worker = std::thread::Builder::new()
            .name("shoprank-ingest".into())
            .spawn(move || worker.run())
            .map_err(|source| StoreError::Io { path: "the ingestion thread".into(), source })?;
        Ok(Self {
            store,
            index,
            writing,
            signal,
            worker: Mutex::new(Some(worker)),
            stop_sync,
            sync: Mutex::new(sync),
            metrics,
        })
    }

    pub fn index(&self) -> &CatalogIndex {
        &self.index
    }

    /// Stores `items` durably, then makes them visible and queues their
    /// embedding; refuses the batch if its new ids would take the catalog
    /// past `max_items`.
    pub fn upsert(&self, items: &[CatalogItem], max_items: usize) -> Result<(), CatalogWriteError> {
        let _one_writer = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let new = {
            let view = self.index.read();
            items.iter().filter(|item| view.get(&item.id).is_none()).count()
        };
        let (held, _) = self.index.counts();
        if held + new > max_items {
            return Err(CatalogWriteError::Full { held, new, max_items });
        }
        self.store.upsert(items)?;
        self.index.upsert(items);
        self.after_write();
        Ok(())
    }

    /// Deletes an item durably; false if there was none.
    pub(crate) fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let _one_writer = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let found = self.store.delete(id)?;
        self.index.delete(id);
        self.after_write();
        Ok(found)
    }

    fn after_write(&self) {
        let (items, embedded) = self.index.counts();
        self.metrics.catalog_items.set(items as i64);
        self.metrics.catalog_pending.set((items - embedded) as i64);
        self.signal.notify();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogWriteError {
    #[error("the catalog holds {held} items; {new} more would pass catalog.max_items ({max_items})")]
    Full { held: usize, new: usize, max_items: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Drop for Catalog {
    fn drop(&mut self) {
        self.stop_sync.stop();
        if let Some(sync) = self.sync.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = sync.join();
        }
        self.signal.stop();
        if let Some(worker) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = worker.join();
        }
        // The inverted file's cells as they are now, for the next start-up.
        if self.index.approximate() {
            match self.index.save_ann() {
                Ok(Some(items)) => tracing::info!(items, "inverted file saved"),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "saving the inverted file failed"),
            }
        }
    }
}
