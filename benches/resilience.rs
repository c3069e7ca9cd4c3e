//! Resilience suite: a real `shoprank serve` process on 127.0.0.1, driven
//! by misbehaving clients, with a table of what it measured against the
//! targets (issue 12). A load script rather than a criterion bench: the
//! figures are throughputs, latencies, times and RSS, side by side in one run.
//!
//! 1. **Capacity**: closed-loop clients (1, 4, 16) whose every request has
//!    100 never-seen candidates; the best 200-throughput is the reference.
//! 2. **Overload** at 32 and 64 such clients (2× and 4× the 16 of the
//!    reference), closed loop (each asks again once answered), honouring
//!    Retry-After; when the run stops, clients drop their connections
//!    mid-request. Measured: full (not degraded) answers per second against
//!    the reference, and how long the encoder keeps working after the stop.
//!    Then **overload with a deadline**: open-loop clients offering 4× the
//!    reference rate, each request with 100 never-seen candidates and
//!    `deadline_ms`; the share answered 200 within the deadline + 50 ms,
//!    the degraded share, and `/health` latency meanwhile.
//! 3. **Abandoned work**: four requests of 1,000 new texts whose clients
//!    leave after 0.3 s; then a request with cached candidates and a new
//!    user text (one forward pass), against its idle time.
//! 4. **Memory**: 64 clients with cached candidates; peak RSS, and RSS once
//!    the load has stopped, against the RSS before.
//! 5. **Huge texts**: requests with one unique 1.9 MB candidate text each;
//!    the cache's bytes against `cache.max_bytes`, and RSS.
//! 6. **Slow clients**: idle connections and slowloris connections (a
//!    request head never finished); how many the header timeout closed.
//! 7. **SIGTERM** with a slowloris connection open: time to exit.
//!
//! `cargo bench --bench resilience` runs the full suite (about 6 minutes);
//! under `cargo test` (no `--bench`) it runs a short version with smaller
//! counts and durations, about a minute, which CI runs with every test.

#[path = "common.rs"]
mod common;
#[path = "http.rs"]
mod http;
#[path = "../tests/support/server.rs"]
mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use self::http::{percentile, Client};
use self::server::ServerProcess;

/// Sizes of one run: the full suite or the short one CI runs.
struct Plan {
    capacity_secs: u64,
    overload_secs: u64,
    memory_secs: u64,
    huge_texts: usize,
    idle_connections: usize,
    slowloris_connections: usize,
    header_timeout_secs: u64,
}

const FULL: Plan = Plan {
    capacity_secs: 15,
    overload_secs: 30,
    memory_secs: 30,
    huge_texts: 200,
    idle_connections: 500,
    slowloris_connections: 50,
    header_timeout_secs: 10,
};

const SHORT: Plan = Plan {
    capacity_secs: 4,
    overload_secs: 6,
    memory_secs: 6,
    huge_texts: 12,
    idle_connections: 100,
    slowloris_connections: 10,
    header_timeout_secs: 2,
};

/// `shoprank serve` as a child process, once ready; killed when dropped
/// (tests/support/server.rs).
fn start_server(plan: &Plan) -> ServerProcess {
    let settings = common::settings();
    let bundle = settings.bundle.path.display().to_string();
    let header_timeout = plan.header_timeout_secs.to_string();
    let env = [
        ("SHOPRANK__ENCODER__SOURCE", settings.encoder.source.as_str()),
        ("SHOPRANK__BUNDLE__PATH", bundle.as_str()),
        ("SHOPRANK__STORE__URL", settings.store.url.as_str()),
        ("SHOPRANK__SERVER__HEADER_READ_TIMEOUT_SECS", header_timeout.as_str()),
        ("SHOPRANK_LOG", "shoprank=warn"),
    ];
    ServerProcess::start(env!("CARGO_BIN_EXE_shoprank"), &env, true)
}

/// VmRSS of a process, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Threads of a process.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let mut client = Client::connect(port).await.expect("connect");
    let (status, _, body) = client.send("GET", path, String::new()).await.expect("request");
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn metric(port: u16, name: &str) -> f64 {
    let (_, text) = get(port, "/metrics").await;
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// Request bodies: `new` ones have 100 never-seen candidates each; cached
/// ones 100 candidates from a fixed set embedded beforehand.
struct Bodies {
    titles: Vec<String>,
    counter: AtomicUsize,
}

impl Bodies {
    fn new() -> Self {
        Self { titles: common::corpus("titles.jsonl"), counter: AtomicUsize::new(0) }
    }

    fn new_texts(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let candidates: Vec<Value> = (0..100)
            .map(|i| json!({"id": format!("n{i}"), "text": format!("{} batch {n} item {i}", self.titles[(n * 100 + i) % self.titles.len()])}))
            .collect();
        json!({"user": {"query": self.titles[n % self.titles.len()]}, "candidates": candidates}).to_string()
    }

    /// The same 100 candidates; the user text from a small set, so that it
    /// is cached too after a round (no encoder work at all).
    fn cached(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.with_user(&self.titles[100 + n % 16])
    }

    /// The same 100 candidates and a never-seen user text: one forward pass.
    fn cached_candidates(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.with_user(&format!("{} visit {n}", self.titles[100 + n % 16]))
    }

    fn with_user(&self, history: &str) -> String {
        let candidates: Vec<Value> = (0..100).map(|i| json!({"id": format!("c{i}"), "text": self.titles[i]})).collect();
        json!({"user": {"history": [history]}, "candidates": candidates}).to_string()
    }
}

#[derive(Default, Debug)]
struct LoadResult {
    /// Full answers: 200 and not `degraded`.
    ok: usize,
    /// 200, `degraded` (ranked without the encoder's forward pass).
    degraded: usize,
    reconnects: usize,
    statuses: HashMap<u16, usize>,
    latencies_ms: Vec<f64>,
    secs: f64,
}

impl LoadResult {
    fn ok_per_sec(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

/// `clients` closed-loop clients for `secs`, each on its own connection;
/// a 503 with Retry-After makes that client wait as told. At the end the
/// clients drop their connections, mid-request or not.
async fn load(port: u16, clients: usize, secs: u64, body: Arc<dyn Fn() -> String + Send + Sync>) -> LoadResult {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = LoadResult::default();
            let work = async {
                let mut client = Client::connect(port).await.expect("connect");
                loop {
                    let started = Instant::now();
                    match client.send("POST", "/recommend", body()).await {
                        Ok((status, retry, body)) => {
                            *result.statuses.entry(status).or_default() += 1;
                            if status == 200 && is_degraded(&body) {
                                result.degraded += 1;
                            } else if status == 200 {
                                result.ok += 1;
                                result.latencies_ms.push(started.elapsed().as_secs_f64() * 1e3);
                            } else if let Some(seconds) = retry {
                                tokio::time::sleep(Duration::from_secs(seconds)).await;
                            }
                        }
                        // The server closed the kept-alive connection (idle over
                        // the header timeout while this client waited out a
                        // Retry-After): reconnect, as a client's pool would.
                        Err(_) => {
                            result.reconnects += 1;
                            client = Client::connect(port).await.expect("reconnect");
                        }
                    }
                }
            };
            let _ = tokio::time::timeout_at(deadline.into(), work).await;
            result
        }));
    }
    let mut total = LoadResult { secs: secs as f64, ..LoadResult::default() };
    for task in tasks {
        let one = task.await.expect("client task");
        total.ok += one.ok;
        total.degraded += one.degraded;
        total.reconnects += one.reconnects;
        total.latencies_ms.extend(one.latencies_ms);
        for (status, n) in one.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
    }
    total
}

/// Whether a `/recommend` answer says it is `degraded`.
fn is_degraded(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|answer| answer["degraded"] == true)
}

/// What paced clients saw: every answer's status, latency and whether it
/// was degraded, and the `/health` probes' latencies meanwhile.
#[derive(Default)]
struct PacedResult {
    answers: Vec<(u16, f64, bool)>,
    health_ms: Vec<f64>,
    health_failures: usize,
}

/// Open-loop load: `clients` clients, each sending one request every
/// `interval` (staggered), so the offered rate is `clients / interval`
/// whatever the answers take (a storefront's shoppers do not wait for each
/// other); a client whose answer takes longer than its interval sends the
/// next at once. Meanwhile a probe sends `GET /health` on a new connection
/// every 100 ms, as a load balancer does.
async fn paced_load(
    port: u16,
    clients: usize,
    interval: Duration,
    secs: u64,
    body: Arc<dyn Fn() -> String + Send + Sync>,
) -> PacedResult {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut next = started + interval.mul_f64(client as f64 / clients as f64);
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                let sent = Instant::now();
                // A new connection per request: an idle kept-alive one may have
                // been closed meanwhile (header timeout), which is no failure.
                let answer = async {
                    let mut connection = Client::connect(port).await?;
                    connection.send("POST", "/recommend", body()).await
                };
                let (status, degraded) = match answer.await {
                    Ok((status, _, body)) => (status, status == 200 && is_degraded(&body)),
                    Err(_) => (0, false),
                };
                answers.push((status, sent.elapsed().as_secs_f64() * 1e3, degraded));
                next += interval;
            }
            answers
        }));
    }
    let probe = tokio::spawn(async move {
        let (mut latencies, mut failures) = (Vec::new(), 0);
        while Instant::now() < deadline {
            let sent = Instant::now();
            match tokio::time::timeout(Duration::from_secs(5), get(port, "/health")).await {
                Ok((200, _)) => latencies.push(sent.elapsed().as_secs_f64() * 1e3),
                _ => failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (latencies, failures)
    });
    let mut result = PacedResult::default();
    for task in tasks {
        result.answers.extend(task.await.expect("client task"));
    }
    (result.health_ms, result.health_failures) = probe.await.expect("probe task");
    result
}

/// Seconds from now until the encoder has run no forward pass for 300 ms.
async fn seconds_until_idle(port: u16) -> f64 {
    let started = Instant::now();
    let name = "shoprank_encoder_forward_seconds_count";
    let mut last = metric(port, name).await;
    let mut last_change = started;
    while last_change.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = metric(port, name).await;
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    (last_change - started).as_secs_f64()
}

/// One table row: scenario, what was measured, the target, met or not.
struct Row(String, String, String, bool);

fn row(scenario: &str, figure: String, target: &str, met: bool) -> Row {
    println!("  {scenario}: {figure} (target {target}: {})", if met { "met" } else { "NOT met" });
    Row(scenario.into(), figure, target.into(), met)
}

async fn cached_latency_ms(port: u16, bodies: &Bodies, n: usize) -> Vec<f64> {
    latency_ms(port, n, || bodies.cached()).await
}

async fn latency_ms(port: u16, n: usize, body: impl Fn() -> String) -> Vec<f64> {
    let mut client = Client::connect(port).await.expect("connect");
    let mut samples = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let (status, _, _) = client.send("POST", "/recommend", body()).await.expect("request");
        assert_eq!(status, 200);
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    samples
}

async fn suite(plan: &Plan) -> Vec<Row> {
    let server = start_server(plan);
    let port = server.port();
    let bodies = Arc::new(Bodies::new());
    let mut rows = Vec::new();

    // Cache the fixed candidates and user texts.
    cached_latency_ms(port, &bodies, 32).await;

    // 1-2. Capacity, then overload.
    let new_texts: Arc<dyn Fn() -> String + Send + Sync> = {
        let bodies = bodies.clone();
        Arc::new(move || bodies.new_texts())
    };
    let mut best: f64 = 0.0;
    for clients in [1, 4, 16] {
        let result = load(port, clients, plan.capacity_secs, new_texts.clone()).await;
        println!(
            "capacity, {clients} clients: {:.2} full answers/s, {} degraded, statuses {:?}, reconnects {}",
            result.ok_per_sec(),
            result.degraded,
            result.statuses,
            result.reconnects
        );
        best = best.max(result.ok_per_sec());
        seconds_until_idle(port).await;
    }
    for clients in [32, 64] {
        let rss_before = rss_mib(server.pid());
        let result = load(port, clients, plan.overload_secs, new_texts.clone()).await;
        let idle_after = seconds_until_idle(port).await;
        let ratio = result.ok_per_sec() / best;
        println!(
            "overload, {clients} clients: {:.2} full answers/s, {} degraded, statuses {:?}, reconnects {}, RSS {rss_before:.0} -> {:.0} MiB",
            result.ok_per_sec(),
            result.degraded,
            result.statuses,
            result.reconnects,
            rss_mib(server.pid())
        );
        rows.push(row(
            &format!("overload, {clients} clients, new texts"),
            format!(
                "full answers {:.2}/s = {:.0}% of the best at <= 16 clients ({best:.2}/s)",
                result.ok_per_sec(),
                ratio * 100.0
            ),
            ">= 80%",
            ratio >= 0.8,
        ));
        rows.push(row(
            &format!("overload, {clients} clients: after the stop"),
            format!("encoder idle after {idle_after:.2} s"),
            "<= 1 s",
            idle_after <= 1.0,
        ));
    }

    // 2, continued. Open-loop overload at 4x capacity with a deadline: every request
    // answered 200 within it (degraded when the encoder cannot make it).
    let deadline_ms = 2000u64;
    let with_deadline: Arc<dyn Fn() -> String + Send + Sync> = {
        let bodies = bodies.clone();
        Arc::new(move || {
            let mut body: Value = serde_json::from_str(&bodies.new_texts()).expect("a request body");
            body["deadline_ms"] = json!(deadline_ms);
            body.to_string()
        })
    };
    let clients = 64;
    let interval = Duration::from_secs_f64(clients as f64 / (4.0 * best));
    let mut paced = paced_load(port, clients, interval, plan.overload_secs, with_deadline).await;
    seconds_until_idle(port).await;
    let total = paced.answers.len();
    let in_time = paced.answers.iter().filter(|(s, ms, _)| *s == 200 && *ms <= (deadline_ms + 50) as f64).count();
    let degraded = paced.answers.iter().filter(|(_, _, d)| *d).count();
    // Degraded after waiting for the encoder until the deadline (admitted,
    // then not done in time), rather than refused at admission.
    let at_deadline = paced.answers.iter().filter(|(_, ms, d)| *d && *ms >= 0.9 * deadline_ms as f64).count();
    let server_errors = paced.answers.iter().filter(|(s, _, _)| *s >= 500 || *s == 0).count();
    let mut latencies: Vec<f64> = paced.answers.iter().map(|(_, ms, _)| *ms).collect();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for (status, _, _) in &paced.answers {
        *statuses.entry(*status).or_default() += 1;
    }
    println!(
        "deadline overload: {total} requests at {:.2}/s offered, statuses {statuses:?}, {degraded} degraded ({at_deadline} of them at the deadline), p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        clients as f64 / interval.as_secs_f64(),
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99),
        percentile(&mut latencies, 1.0),
    );
    let share = in_time as f64 / total.max(1) as f64;
    rows.push(row(
        &format!("overload at 4x capacity, {clients} clients, new texts, deadline_ms {deadline_ms}"),
        format!(
            "{in_time} of {total} ({:.1}%) answered 200 within {} ms; {degraded} degraded ({:.0}%); {server_errors} 5xx or failed",
            share * 100.0,
            deadline_ms + 50,
            degraded as f64 / total.max(1) as f64 * 100.0
        ),
        ">= 99% within deadline + 50 ms, no 5xx",
        share >= 0.99 && server_errors == 0,
    ));
    let health_p99 = percentile(&mut paced.health_ms, 0.99);
    rows.push(row(
        "/health during that overload",
        format!(
            "p99 {health_p99:.1} ms, max {:.1} ms over {} probes, {} failed",
            percentile(&mut paced.health_ms, 1.0),
            paced.health_ms.len(),
            paced.health_failures
        ),
        "< 50 ms",
        health_p99 < 50.0 && paced.health_failures == 0,
    ));

    // 3. Abandoned work against a request with cached candidates and a new
    // user text (one forward pass), and against a fully cached one.
    let mut idle_new_user = latency_ms(port, 20, || bodies.cached_candidates()).await;
    let idle_new_user = percentile(&mut idle_new_user, 0.5);
    let mut idle_cached = cached_latency_ms(port, &bodies, 20).await;
    let idle_cached = percentile(&mut idle_cached, 0.5);
    let abandon = |round: usize| {
        for k in 0..4 {
            // Short texts (about 7 tokens), so that 1,000 of them fit
            // batching.max_request_tokens and the encoder takes them on.
            let candidates: Vec<Value> =
                (0..1000).map(|i| json!({"id": format!("a{i}"), "text": format!("gift {round} {k} {i}")})).collect();
            let body = json!({"user": {"query": "gift"}, "candidates": candidates}).to_string();
            tokio::spawn(async move {
                let mut client = Client::connect(port).await.expect("connect");
                let _ = tokio::time::timeout(Duration::from_millis(300), client.send("POST", "/recommend", body)).await;
            });
        }
    };
    abandon(0);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut during = latency_ms(port, 5, || bodies.cached_candidates()).await;
    println!("cached candidates + new user text after the abandonment: {during:.1?} ms");
    let worst = percentile(&mut during, 1.0);
    rows.push(row(
        "cached candidates + new user text, after 4 abandoned requests of 1,000 new texts",
        format!("{worst:.1} ms at worst of 5, idle {idle_new_user:.1} ms ({:.2}x)", worst / idle_new_user),
        "<= 2x idle",
        worst <= 2.0 * idle_new_user,
    ));
    seconds_until_idle(port).await;
    abandon(1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut during = cached_latency_ms(port, &bodies, 5).await;
    let worst = percentile(&mut during, 1.0);
    println!(
        "fully cached request (no encoder work) after 4 abandoned requests: {worst:.1} ms at worst of 5, idle {idle_cached:.1} ms ({:.2}x)",
        worst / idle_cached
    );
    let statuses = metric(port, "shoprank_http_requests_total{route=\"/recommend\",status=\"422\"}").await;
    println!("422 answers so far (none expected from the abandoned requests): {statuses}");
    let abandoned = metric(port, "shoprank_encoder_abandoned_texts_total").await;
    let client_closed = metric(port, "shoprank_request_errors_total{kind=\"client_closed\"}").await;
    println!("abandoned texts withdrawn so far: {abandoned}; requests counted client_closed: {client_closed}");
    seconds_until_idle(port).await;

    // 4. Memory with cached candidates.
    let cached: Arc<dyn Fn() -> String + Send + Sync> = {
        let bodies = bodies.clone();
        Arc::new(move || bodies.cached())
    };
    let before = rss_mib(server.pid());
    let peak = Arc::new(std::sync::Mutex::new((0f64, 0usize)));
    let sampler = {
        let peak = peak.clone();
        let pid = server.pid();
        tokio::spawn(async move {
            loop {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                    .map_or(0.0, |kb| kb / 1024.0);
                let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
                {
                    let mut peak = peak.lock().unwrap();
                    *peak = (peak.0.max(rss), peak.1.max(threads));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut result = load(port, 64, plan.memory_secs, cached).await;
    sampler.abort();
    let (peak_rss, peak_threads) = *peak.lock().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_mib(server.pid());
    println!(
        "cached, 64 clients: {:.1} answers/s, p50 {:.1} ms, p99 {:.1} ms, statuses {:?}, threads now {}",
        result.ok_per_sec(),
        percentile(&mut result.latencies_ms, 0.5),
        percentile(&mut result.latencies_ms, 0.99),
        result.statuses,
        threads(server.pid())
    );
    rows.push(row(
        "RSS, 64 clients with cached candidates",
        format!("peak {peak_rss:.0} MiB ({peak_threads} threads), before {before:.0} MiB"),
        "<= 600 MiB",
        peak_rss <= 600.0,
    ));
    rows.push(row(
        "RSS 3 s after that load",
        format!("{after:.0} MiB ({:+.0}% of before)", (after / before - 1.0) * 100.0),
        "within 20% of before",
        after <= before * 1.2,
    ));

    // 5. Unique 1.9 MB texts.
    let budget = metric(port, "shoprank_embedding_cache_bytes").await.max(0.0);
    let rss_before = rss_mib(server.pid());
    let filler = "ceramic mug ".repeat(1_900_000 / 12);
    let mut client = Client::connect(port).await.expect("connect");
    let mut max_cache: f64 = 0.0;
    for i in 0..plan.huge_texts {
        let body = json!({"user": {"query": "mug"}, "candidates": [{"id": "big", "text": format!("{i} {filler}")}]});
        let (status, _, _) = client.send("POST", "/recommend", body.to_string()).await.expect("request");
        assert_eq!(status, 200);
        max_cache = max_cache.max(metric(port, "shoprank_embedding_cache_bytes").await);
    }
    let configured = 128.0 * 1024.0 * 1024.0;
    rows.push(row(
        &format!("{} unique 1.9 MB candidate texts", plan.huge_texts),
        format!(
            "cache {:.2} MiB at most (was {:.2}), RSS {rss_before:.0} -> {:.0} MiB",
            max_cache / 1048576.0,
            budget / 1048576.0,
            rss_mib(server.pid())
        ),
        "cache <= cache.max_bytes (128 MiB)",
        max_cache <= configured,
    ));

    // 6. Slow clients.
    let mut idle_streams = Vec::new();
    for _ in 0..plan.idle_connections {
        idle_streams.push(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"));
    }
    let mut slow_streams = Vec::new();
    for _ in 0..plan.slowloris_connections {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.write_all(b"POST /recommend HTTP/1.1\r\nHost: localhost\r\n").await.expect("write");
        slow_streams.push(stream);
    }
    let mut health = cached_latency_ms(port, &bodies, 5).await;
    println!(
        "with {} idle and {} slowloris connections open: a cached request takes {:.1} ms",
        plan.idle_connections,
        plan.slowloris_connections,
        percentile(&mut health, 0.5)
    );
    tokio::time::sleep(Duration::from_secs(plan.header_timeout_secs + 1)).await;
    let mut closed = 0;
    for stream in idle_streams.iter_mut().chain(&mut slow_streams) {
        let mut buffer = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_millis(50), async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        closed += usize::from(read.unwrap_or(false));
    }
    let total = plan.idle_connections + plan.slowloris_connections;
    rows.push(row(
        &format!("{} idle + {} slowloris connections", plan.idle_connections, plan.slowloris_connections),
        format!("{closed} of {total} closed {} s after opening", plan.header_timeout_secs + 1),
        "all closed by the header timeout",
        closed == total,
    ));

    // 7. SIGTERM with a slowloris connection open.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    slow.write_all(b"POST /recommend HTTP/1.1\r\nHost: localhost\r\n").await.expect("write");
    let _idle = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut server = server;
    let started = Instant::now();
    server.sigterm();
    let exited = loop {
        if let Some(status) = server.try_wait() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(25) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    rows.push(row(
        "SIGTERM with a slowloris connection open",
        format!("exited {} after {secs:.2} s", exited.map_or("not".into(), |s| format!("({s})"))),
        "<= 3 s",
        exited.is_some_and(|s| s.success()) && secs <= 3.0,
    ));
    rows
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full { &FULL } else { &SHORT };
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = if cpu.contains("avx512_vnni") {
        "AVX-512 with VNNI"
    } else if cpu.contains("avx2") {
        "AVX2"
    } else {
        "no AVX2"
    };
    println!(
        "resilience suite ({}), {} CPU cores, {flags}",
        if full { "full" } else { "short" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rows = runtime.block_on(suite(plan));
    println!("\n| scenario | measured | target | met |\n|---|---|---|---|");
    for Row(scenario, figure, target, met) in &rows {
        println!("| {scenario} | {figure} | {target} | {} |", if *met { "yes" } else { "**no**" });
    }
    // The short run checks the mechanisms, not the machine's speed: a target
    // missed there is printed, not failed, except the bounds that do not
    // depend on speed (cache bytes, connections closed, SIGTERM).
    let hard = ["unique 1.9 MB", "slowloris connections", "SIGTERM"];
    let broken: Vec<&Row> = rows.iter().filter(|r| !r.3 && hard.iter().any(|h| r.0.contains(h))).collect();
    assert!(broken.is_empty(), "resilience bounds broken: {:?}", broken.iter().map(|r| &r.0).collect::<Vec<_>>());
}
