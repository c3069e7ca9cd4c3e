//! `Ranker::rank` end to end (user text → encoder → features → head → sort)
//! with 100 candidates: embeddings cached (a storefront re-ranking its
//! catalog) and never seen (every title new), each with a new user text.
//! First, as the yardstick those are read against, one forward pass of a
//! fixture user text (the encoder bench's `user_text`) by the same encoder
//! in the same process, so the two compare within one run.
//!
//! `cargo bench --bench recommend`; `scripts/bench-recommend` prints the
//! ratio.

#[path = "common.rs"]
mod common;

/// The allocator the `shoprank` binary uses (see src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use shoprank::model::encoder::TokenizedText;
use shoprank::serve::batcher::Ticket;
use shoprank::serve::metrics::Metrics;
use shoprank::serve::ranker::{Candidate, HistoryItem, RankQuery};
use shoprank::serve::service::Service;

/// The service as `shoprank serve` builds it, with a cache large enough to
/// keep every text the bench sends.
fn service() -> Service {
    let mut settings = common::settings();
    settings.cache.max_bytes = 512 << 20;
    Service::build(&settings, Metrics::new()).expect("service")
}

/// A fixture user: its query and the 5 viewed titles as its text shows them
/// (shortened), so the composed user text is ~100 tokens like the fixture's.
/// A marker in front of the query makes it new on every request.
struct User {
    query: String,
    viewed: Vec<String>,
}

fn users() -> Vec<User> {
    let path = common::repo_path("benches/fixtures/user_texts.jsonl");
    std::fs::read_to_string(path)
        .expect("user fixture")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            User {
                query: v["query"].as_str().expect("query").to_string(),
                viewed: v["text"]
                    .as_str()
                    .and_then(|t| t.split_once("recently viewed: "))
                    .map(|(_, viewed)| viewed.split(" ; ").map(str::to_string).collect())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

fn query(user: &User, marker: usize, titles: &[String], suffix: &str) -> RankQuery {
    RankQuery::new(
        Some(format!("#{marker} {}", user.query)),
        user.viewed.iter().map(|t| HistoryItem { id: None, text: t.clone() }).collect(),
        titles
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate { id: i.to_string(), text: format!("{t}{suffix}"), price: None, available: true })
            .collect(),
        10,
    )
}

fn bench_recommend(c: &mut Criterion) {
    common::configure_threads_once();
    let service = service();
    let (ranker, bundle) = (service.ranker(), service.bundle());
    let titles = common::corpus("titles.jsonl");
    let users = users();
    let candidates = &titles[..100];
    // What the user forward pass embeds per request: the composed user text
    // and the query alone (compare the encoder bench's "user texts" line).
    let encoder = ranker.embedder().encoder();
    let tokens: usize = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let query = query(user, i, candidates, "");
            let text = ranker.user_text(&query).expect("user text");
            let alone = query.query.as_deref().expect("a query");
            encoder.tokenize(&text).expect("tokens").len() + encoder.tokenize(alone).expect("tokens").len()
        })
        .sum();
    eprintln!("user text + query: {:.1} tokens per request", tokens as f64 / users.len() as f64);
    // Warm the cache with the candidates and every user's history titles.
    for (i, user) in users.iter().enumerate() {
        ranker.rank(&bundle, &query(user, usize::MAX - i, candidates, ""), None, &Ticket::detached()).expect("rank");
    }

    let mut group = c.benchmark_group("recommend/100_candidates");
    group.sample_size(20);
    let fixture: Vec<TokenizedText> =
        common::corpus("user_texts.jsonl").iter().map(|t| encoder.tokenize(t).expect("tokens")).collect();
    let mut next = 0usize;
    group.bench_function("user_text_forward", |b| {
        b.iter(|| {
            next += 1;
            encoder.embed_tokenized(&[&fixture[next % fixture.len()]]).expect("embed")
        })
    });
    let mut n = 0usize;
    group.bench_function("cached_items_new_user", |b| {
        b.iter(|| {
            n += 1;
            // A user text never seen before: the user forward pass is paid.
            ranker
                .rank(&bundle, &query(&users[n % users.len()], n, candidates, ""), None, &Ticket::detached())
                .expect("rank")
        })
    });
    group.bench_function("new_items_new_user", |b| {
        b.iter(|| {
            n += 1;
            ranker
                .rank(
                    &bundle,
                    &query(&users[n % users.len()], n, candidates, &format!(" v{n}")),
                    None,
                    &Ticket::detached(),
                )
                .expect("rank")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_recommend);
criterion_main!(benches);
