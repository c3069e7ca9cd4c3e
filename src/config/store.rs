//! The `[store]` section and what `store.url` may say: a directory for the
//! embedded SQLite file or a `postgres://` URL ([`StoreLocation`]), checked
//! when the settings are read, and shown everywhere without its password
//! ([`redacted`]). The `store` layer opens what the location names.

use std::path::PathBuf;

use serde::Deserialize;

/// Where the catalog and the feedback events are kept (see `store`).
/// `Debug` hides the URL's password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// A directory for the embedded SQLite file, or a `postgres://` URL.
    pub url: String,
    /// Most PostgreSQL connections this process holds.
    pub max_connections: u32,
    /// Seconds to wait for a PostgreSQL connection before failing.
    pub connect_timeout_secs: u64,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &redacted(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .finish()
    }
}

impl StoreSettings {
    /// The engine and place `url` names.
    pub(crate) fn location(&self) -> StoreLocation {
        StoreLocation::parse(&self.url)
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
    pub(crate) fn check(url: &str) -> Result<(), String> {
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

/// `text` with every password it holds replaced by `***`: the password of
/// any `scheme://user:password@host` URL (up to the last `@` before the next
/// space, so a `/` or `@` in the password is covered too) and any
/// `password=...` parameter. Command lines and store URLs are logged and
/// recorded in bundles through this.
pub(crate) fn redacted(text: &str) -> String {
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
