//! Where shoprank keeps what it is told: the catalog and the storefront's
//! feedback events. One [`Store`] trait, two engines:
//!
//! - [`sqlite::SqliteStore`], the default: one embedded SQLite file, zero
//!   set-up, for a single replica;
//! - [`postgres::PostgresStore`]: PostgreSQL, for several replicas sharing
//!   one state (`store.url = "postgres://..."`).
//!
//! Both migrate their schema with refinery's versioned migrations
//! (`migrations/<engine>/V<n>__<name>.sql`), and both pass the same test
//! suite (`tests/integration/store.rs`). Every write returns only once it
//! is durable (committed with `synchronous = FULL`, or a committed
//! PostgreSQL transaction), so an acknowledged write survives `kill -9`.
//!
//! This layer sits below `serve` and `offline`: the server writes to it,
//! `shoprank train --store` and `shoprank report` read from it. What
//! `store.url` may say, and how it is shown without its password, is the
//! configuration's (`config::StoreLocation`, `config::redacted`).

pub(crate) mod catalog;
pub(crate) mod event_log;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use self::catalog::CatalogStore;
use self::event_log::EventStore;
use crate::config::{StoreLocation, StoreSettings};

/// Both halves of the store, as one object.
pub trait Store: CatalogStore + EventStore {
    /// Where the store is, for logs (a PostgreSQL URL without its password).
    fn describe(&self) -> String;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("store: connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("store: migrating the schema: {}", with_causes(.0))]
    Migration(#[from] refinery::Error),
    #[error("store: creating {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("store: item `{id}` has a corrupt {what}")]
    Corrupt { id: String, what: &'static str },
    #[error("store: {0}")]
    Url(String),
}

impl StoreError {
    /// The store refused this data (a value it cannot hold, a constraint),
    /// as opposed to being unreachable or busy: only then is retrying the
    /// same writes in smaller pieces worth anything.
    pub(crate) fn is_refusal(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TypeMismatch
                    | rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::ParameterOutOfRange
            ),
            StoreError::Postgres(e) => {
                // SQLSTATE class 22 (data exception) or 23 (integrity constraint).
                e.code().is_some_and(|code| matches!(&code.code()[..2], "22" | "23"))
            }
            _ => false,
        }
    }
}

/// How many connections a PostgreSQL store may hold, and how long to wait
/// for one (the embedded store has one connection and no wait).
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    pub max_connections: u32,
    pub connect_timeout: std::time::Duration,
}

impl PoolLimits {
    pub(crate) fn from_settings(store: &StoreSettings) -> Self {
        Self {
            max_connections: store.max_connections,
            connect_timeout: std::time::Duration::from_secs(store.connect_timeout_secs),
        }
    }
}

/// Opens (creating and migrating as needed) the store `location` names.
pub fn open(location: &StoreLocation, pool: PoolLimits) -> Result<Arc<dyn Store>, StoreError> {
    if let StoreLocation::Embedded(dir) = location {
        StoreLocation::check(&dir.display().to_string()).map_err(StoreError::Url)?;
    }
    let store: Arc<dyn Store> = match location {
        StoreLocation::Embedded(dir) => Arc::new(sqlite::SqliteStore::open(dir)?),
        StoreLocation::Postgres(url) => Arc::new(postgres::PostgresStore::open(url, pool)?),
    };
    tracing::info!(store = %store.describe(), "store opened");
    Ok(store)
}

/// An error and its causes, joined: refinery's own text leaves out the
/// database's message, which is the part that says what is wrong.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// Little-endian f32s, as both engines keep embeddings.
pub(crate) fn to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn from_blob(id: &str, blob: &[u8]) -> Result<Vec<f32>, StoreError> {
    if !blob.len().is_multiple_of(4) {
        return Err(StoreError::Corrupt { id: id.to_string(), what: "embedding" });
    }
    Ok(blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
