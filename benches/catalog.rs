//! Catalog load run: retrieval latency over a 100k-item catalog, restart
//! time, and background ingestion's throughput and its effect on requests.
//! A load script rather than a criterion bench, because the targets are
//! percentiles (p50, p99) and throughputs, measured side by side in one run:
//!
//! 1. **Restart**: 100,000 items with stored embeddings are written to a
//!    fresh SQLite store, then the service opens it (`Catalog::open`).
//! 2. **Retrieval vs re-ranking**: the same users (a new user text each
//!    request, as in `benches/recommend.rs`) ask with 100 cached candidates
//!    and with none (retrieval from the 100k catalog), interleaved.
//! 3. **Search, hybrid vs dense only**: short queries (two or three words
//!    of a catalog title, a third of them with a typo) without candidates,
//!    interleaved between this service (lexical index on) and a second one
//!    on the same store with `catalog.lexical_index = false`,
//!    `lexical_k = 0` and `search.lexical_weight = 0`: search as it was
//!    before the lexical index. Its start-up time and resident memory are
//!    the lexical index's cost.
//! 4. **Ingestion**: the encoder's throughput on 16-text batches of new
//!    titles through the request path, then catalog ingestion's throughput
//!    on as many new items; then the no-candidate request's latency while
//!    ingestion runs, against the idle figure.
//!
//! `cargo bench --bench catalog` (`-- --items N --requests N` to change
//! sizes; `-- --lexical-only N`: only the lexical index over N titles, its
//! build time and memory, e.g. at a million).
//!
//! At a million items, on a store `shoprank scale-catalog` wrote (see the
//! README's "Scaling"): `-- --store DIR --restart-only [--no-lexical]` is
//! one restart in a fresh process (ready seconds, resident memory, how the
//! inverted file was made), and `-- --store DIR` runs 1 and 2 on that store
//! (recall against an `f32` exact scan streamed from the store, then the
//! latency ratio), without the search and ingestion parts.
//! The 100k items' vectors are mixes of the 2,000 fixture titles' real
//! embeddings plus noise (embedding 100k texts would take the run an hour):
//! the scan's cost does not depend on what the vectors say.

#[path = "common.rs"]
mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BinaryHeap, HashSet};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use shoprank::{
    Candidate, CatalogItem, CatalogStore, HistoryItem, ItemFilter, LexicalIndex, LexicalQuery, Metrics, PendingItem,
    RankQuery, Service, SqliteStore, Ticket,
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, samples: &mut [f64]) -> (f64, f64) {
    let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
    println!("{name:<44} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  ({} requests)", samples.len());
    (p50, p99)
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// This process's resident memory, MiB (Linux; 0 elsewhere).
fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// A `/proc/self/status` figure in MiB (`VmRSS:`, `VmHWM:` the peak).
fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

/// The bytes of the files in `dir`, MiB.
fn dir_mib(dir: &std::path::Path) -> f64 {
    let bytes: u64 = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0);
    bytes as f64 / (1 << 20) as f64
}

/// The `k` nearest stored items to each query by the exact `f32` cosine,
/// streamed from the store (never holding every vector).
fn exact_f32_truth(store: &SqliteStore, key: &str, queries: &[Vec<f32>], k: usize) -> Vec<HashSet<String>> {
    #[derive(PartialEq)]
    struct Worst(f32, String);
    impl Eq for Worst {}
    impl PartialOrd for Worst {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Worst {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            other.0.total_cmp(&self.0)
        }
    }
    let mut heaps: Vec<BinaryHeap<Worst>> = queries.iter().map(|_| BinaryHeap::new()).collect();
    store
        .load_each(key, &mut |stored| {
            let Some(vector) = stored.embedding else { return };
            for (query, heap) in queries.iter().zip(&mut heaps) {
                let score: f32 = query.iter().zip(&vector).map(|(a, b)| a * b).sum();
                if heap.len() < k {
                    heap.push(Worst(score, stored.item.id.clone()));
                } else if heap.peek().is_some_and(|w| score > w.0) {
                    heap.pop();
                    heap.push(Worst(score, stored.item.id.clone()));
                }
            }
        })
        .expect("load");
    heaps.into_iter().map(|h| h.into_iter().map(|w| w.1).collect()).collect()
}

/// `--restart-only`: one `Service::build` on `--store`, in this fresh
/// process: seconds to ready and resident memory (now and peak).
fn restart_only(settings: &shoprank::Settings) {
    let started = Instant::now();
    let service = Service::build(settings, Metrics::new()).expect("service");
    let secs = started.elapsed().as_secs_f64();
    let catalog = service.catalog().expect("catalog");
    let (items, embedded) = catalog.index().counts();
    println!(
        "restart: ready in {secs:.2} s with {items} items ({embedded} embedded), lexical index {}: RSS {:.0} MiB \
         (peak {:.0} MiB; of it file pages {:.0} MiB), vectors and lists {:.0} MiB, inverted file {:?}, \
         lexical index {:?} ({:.0} MiB on disk)",
        if settings.catalog.lexical_index { "on" } else { "off" },
        rss_mib(),
        status_mib("VmHWM:"),
        status_mib("RssFile:"),
        catalog.index().vector_bytes() as f64 / (1 << 20) as f64,
        catalog.index().ann_start(),
        catalog.index().lexical_start(),
        dir_mib(&std::path::Path::new(&settings.store.url).join("lexical")),
    );
}

/// `--lexical-only N`: the lexical index alone over N catalog-like texts
/// (fixture titles with a number, as the catalog below), built as a
/// start-up builds it.
fn lexical_only(items: usize) {
    let titles = common::corpus("titles.jsonl");
    let before = rss_mib();
    let started = Instant::now();
    let texts: Vec<String> = (0..items).map(|i| format!("{} #{i}", titles[i % titles.len()])).collect();
    let index = LexicalIndex::build(texts.iter().map(String::as_str)).expect("lexical index");
    let secs = started.elapsed().as_secs_f64();
    drop(texts);
    let stats = index.stats();
    let query = LexicalQuery::new("red lunch bag", &stats);
    let started = Instant::now();
    for _ in 0..100 {
        index.search(&query, 100).expect("search");
    }
    println!(
        "lexical index over {items} items: built in {secs:.1} s, {:.0} MiB resident (texts freed), \
         top-100 search {:.2} ms",
        rss_mib() - before,
        started.elapsed().as_secs_f64() * 10.0
    );
}

fn main() {
    common::configure_threads_once();
    if std::env::args().any(|a| a == "--lexical-only") {
        return lexical_only(arg("--lexical-only", 1_000_000));
    }
    // `cargo test --all-targets` runs this file too, without `--bench`: a
    // small smoke run then checks that the load run works, in seconds.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let flag = |name: &str| std::env::args().any(|a| a == name);
    let given_store: Option<String> = {
        let args: Vec<String> = std::env::args().collect();
        args.iter().position(|a| a == "--store").and_then(|i| args.get(i + 1)).cloned()
    };
    let mut items = arg("--items", if smoke { 2_000 } else { 100_000 });
    let requests = arg("--requests", if smoke { 10 } else { 200 });
    let ingested_titles = if smoke { 64 } else { usize::MAX };
    let mut settings = common::settings();
    settings.cache.max_bytes = 512 << 20;
    if let Some(store) = &given_store {
        settings.store.url = store.clone();
        if flag("--no-lexical") {
            settings.catalog.lexical_index = false;
            settings.catalog.lexical_k = 0;
        }
        if flag("--restart-only") {
            return restart_only(&settings);
        }
    }
    let mut titles = common::corpus("titles.jsonl");
    if smoke {
        titles.truncate(200);
    }
    let users = common::corpus("user_texts.jsonl");
    let mode = if smoke { " (smoke run: `cargo bench --bench catalog` for the figures)" } else { "" };
    println!("catalog load run: {items} items, {requests} requests per figure{mode}");

    // 1. A store with `items` embedded items (unless given), then a restart on it.
    let mut key = String::new();
    if given_store.is_none() {
        // The fixture titles' embeddings, through a throw-away service
        // (on an empty store).
        let service = Service::build(&settings, Metrics::new()).expect("service");
        key = service.ranker().embedder().encoder().embedding_key();
        // In chunks: one request may hold batching.max_request_tokens.
        let refs: Vec<&str> = titles.iter().map(String::as_str).collect();
        let vectors: Vec<Vec<f32>> = refs
            .chunks(64)
            .flat_map(|chunk| service.ranker().embedder().embed(chunk, &Ticket::detached()).expect("embed"))
            .map(|v| v.to_vec())
            .collect();
        drop(service);
        let store = SqliteStore::open(std::path::Path::new(&settings.store.url)).expect("store");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let started = Instant::now();
        for chunk in (0..items).collect::<Vec<_>>().chunks(10_000) {
            let batch: Vec<CatalogItem> = chunk
                .iter()
                .map(|&i| CatalogItem {
                    id: format!("sku-{i}"),
                    text: format!("{} #{i}", titles[i % titles.len()]),
                    price: Some(1.0 + (i % 50) as f32),
                    available: true,
                    attributes: serde_json::Value::Null,
                })
                .collect();
            store.upsert(&batch).expect("upsert");
            let embedded: Vec<(PendingItem, Vec<f32>)> = batch
                .into_iter()
                .map(|item| {
                    let (a, b) = (rng.gen_range(0..vectors.len()), rng.gen_range(0..vectors.len()));
                    let mixed = (0..vectors[a].len())
                        .map(|d| 0.7 * vectors[a][d] + 0.3 * vectors[b][d] + rng.gen_range(-0.02..0.02))
                        .collect();
                    (PendingItem { id: item.id, text: item.text }, unit(mixed))
                })
                .collect();
            store.set_embeddings(&key, &embedded).expect("embeddings");
        }
        println!("wrote {items} items with embeddings in {:.1} s", started.elapsed().as_secs_f64());
    }
    let dense_settings = {
        let mut s = settings.clone();
        s.catalog.lexical_index = false;
        s.catalog.lexical_k = 0;
        s.search.lexical_weight = 0.0;
        s
    };
    let scale_run = given_store.is_some();
    let dense = (!scale_run).then(|| {
        let (rss, started) = (rss_mib(), Instant::now());
        let dense = Service::build(&dense_settings, Metrics::new()).expect("dense-only service");
        (dense, started.elapsed().as_secs_f64(), rss_mib() - rss)
    });
    let (rss, started) = (rss_mib(), Instant::now());
    let service = Service::build(&settings, Metrics::new()).expect("service");
    let (secs, mib) = (started.elapsed().as_secs_f64(), rss_mib() - rss);
    let lexical = service.catalog().expect("catalog").index().lexical_start();
    println!(
        "restart: service ready (encoder, bundle, {items}-item catalog) in {secs:.2} s, {mib:.0} MiB; lexical index {lexical:?}"
    );
    // Again, now that the lexical index is on disk beside the store (on a
    // fresh store the first start built it).
    let service = if scale_run || !settings.catalog.lexical_index {
        service
    } else {
        drop(service);
        let started = Instant::now();
        let service = Service::build(&settings, Metrics::new()).expect("service");
        let lexical = service.catalog().expect("catalog").index().lexical_start();
        println!("restart again: ready in {:.2} s; lexical index {lexical:?}", started.elapsed().as_secs_f64());
        service
    };
    if let Some((_, dense_secs, dense_mib)) = &dense {
        println!(
            "restart without the lexical index: {dense_secs:.2} s, {dense_mib:.0} MiB: the index costs {:.2} s and {:.0} MiB",
            secs - dense_secs,
            mib - dense_mib
        );
    }
    let (ranker, bundle, catalog) = (service.ranker(), service.bundle(), service.catalog().expect("catalog"));
    if scale_run {
        key = ranker.embedder().encoder().embedding_key();
        items = catalog.index().counts().1;
        println!(
            "RSS {:.0} MiB (peak {:.0} MiB), inverted file {:?}",
            rss_mib(),
            status_mib("VmHWM:"),
            catalog.index().ann_start()
        );
    }

    // Retrieval (int8 vectors; above catalog.exact_scan_max the inverted
    // file) against an exact f32 scan of the stored vectors: recall@k over
    // 50 queries, the users' texts (as requests without a search query).
    {
        let store = SqliteStore::open(std::path::Path::new(&settings.store.url)).expect("store");
        let k = settings.catalog.retrieve_k;
        let texts: Vec<&str> = users.iter().take(50).map(String::as_str).collect();
        let queries: Vec<Vec<f32>> = texts
            .chunks(16)
            .flat_map(|chunk| ranker.embedder().embed(chunk, &Ticket::detached()).expect("embed"))
            .map(|v| v.to_vec())
            .collect();
        let started = Instant::now();
        let truth = exact_f32_truth(&store, &key, &queries, k);
        let exact_secs = started.elapsed().as_secs_f64();
        let filter = ItemFilter::default();
        let (mut recall, mut search_ms) = (0.0, Vec::new());
        for (query, truth) in queries.iter().zip(&truth) {
            let view = catalog.index().read();
            let started = Instant::now();
            let found = view.nearest(query, k, &filter);
            search_ms.push(started.elapsed().as_secs_f64() * 1e3);
            recall += found.iter().filter(|(id, _)| truth.contains(*id)).count() as f64 / k as f64;
        }
        let how = if catalog.index().approximate() { "inverted file" } else { "exact scan" };
        println!(
            "retrieval recall@{k} ({how}, int8) against an f32 exact scan: {:.4} ({} queries; the f32 scan streamed from the store took {exact_secs:.1} s)",
            recall / queries.len() as f64,
            queries.len()
        );
        report(&format!("nearest {k} alone ({how})"), &mut search_ms);
    }

    // 2. Retrieval against 100 cached candidates, same users, interleaved.
    let candidates: Vec<Candidate> = titles[..100]
        .iter()
        .enumerate()
        .map(|(i, t)| Candidate {
            id: format!("c{i}"),
            text: t.clone(),
            price: None,
            available: true,
            attributes: serde_json::Value::Null,
        })
        .collect();
    let query = |n: usize, with_candidates: bool| {
        let user = &users[n % users.len()];
        let history = vec![HistoryItem { id: None, text: titles[(n * 7) % titles.len()].clone() }];
        let mut q = RankQuery::new(Some(format!("#{n} {user}")), history, candidates.clone(), 10);
        if !with_candidates {
            q.candidates = None;
        }
        q
    };
    for n in 0..20 {
        ranker.rank(&bundle, &query(1_000_000 + n, true), Some(catalog), &Ticket::detached()).expect("warm");
    }
    let time = |q: &RankQuery| {
        let started = Instant::now();
        ranker.rank(&bundle, q, Some(catalog), &Ticket::detached()).expect("rank");
        started.elapsed().as_secs_f64() * 1e3
    };
    let (mut given, mut retrieved) = (Vec::new(), Vec::new());
    for n in 0..requests {
        // A new user text for each request: both pay the user's forward pass.
        given.push(time(&query(2 * n, true)));
        retrieved.push(time(&query(2 * n + 1, false)));
    }
    let (g50, g99) = report("100 cached candidates", &mut given);
    let (r50, r99) = report(&format!("no candidates, retrieval over {items} items"), &mut retrieved);
    println!(
        "ratio retrieval / candidates: p50 {:.2}x (target <= 1.5x), p99 {:.2}x (target <= 2x)",
        r50 / g50,
        r99 / g99
    );
    if scale_run {
        println!("RSS after the run: {:.0} MiB (peak {:.0} MiB)", rss_mib(), status_mib("VmHWM:"));
        return;
    }
    let (dense, _, _) = dense.expect("dense-only service");

    // 3. Search: short queries from titles, hybrid against dense only.
    let search_query = |n: usize| {
        let title = &titles[(n * 13) % titles.len()];
        let words: Vec<&str> = title.split_whitespace().collect();
        let take = 2 + n % 2;
        let start = (n / 2) % words.len().saturating_sub(take - 1).max(1);
        let mut text = words[start..(start + take).min(words.len())].join(" ").to_lowercase();
        if n.is_multiple_of(3) {
            // A typo: the second letter of the longest word dropped.
            if let Some(word) = text.split(' ').max_by_key(|w| w.len()).filter(|w| w.len() >= 5).map(str::to_string) {
                let typo: String = word.chars().enumerate().filter(|(i, _)| *i != 1).map(|(_, c)| c).collect();
                text = text.replacen(&word, &typo, 1);
            }
        }
        let mut q = RankQuery::new(Some(text), Vec::new(), Vec::new(), 10);
        q.candidates = None;
        q
    };
    let dense_parts = (dense.ranker(), dense.bundle(), dense.catalog().expect("catalog"));
    for n in 0..20 {
        ranker.rank(&bundle, &search_query(500_000 + n), Some(catalog), &Ticket::detached()).expect("warm");
        dense_parts
            .0
            .rank(&dense_parts.1, &search_query(500_000 + n), Some(dense_parts.2), &Ticket::detached())
            .expect("warm");
    }
    let (mut hybrid_ms, mut dense_ms) = (Vec::new(), Vec::new());
    for n in 0..requests {
        // Each query is new to both services' caches.
        let q = search_query(n);
        let started = Instant::now();
        dense_parts.0.rank(&dense_parts.1, &q, Some(dense_parts.2), &Ticket::detached()).expect("rank");
        dense_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        ranker.rank(&bundle, &q, Some(catalog), &Ticket::detached()).expect("rank");
        hybrid_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let (_, d99) = report(&format!("search, dense only, {items} items"), &mut dense_ms);
    let (_, h99) = report(&format!("search, hybrid (lexical + dense), {items} items"), &mut hybrid_ms);
    println!("ratio hybrid / dense-only search: p99 {:.2}x (target <= 1.5x)", h99 / d99);
    drop(dense_parts);
    drop(dense);

    // 4. Ingestion throughput: the encoder on 16-text batches of new texts,
    // then ingestion on as many new items.
    let fresh =
        |tag: &str| -> Vec<String> { titles.iter().take(ingested_titles).map(|t| format!("{t} ({tag})")).collect() };
    let throughput = |tag: &str, batch: usize| {
        let texts = fresh(tag);
        let started = Instant::now();
        for chunk in texts.chunks(batch) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            ranker.embedder().embed(&refs, &Ticket::detached()).expect("embed");
        }
        texts.len() as f64 / started.elapsed().as_secs_f64()
    };
    let full = throughput("full", settings.batching.max_batch_texts);
    let direct = throughput("direct", settings.batching.background_batch_texts);
    let ingest = |tag: &str| {
        let new: Vec<CatalogItem> = fresh(tag)
            .into_iter()
            .enumerate()
            .map(|(i, text)| CatalogItem {
                id: format!("{tag}-{i}"),
                text,
                price: None,
                available: true,
                attributes: serde_json::Value::Null,
            })
            .collect();
        for chunk in new.chunks(settings.catalog.max_upsert_items) {
            catalog.upsert(chunk, settings.catalog.max_items).expect("upsert");
        }
        new.len()
    };
    let wait_ingested = |deadline: Duration| {
        let started = Instant::now();
        while catalog.index().counts().0 != catalog.index().counts().1 {
            assert!(started.elapsed() < deadline, "ingestion did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let started = Instant::now();
    let n = ingest("idle");
    wait_ingested(Duration::from_secs(600));
    let ingested = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "encoder on {}-text batches: {full:.0} texts/s, on {}-text batches: {direct:.0} texts/s",
        settings.batching.max_batch_texts, settings.batching.background_batch_texts
    );
    println!(
        "ingestion with no requests: {ingested:.0} items/s = {:.0}% of full batches (target >= 80%)",
        100.0 * ingested / full
    );

    // Requests while ingestion runs, against the idle figure above.
    ingest("busy");
    let mut busy = Vec::new();
    let mut n = 0;
    while catalog.index().counts().0 != catalog.index().counts().1 && busy.len() < requests {
        busy.push(time(&query(10_000 + n, false)));
        n += 1;
    }
    wait_ingested(Duration::from_secs(600));
    let (_, b99) = report("no candidates, while ingestion runs", &mut busy);
    println!("p99 while ingesting / idle: {:.2}x (target <= 1.3x)", b99 / r99);
}
