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

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use shoprank::{Candidate, Encoder, HistoryItem, Metrics, RankQuery, Service, Ticket, TokenizedText};

/// The service as `shoprank serve` builds it, with a cache large enough to
/// keep every text the bench sends.
fn service() -> Service {
    let mut settings = common::settings();
    settings.cache.max_bytes = 512 << 20;
    Service::build(&settings, Metrics::new()).expect("service")
}

/// A fixture user: its query and the 5 viewed titles as its text shows them
/// (shortened), so the composed user text is ~100 tokens like the fixture's.
/// A marker word in front of the query makes it new on every request.
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

/// Words the tokenizer keeps whole, one per request as its query's first
/// word: the user text and the query are then new to the cache for one
/// token each. (The marker used before, "#" and the request's number, took
/// 3 or 4 tokens in each text: some 6% of the user forward pass, which
/// the fixture's forward pass it is compared with does not pay.)
fn marker_words(encoder: &Encoder) -> Vec<String> {
    let mut words: Vec<String> = encoder
        .tokenizer()
        .get_vocab(false)
        .into_keys()
        .filter(|word| word.len() >= 3 && word.chars().all(|c| c.is_ascii_lowercase()))
        // [CLS] word [SEP]
        .filter(|word| encoder.tokenize(word).expect("tokens").len() == 3)
        .collect();
    words.sort();
    words
}

fn query(user: &User, marker: Option<&str>, titles: &[String], suffix: &str) -> RankQuery {
    RankQuery::new(
        Some(match marker {
            Some(word) => format!("{word} {}", user.query),
            None => user.query.clone(),
        }),
        user.viewed.iter().map(|t| HistoryItem { id: None, text: t.clone() }).collect(),
        titles
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: i.to_string(),
                text: format!("{t}{suffix}"),
                price: None,
                available: true,
                attributes: serde_json::Value::Null,
            })
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
    let words = marker_words(encoder);
    // Request `n` marks user `n % users` with word `n`, or, past the word
    // count (a tokenizer with few whole English words), two words: a user
    // text and its query are never repeated.
    let marker = |n: usize| -> String {
        let count = words.len();
        assert!(n < count * (count + 1), "{n} requests, too few marker words ({count}): a user text would repeat");
        match n / count {
            0 => words[n].clone(),
            first => format!("{} {}", words[first - 1], words[n % count]),
        }
    };
    let tokens: usize = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let query = query(user, Some(&marker(i)), candidates, "");
            let text = ranker.user_text(&query).expect("user text");
            let alone = query.search.as_deref().expect("a query");
            encoder.tokenize(&text).expect("tokens").len() + encoder.tokenize(alone).expect("tokens").len()
        })
        .sum();
    eprintln!("user text + query: {:.1} tokens per request", tokens as f64 / users.len() as f64);
    // Warm the cache with the candidates and every user's history titles
    // (with unmarked queries, which the requests below never send). The
    // titles' tokens are kept too (`serve::title_tokens`): every request
    // below finds them, as returning titles would; a title seen for the
    // first time costs its tokenization (tens of µs) once.
    for user in &users {
        ranker.rank(&bundle, &query(user, None, candidates, ""), None, &Ticket::detached()).expect("rank");
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
                .rank(
                    &bundle,
                    &query(&users[n % users.len()], Some(&marker(n)), candidates, ""),
                    None,
                    &Ticket::detached(),
                )
                .expect("rank")
        })
    });
    // The two above, one call of each in turn: drift in the machine's
    // speed (±10% over seconds on a small VM) then reaches both alike, where
    // the two benches above time each over its own seconds. Criterion
    // reports the requests' time; the forward passes' is kept beside it,
    // and the ratio of the medians printed at the end.
    let mut pairs: Vec<(Duration, Duration)> = Vec::new();
    group.bench_function("interleaved", |b| {
        b.iter_custom(|iters| {
            let mut requests = Duration::ZERO;
            for _ in 0..iters {
                next += 1;
                let started = Instant::now();
                black_box(encoder.embed_tokenized(&[&fixture[next % fixture.len()]]).expect("embed"));
                let forward = started.elapsed();
                n += 1;
                let started = Instant::now();
                let query = query(&users[n % users.len()], Some(&marker(n)), candidates, "");
                black_box(ranker.rank(&bundle, &query, None, &Ticket::detached()).expect("rank"));
                let request = started.elapsed();
                pairs.push((forward, request));
                requests += request;
            }
            requests
        })
    });
    group.bench_function("new_items_new_user", |b| {
        b.iter(|| {
            n += 1;
            ranker
                .rank(
                    &bundle,
                    &query(&users[n % users.len()], Some(&marker(n)), candidates, &format!(" v{n}")),
                    None,
                    &Ticket::detached(),
                )
                .expect("rank")
        })
    });
    group.finish();
    if !pairs.is_empty() {
        let median = |mut times: Vec<Duration>| {
            times.sort();
            times[times.len() / 2].as_secs_f64() * 1e3
        };
        let forward = median(pairs.iter().map(|p| p.0).collect());
        let request = median(pairs.iter().map(|p| p.1).collect());
        // One line for scripts/bench-recommend.
        eprintln!(
            "interleaved: {} pairs, user-text forward {forward:.3} ms, /recommend {request:.3} ms (medians): {:.3}x",
            pairs.len(),
            request / forward
        );
    }
}

criterion_group!(benches, bench_recommend);
criterion_main!(benches);
