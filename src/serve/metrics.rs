//! Every metric shoprank exports, in one registry, recorded where the event
//! happens (the HTTP middleware, the encoder thread, the cache, the ranker).
//! Names follow Prometheus conventions with the `shoprank_` prefix.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Shared handle to all metrics. Cheap to clone (the collectors are `Arc`s).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub request_errors: IntCounterVec,
    pub encoder_forward: Histogram,
    pub encoder_batch_texts: Histogram,
    pub encoder_batch_tokens: Histogram,
    pub embed_queue_texts: IntGauge,
    pub encoder_abandoned_texts: IntCounter,
    pub encoder_tokens_per_second: prometheus::Gauge,
    pub open_connections: IntGauge,
    pub refused_connections: IntCounter,
    pub evicted_connections: IntCounter,
    pub candidates_per_request: Histogram,
    pub predicted_score: Histogram,
    pub model_info: IntGaugeVec,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_evictions: IntCounter,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    pub title_tokens_hits: IntCounter,
    pub title_tokens_misses: IntCounter,
    pub title_tokens_bytes: IntGauge,
    pub catalog_items: IntGauge,
    pub catalog_pending: IntGauge,
    pub catalog_embedded: IntCounter,
    pub events_stored: IntCounterVec,
    pub events_duplicate: IntCounter,
    pub user_erasures: IntCounter,
    pub erased_events: IntCounter,
    pub event_queue: IntGauge,
    pub event_commit_seconds: Histogram,
    pub event_commit_events: Histogram,
    pub variant_requests: IntCounterVec,
    pub degraded_answers: IntCounterVec,
    pub bundle_changes: IntCounterVec,
    pub live_stats_refresh_seconds: Histogram,
    pub live_stats_purchases: IntGauge,
}

fn exponential(start: f64, factor: f64, count: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, count).expect("valid buckets")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Self {
            http_requests: IntCounterVec::new(
                Opts::new("shoprank_http_requests_total", "HTTP requests by route and status code"),
                &["route", "status"],
            )
            .expect("metric"),
            http_duration: HistogramVec::new(
                HistogramOpts::new("shoprank_http_request_duration_seconds", "HTTP request duration by route")
                    .buckets(exponential(0.001, 2.0, 15)),
                &["route"],
            )
            .expect("metric"),
            request_errors: IntCounterVec::new(
                Opts::new("shoprank_request_errors_total", "Requests answered with an error, by error kind"),
                &["kind"],
            )
            .expect("metric"),
            encoder_forward: Histogram::with_opts(
                HistogramOpts::new("shoprank_encoder_forward_seconds", "Duration of one encoder forward pass")
                    .buckets(exponential(0.001, 2.0, 14)),
            )
            .expect("metric"),
            encoder_batch_texts: Histogram::with_opts(
                HistogramOpts::new("shoprank_encoder_batch_texts", "Texts in one encoder forward pass")
                    .buckets(exponential(1.0, 2.0, 9)),
            )
            .expect("metric"),
            encoder_batch_tokens: Histogram::with_opts(
                HistogramOpts::new("shoprank_encoder_batch_tokens", "Tokens in one encoder forward pass")
                    .buckets(exponential(8.0, 2.0, 12)),
            )
            .expect("metric"),
            embed_queue_texts: IntGauge::new("shoprank_embed_queue_texts", "Texts waiting for the encoder")
                .expect("metric"),
            encoder_abandoned_texts: IntCounter::new(
                "shoprank_encoder_abandoned_texts_total",
                "Texts withdrawn from the encoder queue because nobody waited for them any more",
            )
            .expect("metric"),
            encoder_tokens_per_second: prometheus::Gauge::new(
                "shoprank_encoder_tokens_per_second",
                "The encoder's recent throughput, the estimate admission judges queued work by",
            )
            .expect("metric"),
            open_connections: IntGauge::new("shoprank_http_open_connections", "Open HTTP connections").expect("metric"),
            refused_connections: IntCounter::new(
                "shoprank_http_refused_connections_total",
                "Connections closed on accept because server.max_connections were open, every one busy",
            )
            .expect("metric"),
            evicted_connections: IntCounter::new(
                "shoprank_http_evicted_connections_total",
                "Idle connections closed to make room for a new one when server.max_connections were open",
            )
            .expect("metric"),
            candidates_per_request: Histogram::with_opts(
                HistogramOpts::new("shoprank_candidates_per_request", "Candidates in one /recommend request")
                    .buckets(exponential(1.0, 2.0, 11)),
            )
            .expect("metric"),
            predicted_score: Histogram::with_opts(
                HistogramOpts::new("shoprank_predicted_score", "Predicted purchase probabilities returned")
                    .buckets(prometheus::linear_buckets(0.05, 0.05, 19).expect("buckets")),
            )
            .expect("metric"),
            model_info: IntGaugeVec::new(
                Opts::new("shoprank_model_info", "The loaded models (value 1)"),
                &["encoder", "precision", "head", "variant"],
            )
            .expect("metric"),
            cache_hits: IntCounter::new("shoprank_embedding_cache_hits_total", "Embedding cache hits").expect("metric"),
            cache_misses: IntCounter::new("shoprank_embedding_cache_misses_total", "Embedding cache misses")
                .expect("metric"),
            cache_evictions: IntCounter::new("shoprank_embedding_cache_evictions_total", "Embedding cache evictions")
                .expect("metric"),
            cache_entries: IntGauge::new("shoprank_embedding_cache_entries", "Embeddings in the cache")
                .expect("metric"),
            cache_bytes: IntGauge::new("shoprank_embedding_cache_bytes", "Approximate bytes held by the cache")
                .expect("metric"),
            title_tokens_hits: IntCounter::new(
                "shoprank_title_tokens_cache_hits_total",
                "History titles whose tokens were cached",
            )
            .expect("metric"),
            title_tokens_misses: IntCounter::new(
                "shoprank_title_tokens_cache_misses_total",
                "History titles tokenized for want of cached tokens",
            )
            .expect("metric"),
            title_tokens_bytes: IntGauge::new(
                "shoprank_title_tokens_cache_bytes",
                "Approximate bytes held by the title-token cache",
            )
            .expect("metric"),
            catalog_items: IntGauge::new("shoprank_catalog_items", "Items in the catalog").expect("metric"),
            catalog_pending: IntGauge::new(
                "shoprank_catalog_pending_items",
                "Catalog items waiting for their embedding",
            )
            .expect("metric"),
            catalog_embedded: IntCounter::new(
                "shoprank_catalog_embedded_total",
                "Catalog items embedded by background ingestion",
            )
            .expect("metric"),
            events_stored: IntCounterVec::new(
                Opts::new(
                    "shoprank_events_total",
                    "Feedback events stored (duplicates not counted), by kind and by the A/B variant their \
                     request_id names (\"none\" without one); CTR per variant is \
                     rate(click) / rate(impression)",
                ),
                &["kind", "variant"],
            )
            .expect("metric"),
            events_duplicate: IntCounter::new(
                "shoprank_events_duplicate_total",
                "Feedback events received again (same event_id) and not stored twice",
            )
            .expect("metric"),
            user_erasures: IntCounter::new(
                "shoprank_user_erasures_total",
                "Shoppers' erasures committed (DELETE /v1/users/{id}), a second one of the same user included",
            )
            .expect("metric"),
            erased_events: IntCounter::new(
                "shoprank_erased_events_total",
                "Stored feedback events deleted by shoppers' erasures",
            )
            .expect("metric"),
            event_queue: IntGauge::new("shoprank_event_queue_events", "Events accepted and not yet committed")
                .expect("metric"),
            event_commit_seconds: Histogram::with_opts(
                HistogramOpts::new("shoprank_event_commit_seconds", "Duration of one group commit of events")
                    .buckets(exponential(0.0005, 2.0, 14)),
            )
            .expect("metric"),
            event_commit_events: Histogram::with_opts(
                HistogramOpts::new("shoprank_event_commit_events", "Events in one group commit")
                    .buckets(exponential(1.0, 4.0, 8)),
            )
            .expect("metric"),
            variant_requests: IntCounterVec::new(
                Opts::new("shoprank_variant_requests_total", "/recommend answers by A/B variant"),
                &["variant"],
            )
            .expect("metric"),
            degraded_answers: IntCounterVec::new(
                Opts::new(
                    "shoprank_degraded_answers_total",
                    "/recommend answers ranked without the encoder (\"degraded\": true), by why: deadline (the \
                     user's texts could not be embedded within deadline_ms) or queue_full (the encoder queue \
                     was full)",
                ),
                &["reason"],
            )
            .expect("metric"),
            bundle_changes: IntCounterVec::new(
                Opts::new(
                    "shoprank_bundle_changes_total",
                    "Bundle reloads and rollbacks by outcome (installed, unchanged, refused, rolled_back)",
                ),
                &["outcome"],
            )
            .expect("metric"),
            live_stats_refresh_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "shoprank_live_stats_refresh_seconds",
                    "Time to bring the bundle's statistics forward from the stored purchases (bundle.live_stats_secs)",
                )
                .buckets(exponential(0.001, 2.0, 16)),
            )
            .expect("metric"),
            live_stats_purchases: IntGauge::new(
                "shoprank_live_stats_purchases",
                "Stored purchases after the bundle's history end that the serving statistics count",
            )
            .expect("metric"),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
            Box::new(m.request_errors.clone()),
            Box::new(m.encoder_forward.clone()),
            Box::new(m.encoder_batch_texts.clone()),
            Box::new(m.encoder_batch_tokens.clone()),
            Box::new(m.embed_queue_texts.clone()),
            Box::new(m.encoder_abandoned_texts.clone()),
            Box::new(m.encoder_tokens_per_second.clone()),
            Box::new(m.open_connections.clone()),
            Box::new(m.refused_connections.clone()),
            Box::new(m.evicted_connections.clone()),
            Box::new(m.candidates_per_request.clone()),
            Box::new(m.predicted_score.clone()),
            Box::new(m.model_info.clone()),
            Box::new(m.cache_hits.clone()),
            Box::new(m.cache_misses.clone()),
            Box::new(m.cache_evictions.clone()),
            Box::new(m.cache_entries.clone()),
            Box::new(m.cache_bytes.clone()),
            Box::new(m.title_tokens_hits.clone()),
            Box::new(m.title_tokens_misses.clone()),
            Box::new(m.title_tokens_bytes.clone()),
            Box::new(m.catalog_items.clone()),
            Box::new(m.catalog_pending.clone()),
            Box::new(m.catalog_embedded.clone()),
            Box::new(m.events_stored.clone()),
            Box::new(m.events_duplicate.clone()),
            Box::new(m.user_erasures.clone()),
            Box::new(m.erased_events.clone()),
            Box::new(m.event_queue.clone()),
            Box::new(m.event_commit_seconds.clone()),
            Box::new(m.event_commit_events.clone()),
            Box::new(m.variant_requests.clone()),
            Box::new(m.degraded_answers.clone()),
            Box::new(m.bundle_changes.clone()),
            Box::new(m.live_stats_refresh_seconds.clone()),
            Box::new(m.live_stats_purchases.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for collector in collectors {
            m.registry.register(collector).expect("metric names are unique");
        }
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("Prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
