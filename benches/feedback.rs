//! Feedback-loop load run (issue 13): a real `shoprank serve` process per
//! store engine, driven over HTTP on 127.0.0.1, side by side in one run:
//!
//! 1. **Idle**: `/recommend` latency, one client, 100 cached candidates and
//!    a never-seen user text each time (one encoder pass, the usual
//!    request), p50 and p99.
//! 2. **Ingestion**: 4 clients posting batches of 500 new events as fast
//!    as the server acknowledges them (each answer means committed): events/s.
//! 3. **Both, at the target rate**: ingestion paced at the engine's target
//!    (20,000 events/s embedded, 5,000 PostgreSQL), and the idle run's
//!    `/recommend` client beside it: p99 against the idle p99.
//! 4. **Both, flat out**: as 3 with unpaced ingestion, for the record (on 2
//!    cores, unpaced ingestion and its clients take the CPU requests need).
//! 4. **Swaps** (embedded store only): 4 `/recommend` clients for a steady
//!    period, then as long again while `POST /admin/reload` swaps between two
//!    bundle versions every second: failed requests, and the p99 and worst
//!    latency within 1 s of a swap against the steady p99.
//!
//! Each engine is the embedded SQLite store in a fresh directory, and
//! PostgreSQL at $SHOPRANK_TEST_POSTGRES (default
//! postgres://postgres@127.0.0.1:5432/test, a fresh schema) when reachable.
//! The clients run on the server's machine, so on 2 cores they take CPU the
//! server would otherwise have: the figures are a floor.
//!
//! `cargo bench --bench feedback` (`-- --secs N` per phase, default 6; the
//! idle and paced phases alternate 4 times).
//! Under `cargo test` it runs a smoke version (1 s phases) and checks only
//! that every request succeeded.

#[path = "common.rs"]
mod common;
#[path = "http.rs"]
mod http;
#[path = "../tests/support/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use self::http::{percentile, Client};
use self::server::ServerProcess;

const TOKEN: &str = "bench-token";

/// Alternations of the idle and the paced phase.
const ROUNDS: usize = 4;

/// `shoprank serve` on a store and a bundle directory, once ready; killed
/// when dropped (tests/support/server.rs).
fn start_server(store_url: &str, bundles: &Path) -> ServerProcess {
    let settings = common::settings();
    let bundles = bundles.display().to_string();
    let env = [
        ("SHOPRANK__ENCODER__SOURCE", settings.encoder.source.as_str()),
        ("SHOPRANK__BUNDLE__PATH", bundles.as_str()),
        ("SHOPRANK__STORE__URL", store_url),
        ("SHOPRANK__ADMIN__TOKEN", TOKEN),
        ("SHOPRANK_LOG", "shoprank=warn"),
    ];
    ServerProcess::start(env!("CARGO_BIN_EXE_shoprank"), &env, true)
}

/// A fresh PostgreSQL schema as a store URL, if PostgreSQL answers.
fn postgres_url() -> Option<String> {
    let base =
        std::env::var("SHOPRANK_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut config: postgres::Config = base.parse().ok()?;
    config.connect_timeout(Duration::from_secs(3));
    let Ok(mut client) = config.connect(postgres::NoTls) else {
        println!("PostgreSQL at {base} is unreachable: its rows are skipped");
        return None;
    };
    let schema = format!("shoprank_bench_{}", std::process::id());
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).ok()?;
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{separator}options=-c%20search_path%3D{schema}"))
}

/// Two versions of the committed bundle, `v1` (CURRENT) and `v2`.
fn bundle_versions() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoprank-bench-bundles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for version in ["v1", "v2"] {
        let to = dir.join(version);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(common::repo_path("models/bundle")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        let manifest = to.join("bundle.json");
        let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
        value["version"] = json!(version);
        std::fs::write(&manifest, value.to_string()).unwrap();
    }
    std::fs::write(dir.join("CURRENT"), "v1\n").unwrap();
    dir
}

/// Request bodies: 100 fixed candidates (cached after the first request)
/// and a never-seen user text each time.
struct Bodies {
    titles: Vec<String>,
    counter: AtomicUsize,
}

impl Bodies {
    fn recommend(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let candidates: Vec<Value> = (0..100).map(|i| json!({"id": format!("c{i}"), "text": self.titles[i]})).collect();
        let history = format!("{} visit {n}", self.titles[100 + n % 64]);
        json!({"user": {"id": format!("u{}", n % 500), "history": [history]}, "candidates": candidates}).to_string()
    }

    /// A batch of new events, written as text: building it as a JSON tree
    /// would cost the clients (on the server's cores) more than the server.
    fn events(&self, batch: usize) -> String {
        use std::fmt::Write;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut body = String::with_capacity(batch * 170 + 16);
        body.push_str("{\"events\":[");
        for i in 0..batch {
            let kind = if i % 10 == 0 { "purchase" } else { "impression" };
            let _ = write!(
                body,
                "{}{{\"event_id\":\"b{n}-{i}\",\"user_id\":\"u{}\",\"item_id\":\"c{}\",\"type\":\"{kind}\",\
                 \"timestamp\":{},\"request_id\":\"default.00000000000000ff\"}}",
                if i == 0 { "" } else { "," },
                i % 97,
                i % 100,
                1_700_000_000 + i
            );
        }
        body.push_str("]}");
        body
    }
}

/// When each answered request started and its latency (ms), and how many
/// requests failed.
type Timed = (Vec<(Instant, f64)>, usize);

/// Sequential `/recommend` latencies (ms) until `stop`, and non-200 answers.
async fn recommend_until(port: u16, bodies: Arc<Bodies>, stop: Arc<AtomicBool>) -> Timed {
    let mut client = Client::connect(port).await.expect("connect");
    let (mut samples, mut failed) = (Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match client.send("POST", "/recommend", bodies.recommend()).await {
            Ok((200, _, _)) => samples.push((started, started.elapsed().as_secs_f64() * 1e3)),
            _ => failed += 1,
        }
    }
    (samples, failed)
}

/// Events acknowledged by one client posting batches of 500 until `stop`,
/// at most `per_sec` events a second (`None`: as fast as answered).
async fn ingest_until(port: u16, bodies: Arc<Bodies>, stop: Arc<AtomicBool>, per_sec: Option<f64>) -> (usize, usize) {
    let mut client = Client::connect(port).await.expect("connect");
    let (mut events, mut refused) = (0, 0);
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(rate) = per_sec {
            let due = started + Duration::from_secs_f64(events as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        match client.send("POST", "/v1/events", bodies.events(500)).await {
            Ok((200, _, _)) => events += 500,
            Ok((_, retry, _)) => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(retry.unwrap_or(1) * 100)).await;
            }
            Err(_) => client = Client::connect(port).await.expect("reconnect"),
        }
    }
    (events, refused)
}

fn latencies(samples: &[(Instant, f64)]) -> Vec<f64> {
    samples.iter().map(|(_, ms)| *ms).collect()
}

struct EngineFigures {
    idle_p50: f64,
    idle_p99: f64,
    events_per_sec: f64,
    paced_p99: f64,
    paced_events_per_sec: f64,
    busy_p99: f64,
    busy_events_per_sec: f64,
    failed: usize,
}

async fn engine(
    name: &str,
    store_url: &str,
    bundles: &Path,
    bodies: &Arc<Bodies>,
    secs: f64,
    target: f64,
) -> EngineFigures {
    let server = start_server(store_url, bundles);
    let port = server.port();
    let phase = Duration::from_secs_f64(secs);
    let run = |recommend: bool, ingest: usize, per_sec: Option<f64>| {
        let bodies = bodies.clone();
        async move {
            let stop = Arc::new(AtomicBool::new(false));
            let recommending = recommend.then(|| tokio::spawn(recommend_until(port, bodies.clone(), stop.clone())));
            let ingesting: Vec<_> = (0..ingest)
                .map(|_| {
                    let per_client = per_sec.map(|rate| rate / ingest as f64);
                    tokio::spawn(ingest_until(port, bodies.clone(), stop.clone(), per_client))
                })
                .collect();
            let started = Instant::now();
            tokio::time::sleep(phase).await;
            stop.store(true, Ordering::Relaxed);
            let (samples, failed) = match recommending {
                Some(task) => task.await.unwrap(),
                None => (Vec::new(), 0),
            };
            let mut events = 0;
            for task in ingesting {
                events += task.await.unwrap().0;
            }
            (samples, failed, events as f64 / started.elapsed().as_secs_f64())
        }
    };
    // Warm the candidates' cache and the allocator.
    let _ = run(true, 0, None).await;
    // Idle and paced alternate, so that drift in the machine's speed falls
    // on both alike.
    let (mut idle, mut paced) = (Vec::new(), Vec::new());
    let (mut failed, mut paced_events_per_sec) = (0, 0.0);
    for _ in 0..ROUNDS {
        let (samples, f, _) = run(true, 0, None).await;
        idle.extend(latencies(&samples));
        failed += f;
        let (samples, f, rate) = run(true, 4, Some(target)).await;
        paced.extend(latencies(&samples));
        failed += f;
        paced_events_per_sec += rate / ROUNDS as f64;
    }
    let (_, _, events_per_sec) = run(false, 4, None).await;
    let (busy, failed_busy, busy_events_per_sec) = run(true, 4, None).await;
    let mut busy = latencies(&busy);
    let figures = EngineFigures {
        idle_p50: percentile(&mut idle, 0.5),
        idle_p99: percentile(&mut idle, 0.99),
        events_per_sec,
        paced_p99: percentile(&mut paced, 0.99),
        paced_events_per_sec,
        busy_p99: percentile(&mut busy, 0.99),
        busy_events_per_sec,
        failed: failed + failed_busy,
    };
    println!(
        "{name:<10} idle /recommend p50 {:.2} ms p99 {:.2} ms ({} requests) | ingestion alone {:.0} events/s | \
         paced at {target:.0}/s: {:.0} events/s, p99 {:.2} ms ({} requests) | flat out: {:.0} events/s, p99 {:.2} ms",
        figures.idle_p50,
        figures.idle_p99,
        idle.len(),
        figures.events_per_sec,
        figures.paced_events_per_sec,
        figures.paced_p99,
        paced.len(),
        figures.busy_events_per_sec,
        figures.busy_p99,
    );
    figures
}

/// Steady p99 of 4 clients, then p99 and worst latency within 1 s after
/// each of the swaps made while they run, and the failed requests.
async fn swaps(store_url: &str, bundles: &Path, bodies: &Arc<Bodies>, secs: f64) -> (f64, f64, f64, usize, usize) {
    let server = start_server(store_url, bundles);
    let port = server.port();
    let clients = |stop: Arc<AtomicBool>| {
        (0..4).map(|_| tokio::spawn(recommend_until(port, bodies.clone(), stop.clone()))).collect::<Vec<_>>()
    };
    let collect = |tasks: Vec<tokio::task::JoinHandle<Timed>>| async move {
        let (mut samples, mut failed) = (Vec::new(), 0);
        for task in tasks {
            let (s, f) = task.await.unwrap();
            samples.extend(s);
            failed += f;
        }
        (samples, failed)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let steady = clients(stop.clone());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (steady, mut failed) = collect(steady).await;
    let mut steady = latencies(&steady);
    let steady_p99 = percentile(&mut steady, 0.99);

    let stop = Arc::new(AtomicBool::new(false));
    let swapping = clients(stop.clone());
    let mut admin = Client::connect(port).await.expect("connect");
    let mut swapped_at = Vec::new();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut version = 2;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let body = json!({"version": format!("v{version}")}).to_string();
        let request = hyper::Request::builder()
            .method("POST")
            .uri("/admin/reload")
            .header("host", "localhost")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(http_body_util::Full::new(axum::body::Bytes::from(body)))
            .unwrap();
        swapped_at.push(Instant::now());
        let (status, _, answer) = admin.send_request(request).await.expect("reload");
        assert_eq!(status, 200, "reload: {}", String::from_utf8_lossy(&answer));
        version = 3 - version;
    }
    stop.store(true, Ordering::Relaxed);
    let (during, more_failed) = collect(swapping).await;
    failed += more_failed;
    let mut near: Vec<f64> = during
        .iter()
        .filter(|(at, _)| {
            swapped_at.iter().any(|s| *at + Duration::from_secs(1) >= *s && *at <= *s + Duration::from_secs(1))
        })
        .map(|(_, ms)| *ms)
        .collect();
    let worst = near.iter().copied().fold(0.0, f64::max);
    let near_p99 = percentile(&mut near, 0.99);
    (steady_p99, near_p99, worst, failed, swapped_at.len())
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 6.0 } else { 0.5 });
    let bodies = Arc::new(Bodies { titles: common::corpus("titles.jsonl"), counter: AtomicUsize::new(0) });
    let bundles = bundle_versions();
    let sqlite = common::settings().store.url;
    // The synchronous PostgreSQL client may not run inside the runtime.
    let postgres = postgres_url();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        println!("feedback load run, {secs} s per phase; batches of 500 events; CPU: {}", cpu());
        let mut rows = Vec::new();
        let embedded = engine("embedded", &sqlite, &bundles, &bodies, secs, 20_000.0).await;
        rows.push(("embedded (SQLite)", embedded, 20_000.0));
        if let Some(url) = &postgres {
            rows.push(("PostgreSQL", engine("postgres", url, &bundles, &bodies, secs, 5_000.0).await, 5_000.0));
        }
        let swap_store = format!("{sqlite}-swaps");
        let (steady_p99, near_p99, worst, swap_failed, swaps) = swaps(&swap_store, &bundles, &bodies, secs).await;
        println!("\n| measure | figure | target | met |\n|---|---|---|---|");
        let mut failed = swap_failed;
        for (name, f, target) in &rows {
            failed += f.failed;
            println!("| {name}: ingestion alone | {:.0} events/s | >= {target:.0} | {} |", f.events_per_sec, yes(f.events_per_sec >= *target));
            let ratio = f.paced_p99 / f.idle_p99;
            println!(
                "| {name}: /recommend p99 while ingesting at {target:.0}/s | {:.2} ms vs {:.2} idle = {ratio:.2}x ({:.0} events/s meanwhile) | <= 1.3x | {} |",
                f.paced_p99, f.idle_p99, f.paced_events_per_sec, yes(ratio <= 1.3)
            );
            println!(
                "| {name}: the same, ingestion flat out | {:.2} ms = {:.2}x ({:.0} events/s) | (record) | |",
                f.busy_p99,
                f.busy_p99 / f.idle_p99,
                f.busy_events_per_sec
            );
        }
        println!("| {swaps} swaps under 4 clients: failed requests | {swap_failed} | 0 | {} |", yes(swap_failed == 0));
        println!(
            "| p99 within 1 s of a swap | {near_p99:.2} ms vs steady {steady_p99:.2} = {:.2}x (worst {worst:.2} ms = {:.2}x) | <= 2x | {} |",
            near_p99 / steady_p99,
            worst / steady_p99,
            yes(near_p99 <= 2.0 * steady_p99)
        );
        assert_eq!(failed, 0, "requests failed during the run");
    });
}

fn yes(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

/// The CPU's model name and its widest vector extension, for the record.
fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']))
        .unwrap_or("unknown");
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let simd = if flags.contains("avx512_vnni") {
        "AVX-512 VNNI"
    } else if flags.contains("avx2") {
        "AVX2"
    } else {
        "no AVX2"
    };
    format!("{model}, {simd}, {} cores", std::thread::available_parallelism().map_or(0, |n| n.get()))
}
