//! Validation: what the types alone cannot say (positive limits, keys that
//! must agree with each other, the A/B variants, `store.url`'s form), each
//! refusal naming its key.

use super::{ConfigError, Settings, StoreLocation, VariantSettings, MAX_RETRIEVED};

impl Settings {
    /// Checks the relations between keys that types alone cannot express.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &'static str, value: usize) -> Result<(), ConfigError> {
            if value == 0 {
                return Err(ConfigError::Invalid { key, problem: "must be at least 1".into() });
            }
            Ok(())
        }
        positive("server.max_concurrent_requests", self.server.max_concurrent_requests)?;
        positive("server.request_timeout_secs", self.server.request_timeout_secs as usize)?;
        positive("server.header_read_timeout_secs", self.server.header_read_timeout_secs as usize)?;
        positive("server.body_read_timeout_secs", self.server.body_read_timeout_secs as usize)?;
        positive("server.max_connections", self.server.max_connections)?;
        positive("server.blocking_threads", self.server.blocking_threads)?;
        positive("batching.max_queue_wait_ms", self.batching.max_queue_wait_ms as usize)?;
        positive("cache.max_bytes", self.cache.max_bytes)?;
        positive("batching.max_batch_texts", self.batching.max_batch_texts)?;
        positive("batching.max_queued_texts", self.batching.max_queued_texts)?;
        positive("batching.background_batch_texts", self.batching.background_batch_texts)?;
        positive("batching.background_every_batches", self.batching.background_every_batches)?;
        positive("limits.max_body_bytes", self.limits.max_body_bytes)?;
        positive("limits.max_candidates", self.limits.max_candidates)?;
        positive("limits.default_top_k", self.limits.default_top_k)?;
        positive("limits.default_deadline_ms", self.limits.default_deadline_ms as usize)?;
        let timeout_ms = self.server.request_timeout_secs.saturating_mul(1000);
        if self.limits.default_deadline_ms > timeout_ms {
            return Err(ConfigError::Invalid {
                key: "limits.default_deadline_ms",
                problem: format!(
                    "{} is above server.request_timeout_secs ({timeout_ms} ms): a request would time out first",
                    self.limits.default_deadline_ms
                ),
            });
        }
        positive("offline.ease_max_items", self.offline.ease_max_items)?;
        positive("catalog.max_upsert_items", self.catalog.max_upsert_items)?;
        positive("catalog.max_items", self.catalog.max_items)?;
        positive("catalog.ingest_batch_items", self.catalog.ingest_batch_items)?;
        positive("catalog.retrieve_k", self.catalog.retrieve_k)?;
        positive("catalog.ann_probe", self.catalog.ann_probe)?;
        positive("store.max_connections", self.store.max_connections as usize)?;
        StoreLocation::check(&self.store.url).map_err(|problem| ConfigError::Invalid { key: "store.url", problem })?;
        positive("events.max_batch_events", self.events.max_batch_events)?;
        positive("events.max_commit_events", self.events.max_commit_events)?;
        if self.events.max_queued_events < self.events.max_batch_events {
            return Err(ConfigError::Invalid {
                key: "events.max_queued_events",
                problem: format!(
                    "{} is below events.max_batch_events ({}): a full batch would never be accepted",
                    self.events.max_queued_events, self.events.max_batch_events
                ),
            });
        }
        check_variants(&self.ab.variants).map_err(|problem| ConfigError::Invalid { key: "ab.variants", problem })?;
        for (key, value) in [
            ("search.relevance_margin", self.search.relevance_margin),
            ("search.relevance_floor", self.search.relevance_floor),
            ("search.lexical_weight", self.search.lexical_weight),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::Invalid { key, problem: format!("{value} is not a number >= 0") });
            }
        }
        let retrieved =
            self.catalog.retrieve_k + self.catalog.lexical_k + self.catalog.related_k + self.catalog.popular_k;
        if retrieved > MAX_RETRIEVED {
            return Err(ConfigError::Invalid {
                key: "catalog.retrieve_k",
                problem: format!(
                    "retrieve_k + lexical_k + related_k + popular_k = {retrieved} is above {MAX_RETRIEVED}: every retrieved \
                     item is scored on each request"
                ),
            });
        }
        if self.catalog.index_dir.is_some() && matches!(self.store.location(), StoreLocation::Embedded(_)) {
            return Err(ConfigError::Invalid {
                key: "catalog.index_dir",
                problem: "is for replicas on PostgreSQL: the embedded store keeps its indexes beside itself".into(),
            });
        }
        if self.catalog.ingest_batch_items > self.batching.max_queued_texts {
            return Err(ConfigError::Invalid {
                key: "catalog.ingest_batch_items",
                problem: format!(
                    "{} is above batching.max_queued_texts ({}): no ingestion round would fit the queue",
                    self.catalog.ingest_batch_items, self.batching.max_queued_texts
                ),
            });
        }
        if !(8..=8192).contains(&self.encoder.max_seq_len) {
            return Err(ConfigError::Invalid {
                key: "encoder.max_seq_len",
                problem: format!("{} is outside 8..=8192", self.encoder.max_seq_len),
            });
        }
        if self.batching.max_batch_tokens < self.encoder.max_seq_len {
            return Err(ConfigError::Invalid {
                key: "batching.max_batch_tokens",
                problem: format!(
                    "{} is below encoder.max_seq_len ({}): a single long text would never fit",
                    self.batching.max_batch_tokens, self.encoder.max_seq_len
                ),
            });
        }
        if self.batching.max_request_tokens < self.encoder.max_seq_len {
            return Err(ConfigError::Invalid {
                key: "batching.max_request_tokens",
                problem: format!(
                    "{} is below encoder.max_seq_len ({}): a request with one long text would always be refused",
                    self.batching.max_request_tokens, self.encoder.max_seq_len
                ),
            });
        }
        let fixed = self.user_text.query_tokens + self.user_text.profile_tokens;
        if fixed + 16 > self.encoder.max_seq_len {
            return Err(ConfigError::Invalid {
                key: "user_text",
                problem: format!(
                    "query_tokens + profile_tokens = {fixed} leaves under 16 tokens of \
                     encoder.max_seq_len ({}) for history",
                    self.encoder.max_seq_len
                ),
            });
        }
        Ok(())
    }
}

/// Names are unique, short and safe inside a request id; shares are in
/// (0, 1] and add up to 1.
fn check_variants(variants: &[VariantSettings]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for variant in variants {
        let name = &variant.name;
        if name.is_empty()
            || name.len() > 32
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!("variant name `{name}`: use 1 to 32 of a-z, A-Z, 0-9, _ and -"));
        }
        if !names.insert(name) {
            return Err(format!("variant `{name}` is listed twice"));
        }
        if !(variant.share > 0.0 && variant.share <= 1.0) {
            return Err(format!("variant `{name}`: share {} is not in (0, 1]", variant.share));
        }
        if variant.bundle.trim().is_empty() {
            return Err(format!("variant `{name}`: bundle is empty (a version, or \"current\")"));
        }
    }
    let total: f64 = variants.iter().map(|v| v.share).sum();
    if !variants.is_empty() && (total - 1.0).abs() > 1e-6 {
        return Err(format!("the shares add up to {total}, not 1"));
    }
    Ok(())
}
