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
//! `shoprank train --store` and `shoprank report` read from it.

pub mod catalog;
pub mod events;
pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use self::catalog::CatalogStore;
use self::events::EventStore;

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
    pub fn is_refusal(&self) -> bool {
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

/// Which engine `store.url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory holding the embedded SQLite file.
    Embedded(PathBuf),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl StoreLocation {
    /// Refuses what looks like a database address but is not a PostgreSQL
    /// URL (`postgress://…`, `mysql://…`, `host=db password=…`): taken for
    /// a directory, it would give each replica a private store of its own.
    pub fn check(url: &str) -> Result<(), String> {
        if url.trim().is_empty() {
            return Err("store.url is empty: give a directory or a postgres:// URL".into());
        }
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !postgres {
            if let Some((scheme, _)) = url.split_once("://") {
                return Err(format!("store.url names `{scheme}://…`: give a directory or a postgres:// URL"));
            }
            let conninfo = ["host=", "hostaddr=", "dbname=", "user=", "password=", "port="];
            if url.split_whitespace().any(|word| conninfo.iter().any(|key| word.starts_with(key))) {
                return Err("store.url looks like a key=value connection string: give a postgres:// URL".into());
            }
        }
        Ok(())
    }

    pub fn parse(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            StoreLocation::Postgres(url.to_string())
        } else {
            StoreLocation::Embedded(PathBuf::from(url))
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

/// `text` with every password it holds replaced by `***`: the password of
/// any `scheme://user:password@host` URL (up to the last `@` before the next
/// space, so a `/` or `@` in the password is covered too) and any
/// `password=...` parameter. Command lines and store URLs are logged and
/// recorded in bundles through this.
pub fn redacted(text: &str) -> String {
    text.split(' ').map(redact_word).collect::<Vec<_>>().join(" ")
}

fn redact_word(word: &str) -> String {
    let mut word = word.to_string();
    if let Some(scheme_end) = word.find("://") {
        let rest = &word[scheme_end + 3..];
        if let Some(at) = rest.rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                word = format!("{}{}:***{}", &word[..scheme_end + 3], &rest[..colon], &rest[at..]);
            }
        }
    }
    let lower = word.to_ascii_lowercase();
    if let Some(start) = lower.find("password=") {
        let value = start + "password=".len();
        let end = word[value..].find('&').map_or(word.len(), |n| value + n);
        word.replace_range(value..end, "***");
    }
    word
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_a_url_carries_them() {
        assert_eq!(
            redacted("train --store postgres://shop:s3cret@db:5432/shop --out x"),
            "train --store postgres://shop:***@db:5432/shop --out x"
        );
        assert_eq!(redacted("postgres://shop:a/b@c@db/shop"), "postgres://shop:***@db/shop");
        assert_eq!(
            redacted("postgres://db/shop?user=u&password=s3cret&x=1"),
            "postgres://db/shop?user=u&password=***&x=1"
        );
        assert_eq!(redacted("postgres://shop@db/shop"), "postgres://shop@db/shop");
        assert_eq!(redacted("data/events.csv"), "data/events.csv");
    }

    #[test]
    fn only_postgres_urls_and_directories_are_store_urls() {
        assert!(StoreLocation::check("data").is_ok());
        assert!(StoreLocation::check("postgres://u@h/db").is_ok());
        assert!(StoreLocation::check("/srv/shop=1/data").is_ok(), "a directory may hold `=`");
        for bad in ["postgress://u:pw@h/db", "mysql://h/db", "host=db password=pw", ""] {
            let error = StoreLocation::check(bad).unwrap_err();
            assert!(!error.contains("pw"), "{error}");
        }
    }
}
