//! Live statistics (issue 29): what bringing a bundle's statistics forward
//! costs, and what a refresh running beside requests does to them.
//!
//! 1. **Merge at 100,000 items**: statistics shaped like the shipped ones
//!    (each item with 50 co-purchase neighbours, prices, counts) and 50,000
//!    purchases by 10,000 shoppers over the 30 days after their history;
//!    the time `merge_live_stats` takes (median of 5) and the resident
//!    memory the merged copy adds (the base stays loaded beside it while a
//!    refresh runs, as in the server).
//! 2. **Requests with the refresh running**: the committed bundle served
//!    in-process through the router with an embedded store holding 20,000
//!    purchases after its history; one client asks `/recommend` for 100
//!    candidates with a never-seen profile each time (one encoder pass, the
//!    usual request), while a thread calls `Service::refresh_live_stats`
//!    every second (60 times the default rate), against the same client
//!    with no refresh; the phases alternate 4 times; p50 and p99 of each.
//!
//! `cargo bench --bench live_stats` (`-- --secs N` per phase, default 5).
//! Under `cargo test` it runs a smoke version (a 2,000-item merge, 1 s
//! phases) and checks only that every request succeeded.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request};
use serde_json::{json, Value};
use shoprank::{app, merge_live_stats, AppState, HistoryStats, ItemPos, ItemStats, Metrics, Purchase, Service};
use tower::ServiceExt;

const DAY: i64 = 86_400;
/// 2011-11-01 00:00:00 UTC, where the committed bundle's history ends.
const HISTORY_END: i64 = 1_320_105_600;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Deterministic pseudo-random numbers (no dependency for a fixture).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn synthetic_base(items: usize) -> HistoryStats {
    let mut rng = Lcg(7);
    let all = (0..items)
        .map(|i| {
            let buyers = 1 + rng.below(200) as u32;
            ItemStats {
                id: format!("item-{i}"),
                text: format!("product number {i}"),
                buyers,
                recent_buyers: buyers / 4,
                week_buyers: buyers / 20,
                age_days: rng.below(400) as f32,
                price: Some(1.0 + rng.below(5_000) as f32 / 100.0),
                neighbours: (0..50).map(|_| (ItemPos::new(rng.below(items)), 0.05)).collect(),
                recent_ease: (0..50).map(|_| (ItemPos::new(rng.below(items)), 0.01)).collect(),
                quantity: Some(6.0),
            }
        })
        .collect();
    HistoryStats::from_parts("2011-11-01 00:00:00".into(), 50_000, all)
}

fn merge_cost(items: usize, purchases: usize, runs: usize) {
    let before = rss_mib();
    let base = synthetic_base(items);
    let base_mib = rss_mib() - before;
    let mut rng = Lcg(11);
    let bought: Vec<Purchase> = (0..purchases)
        .map(|_| Purchase {
            user: format!("shopper-{}", rng.below(purchases / 5 + 1)),
            item: format!("item-{}", rng.below(items + items / 50)),
            time: HISTORY_END + rng.below(30 * DAY as usize) as i64,
            price: Some(2.5),
            quantity: Some(6.0),
        })
        .collect();
    let now = HISTORY_END + 30 * DAY;
    let mut times = Vec::new();
    let mut added = 0.0;
    for _ in 0..runs {
        let at = rss_mib();
        let started = Instant::now();
        let merged = merge_live_stats(&base, &bought, now, |_| None);
        times.push(started.elapsed().as_secs_f64());
        added = f64::max(added, rss_mib() - at);
        assert!(merged.items.len() >= items);
        drop(merged);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "merge: {items} items, {purchases} purchases: median {:.0} ms (min {:.0}, max {:.0}); \
         base statistics {base_mib:.0} MiB resident, the merged copy +{added:.0} MiB while it lives",
        times[times.len() / 2] * 1e3,
        times[0] * 1e3,
        times[times.len() - 1] * 1e3
    );
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn call(state: &AppState, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn requests_with_refresh(secs: f64, stored_purchases: usize) {
    let settings = common::settings();
    let metrics = Metrics::new();
    let state = AppState::new(metrics.clone(), &settings);
    let service = Arc::new(Service::build(&settings, metrics).expect("the service builds"));
    state.install(service.clone());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let titles = common::corpus("titles.jsonl");
    let mut rng = Lcg(3);
    for batch in 0..stored_purchases.div_ceil(1000) {
        let events: Vec<Value> = (0..1000.min(stored_purchases - batch * 1000))
            .map(|k| {
                let n = batch * 1000 + k;
                json!({"event_id": format!("e{n}"), "user_id": format!("s{}", rng.below(4000)),
                       "item_id": format!("{}", 20_000 + rng.below(3000)), "type": "purchase",
                       "timestamp": HISTORY_END + rng.below(30 * DAY as usize) as i64, "price": 2.0})
            })
            .collect();
        let (status, body) = runtime.block_on(call(&state, "POST", "/v1/events", &json!({"events": events})));
        assert_eq!(status, 200, "{body}");
    }
    service.refresh_live_stats().expect("a refresh");
    let candidates: Vec<Value> =
        titles.iter().take(100).enumerate().map(|(i, t)| json!({"id": format!("c{i}"), "text": t})).collect();
    let mut next = 0usize;
    let mut phase = |refreshing: bool| -> Vec<f64> {
        let stop = Arc::new(AtomicBool::new(false));
        let refresher = refreshing.then(|| {
            let (stop, service) = (stop.clone(), service.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    service.refresh_live_stats().expect("a refresh");
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        });
        let mut latencies = Vec::new();
        let started = Instant::now();
        while started.elapsed().as_secs_f64() < secs {
            next += 1;
            let body = json!({"user": {"text": format!("{} for shop {next}", titles[next % titles.len()])},
                              "candidates": candidates, "top_k": 10});
            let at = Instant::now();
            let (status, answer) = runtime.block_on(call(&state, "POST", "/recommend", &body));
            latencies.push(at.elapsed().as_secs_f64() * 1e3);
            assert_eq!(status, 200, "{answer}");
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(refresher) = refresher {
            refresher.join().unwrap();
        }
        latencies
    };
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        without.extend(phase(false));
        with.extend(phase(true));
    }
    without.sort_by(f64::total_cmp);
    with.sort_by(f64::total_cmp);
    let (p50a, p99a, p50b, p99b) =
        (percentile(&without, 0.5), percentile(&without, 0.99), percentile(&with, 0.5), percentile(&with, 0.99));
    println!(
        "requests ({stored_purchases} stored purchases, refresh every 1 s): without refresh p50 {p50a:.2} ms \
         p99 {p99a:.2} ms ({} requests); with p50 {p50b:.2} ms p99 {p99b:.2} ms ({} requests); p99 ratio {:.2}",
        without.len(),
        with.len(),
        p99b / p99a
    );
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let secs = std::env::args().skip_while(|a| a != "--secs").nth(1).and_then(|s| s.parse().ok()).unwrap_or(if smoke {
        1.0
    } else {
        5.0
    });
    common::configure_threads_once();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = ["avx2", "avx512_vnni", "amx_int8"].iter().filter(|f| cpu.contains(*f)).copied().collect::<Vec<_>>();
    println!("CPU flags: {}", flags.join(", "));
    if smoke {
        merge_cost(2_000, 1_000, 1);
        requests_with_refresh(secs, 2_000);
    } else {
        merge_cost(100_000, 50_000, 5);
        requests_with_refresh(secs, 20_000);
    }
}
