//! `Ranker::rank` end to end (user text → encoder → features → head → sort)
//! with 100 candidates: embeddings cached (a storefront re-ranking its
//! catalog) and never seen (every title new), each with a new user text.
//!
//! `cargo bench --bench recommend`

#[path = "common.rs"]
mod common;

use std::num::NonZeroUsize;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use shoprank::batcher::Embedder;
use shoprank::head::{EncoderIdentity, ScoringHead};
use shoprank::metrics::Metrics;
use shoprank::ranker::{Candidate, RankQuery, Ranker};
use shoprank::stats::HistoryStats;

fn ranker() -> Ranker {
    let settings = common::settings();
    let encoder = Arc::new(common::encoder(settings.encoder.precision, false));
    let identity = EncoderIdentity { name: encoder.name().to_string(), dim: encoder.dim() };
    let head = ScoringHead::load(&settings.head.weights, &settings.head.spec, &identity).expect("head");
    let stats = HistoryStats::load(&settings.head.stats).expect("stats");
    let metrics = Metrics::new();
    let embedder = Embedder::new(encoder, settings.batching.clone(), NonZeroUsize::new(200_000).unwrap(), metrics.clone());
    Ranker::new(embedder, head, stats, settings.user_text, metrics)
}

fn query(user_text: &str, titles: &[String], suffix: &str) -> RankQuery {
    RankQuery {
        query: None,
        profile: Some(user_text.to_string()),
        history: Vec::new(),
        candidates: titles
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate { id: i.to_string(), text: format!("{t}{suffix}"), price: None })
            .collect(),
        top_k: 10,
    }
}

fn bench_recommend(c: &mut Criterion) {
    let ranker = ranker();
    let titles = common::corpus("titles.jsonl");
    let users = common::corpus("user_texts.jsonl");
    let candidates = &titles[..100];
    ranker.rank(&query("warm the cache", candidates, "")).expect("rank");

    let mut group = c.benchmark_group("recommend/100_candidates");
    group.sample_size(20);
    let mut n = 0usize;
    group.bench_function("cached_items_new_user", |b| {
        b.iter(|| {
            n += 1;
            // A user text never seen before: the user forward pass is paid.
            let text = format!("{} #{n}", users[n % users.len()]);
            ranker.rank(&query(&text, candidates, "")).expect("rank")
        })
    });
    group.bench_function("new_items_new_user", |b| {
        b.iter(|| {
            n += 1;
            let text = format!("{} #{n}", users[n % users.len()]);
            ranker.rank(&query(&text, candidates, &format!(" v{n}"))).expect("rank")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_recommend);
criterion_main!(benches);
