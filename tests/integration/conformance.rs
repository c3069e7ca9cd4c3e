//! Every documented input shape, end to end, as a shop would run it: a
//! small log in that shape is generated, `shoprank train` fits a bundle on
//! it (tiny settings), `shoprank eval` scores it with EVAL_PROTOCOL's
//! split, and `shoprank serve` answers `/recommend` with it over real HTTP.
//! A shape shoprank does not read is refused by `train` with the file, the
//! line and the problem.
//!
//! The shapes: the generic format with and without `price` and `quantity`
//! in `events.csv` and `price` in `items.csv`; every documented timestamp
//! form; ids with commas, quotes, spaces and non-ASCII text; items never
//! bought, events of unknown items, one-event users, duplicate events and an
//! item with an empty text; gzipped files; a Chinese log on the m3e-small
//! preset; the Online Retail format; and the store (`train --store`) on the
//! embedded store and PostgreSQL.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common;

/// 2024-01-01 00:00:00 UTC: the synthetic logs' first day.
const START: i64 = 1_704_067_200;
const DAY: i64 = 86_400;
/// The inner validation split and the test split of the synthetic logs.
const VAL_START: &str = "2024-05-01 00:00:00";
const TEST_START: &str = "2024-06-01 00:00:00";

/// Settings small enough for a test: one member, one window, two epochs.
const QUICK: [&str; 12] =
    ["--windows", "1", "--max-epochs", "2", "--members", "1", "--hidden", "16,8", "--cache-dir", "", "--seed", "5"];

/// How a generated log looks.
#[derive(Clone)]
struct Shape {
    /// `events.csv` has a `price` column.
    event_price: bool,
    /// `events.csv` has a `quantity` column.
    quantity: bool,
    /// `items.csv` has a `price` column.
    item_price: bool,
    /// Writes a Unix time as the `timestamp` column holds it.
    time: TimeForm,
    /// Ids with commas, quotes, spaces and non-ASCII text.
    awkward_ids: bool,
    /// Items never bought, events of unknown items, one-event users,
    /// duplicate events, an item with an empty text.
    messy: bool,
    /// Chinese titles (for the m3e-small preset).
    chinese: bool,
    /// Both files gzipped (`.csv.gz`).
    gzip: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            event_price: true,
            quantity: true,
            item_price: true,
            time: seconds_form,
            awkward_ids: false,
            messy: false,
            chinese: false,
            gzip: false,
        }
    }
}

fn seconds_form(t: i64) -> String {
    datetime(t).format("%Y-%m-%d %H:%M:%S").to_string()
}

fn datetime(t: i64) -> chrono::NaiveDateTime {
    chrono::DateTime::from_timestamp(t, 0).unwrap().naive_utc()
}

/// Writes a Unix time in one timestamp form.
type TimeForm = fn(i64) -> String;

/// The timestamp forms the README documents.
const TIME_FORMS: [(&str, TimeForm); 8] = [
    ("YYYY-MM-DD HH:MM:SS", seconds_form),
    ("YYYY-MM-DD HH:MM", |t| datetime(t).format("%Y-%m-%d %H:%M").to_string()),
    ("ISO 8601", |t| datetime(t).format("%Y-%m-%dT%H:%M:%S").to_string()),
    ("ISO 8601 with Z", |t| datetime(t).format("%Y-%m-%dT%H:%M:%SZ").to_string()),
    ("ISO 8601 with fractional seconds", |t| datetime(t).format("%Y-%m-%dT%H:%M:%S.125").to_string()),
    ("ISO 8601 with fractional seconds and Z", |t| datetime(t).format("%Y-%m-%dT%H:%M:%S.5Z").to_string()),
    ("YYYY-MM-DD", |t| datetime(t).format("%Y-%m-%d").to_string()),
    ("Unix seconds", |t| t.to_string()),
];

const DEPARTMENTS: [(&str, &str); 6] = [
    ("garden hose and watering can", "花园浇水壶"),
    ("kitchen frying pan", "厨房不粘锅"),
    ("wooden toy train", "儿童木制玩具火车"),
    ("scented candle", "香薰蜡烛"),
    ("green tea leaves", "绿茶茶叶"),
    ("leather handbag", "真皮手提包"),
];
const ITEMS_PER_DEPARTMENT: usize = 8;
const USERS: usize = 60;

/// A generated log: its files, and the ids and titles a request can use.
struct Log {
    events: PathBuf,
    items: PathBuf,
    /// (id, title) of every bought item, department by department.
    catalog: Vec<(String, String)>,
    /// Ids of items listed in items.csv but never bought.
    never_bought: Vec<String>,
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n']) || value.starts_with(' ') || value.ends_with(' ') {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

impl Shape {
    fn item_id(&self, department: usize, index: usize) -> String {
        if self.awkward_ids {
            format!("SKU {department}-{index}, \"größe\" 東")
        } else {
            format!("{department}-{index}")
        }
    }

    fn user_id(&self, user: usize) -> String {
        if self.awkward_ids {
            format!("kunde, \"{user}\" Zoë")
        } else {
            format!("c{user}")
        }
    }

    fn title(&self, department: usize, index: usize) -> String {
        let (english, chinese) = DEPARTMENTS[department];
        if self.chinese {
            format!("{chinese} {index}号")
        } else {
            format!("{english} model {index}")
        }
    }

    /// Writes `events.csv` and `items.csv` into `dir`: each user buys mostly
    /// from one department, every 12 days or so, over six months.
    fn write(&self, dir: &Path) -> Log {
        let mut items = String::from(if self.item_price { "item_id,text,price\n" } else { "item_id,text\n" });
        let mut catalog = Vec::new();
        for d in 0..DEPARTMENTS.len() {
            for i in 0..ITEMS_PER_DEPARTMENT {
                let (id, title) = (self.item_id(d, i), self.title(d, i));
                let price = if self.item_price { format!(",{}.25", i + 1) } else { String::new() };
                writeln!(items, "{},{}{price}", csv_field(&id), csv_field(&title)).unwrap();
                catalog.push((id, title));
            }
        }
        let mut never_bought = Vec::new();
        if self.messy {
            for n in 0..3 {
                let id = self.item_id(9, n);
                let price = if self.item_price { ",9.99" } else { "" };
                writeln!(items, "{},{}{price}", csv_field(&id), csv_field(&format!("new arrival lamp {n}"))).unwrap();
                never_bought.push(id);
            }
            // The documented skip: a row without a text.
            writeln!(items, "EMPTY,{}", if self.item_price { "," } else { "" }).unwrap();
        }

        let mut header = String::from("user_id,item_id,timestamp");
        if self.quantity {
            header.push_str(",quantity");
        }
        if self.event_price {
            header.push_str(",price");
        }
        let mut events = header + "\n";
        let mut state = 0x5eed_u64;
        let mut next = move |n: usize| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % n
        };
        let row = |events: &mut String, user: &str, item: &str, t: i64, next: &mut dyn FnMut(usize) -> usize| {
            write!(events, "{},{},{}", csv_field(user), csv_field(item), csv_field(&(self.time)(t))).unwrap();
            if self.quantity {
                write!(events, ",{}", 1 + next(3)).unwrap();
            }
            if self.event_price {
                write!(events, ",{}.5", 1 + next(9)).unwrap();
            }
            events.push('\n');
        };
        let mut rows = Vec::new();
        for user in 0..USERS {
            let home = user % DEPARTMENTS.len();
            for purchase in 0..15 {
                let d = if next(5) == 0 { next(DEPARTMENTS.len()) } else { home };
                let t = START + purchase * 12 * DAY + next(10) as i64 * DAY + next(86_400) as i64;
                rows.push((self.user_id(user), self.item_id(d, next(ITEMS_PER_DEPARTMENT)), t));
            }
        }
        if self.messy {
            for n in 0..5 {
                rows.push((self.user_id(USERS + n), self.item_id(n, 0), START + (40 + n as i64) * DAY));
            }
            rows.push((self.user_id(0), "GHOST-1".into(), START + 30 * DAY));
            rows.push((self.user_id(1), "EMPTY".into(), START + 31 * DAY));
            let duplicates: Vec<_> = rows.iter().take(10).cloned().collect();
            rows.extend(duplicates);
        }
        for (user, item, t) in &rows {
            row(&mut events, user, item, *t, &mut next);
        }

        let suffix = if self.gzip { ".csv.gz" } else { ".csv" };
        let (events_path, items_path) = (dir.join(format!("events{suffix}")), dir.join(format!("items{suffix}")));
        write_file(&events_path, &events, self.gzip);
        write_file(&items_path, &items, self.gzip);
        Log { events: events_path, items: items_path, catalog, never_bought }
    }
}

fn write_file(path: &Path, text: &str, gzip: bool) {
    if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, text.as_bytes()).unwrap();
        std::fs::write(path, encoder.finish().unwrap()).unwrap();
    } else {
        std::fs::write(path, text).unwrap();
    }
}

/// `shoprank ARGS` with `env`; its exit status and what it printed.
fn shoprank(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shoprank"))
        .args(args)
        .current_dir(common::repo_path(""))
        .env("SHOPRANK_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run shoprank");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn succeeds(args: &[&str], env: &[(&str, &str)]) -> String {
    let (ok, text) = shoprank(args, env);
    assert!(ok, "shoprank {args:?} failed:\n{text}");
    text
}

/// Where a shape's log comes from, as `train` and `eval` take it.
enum Source<'a> {
    Files(&'a Log),
    Retail(&'a Path),
    Store(&'a str),
}

impl Source<'_> {
    fn args(&self) -> Vec<String> {
        match self {
            Source::Files(log) => vec![
                "--events".into(),
                log.events.display().to_string(),
                "--items".into(),
                log.items.display().to_string(),
            ],
            Source::Retail(path) => vec!["--data".into(), path.display().to_string()],
            Source::Store(url) => vec!["--store".into(), url.to_string()],
        }
    }
}

/// The model a shape runs on.
#[derive(Clone, Copy)]
enum Preset {
    English,
    Chinese,
}

impl Preset {
    fn name(self) -> &'static str {
        match self {
            Preset::English => common::MINILM,
            Preset::Chinese => common::M3E,
        }
    }
}

/// Trains on `source` into `work/bundle`, evaluates it, serves it on
/// `store_url` and sends one `/recommend`, once the catalog items `embedded`
/// (plain ids) have their embeddings; returns the bundle's directory and the
/// answer.
fn train_load_serve_eval(
    work: &Path,
    source: Source<'_>,
    preset: Preset,
    request: Value,
    (store_url, embedded): (&str, &[&str]),
) -> (PathBuf, Value) {
    // One cycle at a time: each trains, evaluates and serves on the
    // machine's cores, beside the other tests' timed assertions.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let bundle = work.join("bundle");
    let source_args = source.args();
    let preset_args = ["--preset", preset.name()];
    let mut train: Vec<&str> = preset_args.to_vec();
    train.extend(["train", "--test-start", TEST_START, "--val-start", VAL_START, "--out", bundle.to_str().unwrap()]);
    train.extend(source_args.iter().map(String::as_str));
    train.extend(QUICK);
    let trained = succeeds(&train, &[]);
    assert!(trained.contains("trained bundle"), "{trained}");
    // Every shape and language gets a calibrated bundle: its shipped (refit)
    // weights calibrated on shoppers held out of the refit, or, where those
    // few cannot identify a map (a small log), on every validation shopper
    // with the pre-refit weights, saying so.
    let manifest: Value = serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    let held_out = &manifest["calibration"]["fitted_on"]["held_out"];
    let fell_back = trained.contains("held out of the refit cannot identify a map");
    assert_eq!(held_out, &Value::Bool(!fell_back), "{trained}");

    let bundle_env = [("SHOPRANK__BUNDLE__PATH", bundle.to_str().unwrap())];
    let mut eval: Vec<&str> = preset_args.to_vec();
    eval.extend(["eval", "--test-start", TEST_START, "--cache-dir", ""]);
    eval.extend(source_args.iter().map(String::as_str));
    let evaluated = succeeds(&eval, &bundle_env);
    assert!(evaluated.contains("model = bundle"), "eval scored the bundle:\n{evaluated}");

    let mut settings = common::preset_settings(preset.name());
    settings.bundle.path = bundle.clone();
    let server = common::start_server(&settings, store_url, &[("SHOPRANK__ENCODER__PRESET", preset.name())]);
    let port = server.port();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for id in embedded {
        while !common::http(port, "GET", &format!("/v1/catalog/items/{id}"), None)
            .is_ok_and(|(status, body)| status == 200 && body.contains("\"embedded\":true"))
        {
            assert!(std::time::Instant::now() < deadline, "catalog item {id} not embedded within 60 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let (status, body) = common::http(port, "POST", "/recommend", Some(&request)).expect("POST /recommend");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(!answer["items"].as_array().unwrap().is_empty(), "{answer}");
    for item in answer["items"].as_array().unwrap() {
        let score = item["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{item}");
    }
    (bundle, answer)
}

/// A re-ranking request for the log's first user: their department's first
/// items as history, a few items of every department as candidates.
fn rerank_request(log: &Log, extra_candidates: &[String]) -> Value {
    let history: Vec<Value> = log.catalog[..2].iter().map(|(id, title)| json!({"id": id, "text": title})).collect();
    let mut candidates: Vec<Value> =
        log.catalog.iter().step_by(3).map(|(id, title)| json!({"id": id, "text": title})).collect();
    candidates.extend(extra_candidates.iter().map(|id| json!({"id": id, "text": "new arrival lamp"})));
    // Every candidate comes back, explained.
    let top_k = candidates.len();
    json!({"user": {"history": history}, "candidates": candidates, "top_k": top_k, "explain": true})
}

/// The returned ids are exactly some of the ids sent.
fn assert_ids_round_trip(answer: &Value, request: &Value) {
    let sent: Vec<&str> = request["candidates"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    for item in answer["items"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        assert!(sent.contains(&id), "{id:?} was not sent: {answer}");
    }
}

/// The statistics' JSON, decompressed.
fn stats_json(bundle: &Path) -> Value {
    let file = std::fs::File::open(bundle.join("stats.json.gz")).unwrap();
    serde_json::from_reader(flate2::read::GzDecoder::new(file)).unwrap()
}

fn generic_row(what: &str, shape: Shape) -> (PathBuf, Value) {
    let work = common::temp_dir(what);
    let log = shape.write(&work);
    let request = rerank_request(&log, &log.never_bought);
    let store = work.join("store").display().to_string();
    let (bundle, answer) =
        train_load_serve_eval(&work, Source::Files(&log), Preset::English, request.clone(), (&store, &[]));
    assert_ids_round_trip(&answer, &request);
    (bundle, answer)
}

#[test]
fn every_optional_column_present() {
    let (bundle, _) = generic_row("all-columns", Shape::default());
    let stats = stats_json(&bundle);
    assert!(stats["items"].as_array().unwrap().iter().all(|i| i["price"].is_number()), "every item has a price");
}

/// The reported failure: a log without any price trains a bundle that
/// `eval` and `serve` load, its items written with `"price": null`.
#[test]
fn no_price_and_no_quantity_anywhere() {
    let shape = Shape { event_price: false, quantity: false, item_price: false, ..Shape::default() };
    let (bundle, _) = generic_row("no-price", shape);
    let stats = stats_json(&bundle);
    assert!(stats["items"].as_array().unwrap().iter().all(|i| i["price"].is_null()), "no item has a price");
}

#[test]
fn quantity_without_price_and_item_prices_only() {
    let (_, _) = generic_row("item-prices", Shape { event_price: false, ..Shape::default() });
    let (_, _) = generic_row("event-prices", Shape { item_price: false, quantity: false, ..Shape::default() });
}

#[test]
fn every_documented_timestamp_form() {
    for (form, time) in TIME_FORMS {
        let tag = format!("time-{}", form.len());
        let (bundle, _) = generic_row(&tag, Shape { time, ..Shape::default() });
        assert!(stats_json(&bundle)["items"].as_array().unwrap().len() > 40, "{form}");
    }
}

/// Ids with commas, quotes, spaces and non-ASCII text survive CSV quoting,
/// training, the bundle and the request: the history's ids are known (the
/// co-purchase features and the reasons' `history_ids` use them).
#[test]
fn awkward_ids_and_gzipped_files() {
    let shape = Shape { awkward_ids: true, gzip: true, ..Shape::default() };
    let (bundle, answer) = generic_row("awkward-ids", shape.clone());
    let stats = stats_json(&bundle);
    let known: Vec<&str> = stats["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(known.contains(&shape.item_id(0, 0).as_str()), "the ids reach the bundle exactly: {known:?}");
    let history_ids: Vec<&str> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["explanation"]["reasons"].as_array().unwrap())
        .flat_map(|r| r["history_ids"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    for id in &history_ids {
        assert!(id.starts_with("SKU 0-") && id.ends_with(", \"größe\" 東"), "{id:?}");
    }
}

/// Items never bought, events whose item is not in items.csv, one-event
/// users, duplicate events and an item without text: the bad rows are
/// skipped and counted, the rest trains, and a never-bought item is served
/// as a new product.
#[test]
fn a_messy_log_trains_and_its_new_products_are_new() {
    let work = common::temp_dir("messy");
    let log = Shape { messy: true, ..Shape::default() }.write(&work);
    let store = work.join("store").display().to_string();
    let request = rerank_request(&log, &log.never_bought);
    let (bundle, answer) =
        train_load_serve_eval(&work, Source::Files(&log), Preset::English, request.clone(), (&store, &[]));
    assert_ids_round_trip(&answer, &request);
    let manifest: Value = serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    let summary = manifest["training"]["data_summary"].as_str().unwrap();
    assert!(summary.contains("2 skipped (item_id not in items.csv)"), "{summary}");
    assert!(summary.contains("1 skipped (items.csv: empty item_id or text)"), "{summary}");
    let stats = stats_json(&bundle);
    let known: Vec<&str> = stats["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(log.never_bought.iter().all(|id| !known.contains(&id.as_str())), "never-bought items have no statistics");
    let returned: Vec<&str> = answer["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(log.never_bought.iter().all(|id| returned.contains(&id.as_str())), "{answer}");
    for item in answer["items"].as_array().unwrap() {
        for reason in item["explanation"]["reasons"].as_array().unwrap() {
            let new = log.never_bought.iter().any(|id| id == item["id"].as_str().unwrap());
            match reason["kind"].as_str().unwrap() {
                "popular" => assert!(!new, "a never-bought item called popular: {item}"),
                "new_product" => assert!(new, "a bought item called new: {item}"),
                _ => {}
            }
        }
    }
}

/// A Chinese log on the m3e-small preset, searched by a Chinese query.
#[test]
fn a_chinese_log_on_the_m3e_small_preset() {
    let work = common::temp_dir("chinese");
    let log = Shape { chinese: true, item_price: false, ..Shape::default() }.write(&work);
    let store = work.join("store").display().to_string();
    let mut request = rerank_request(&log, &[]);
    request["user"]["query"] = json!("绿茶");
    let (_, answer) =
        train_load_serve_eval(&work, Source::Files(&log), Preset::Chinese, request.clone(), (&store, &[]));
    assert_ids_round_trip(&answer, &request);
    assert!(answer["model"].to_string().contains("m3e"), "{answer}");
    // The query's words match by character bigrams: green tea comes first.
    let titles: std::collections::HashMap<&str, &str> =
        log.catalog.iter().map(|(id, title)| (id.as_str(), title.as_str())).collect();
    let first = answer["items"][0]["id"].as_str().unwrap();
    assert!(titles[first].contains("绿茶"), "{first} ({}) first for 绿茶: {answer}", titles[first]);
}

/// The Online Retail format (UCI's columns), generated, gzipped.
#[test]
fn the_online_retail_format() {
    let work = common::temp_dir("retail-format");
    let log = Shape::default().write(&work);
    let events = std::fs::read_to_string(&log.events).unwrap();
    let titles: std::collections::HashMap<&str, &str> =
        log.catalog.iter().map(|(id, title)| (id.as_str(), title.as_str())).collect();
    let mut retail =
        String::from("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n");
    for (n, line) in events.lines().skip(1).enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        let (user, item, time, quantity, price) = (fields[0], fields[1], fields[2], fields[3], fields[4]);
        let customer = 10_000 + user.trim_start_matches('c').parse::<usize>().unwrap();
        writeln!(retail, "{},{item},{},{quantity},{time},{price},{customer},United Kingdom", 500_000 + n, titles[item])
            .unwrap();
    }
    let path = work.join("online_retail.csv.gz");
    write_file(&path, &retail, true);
    let store = work.join("store").display().to_string();
    let history: Vec<Value> = log.catalog[..2].iter().map(|(id, title)| json!({"id": id, "text": title})).collect();
    let request = json!({"user": {"history": history}, "candidates": log.catalog[10..20].iter()
        .map(|(id, title)| json!({"id": id, "text": title})).collect::<Vec<_>>(), "top_k": 3});
    train_load_serve_eval(&work, Source::Retail(&path), Preset::English, request, (&store, &[]));
}

/// `store import`, then `train --store`, `eval --store` and a server on
/// that store retrieving from its catalog (no candidates), on both engines.
#[test]
fn the_store_on_both_engines() {
    for url in common::store_urls("conformance-store") {
        let work = common::temp_dir("store-row");
        let log = Shape { event_price: false, ..Shape::default() }.write(&work);
        let (events, items) = (log.events.to_str().unwrap(), log.items.to_str().unwrap());
        succeeds(&["store", "import", "--events", events, "--items", items, "--store", &url], &[]);
        let (id, title) = &log.catalog[0];
        // A garden shopper searches this catalog for candles, with a typo.
        let request = json!({
            "user": {"query": "scented candel", "history": [{"id": id, "text": title}]},
            "top_k": 5,
            "explain": true
        });
        let catalog: Vec<&str> = log.catalog.iter().map(|(id, _)| id.as_str()).collect();
        let (_, answer) = train_load_serve_eval(&work, Source::Store(&url), Preset::English, request, (&url, &catalog));
        for item in answer["items"].as_array().unwrap() {
            assert!(catalog.contains(&item["id"].as_str().unwrap()), "{item} is in the catalog ({url})");
        }
        assert_eq!(answer["corrected_query"], "scented candle", "{answer}");
        let titles: std::collections::HashMap<&str, &str> =
            log.catalog.iter().map(|(id, title)| (id.as_str(), title.as_str())).collect();
        let first = answer["items"][0]["id"].as_str().unwrap();
        assert!(titles[first].contains("candle"), "{first} ({}) first for candles ({url}): {answer}", titles[first]);
    }
}

/// What `train` refuses, and how it says so: the file, the line, the problem.
#[test]
fn malformed_logs_are_refused_naming_file_line_and_problem() {
    let work = common::temp_dir("refused");
    let items = work.join("items.csv");
    std::fs::write(&items, "item_id,text\nA,red mug\n").unwrap();
    let cases: [(&str, &str, &[&str]); 4] = [
        ("no-user.csv", "customer,item_id,timestamp\nu1,A,2024-01-01\n", &["no-user.csv, line 1", "`user_id`"]),
        ("semicolons.csv", "user_id;item_id;timestamp\nu1;A;2024-01-01\n", &["line 1", "separated by `;`"]),
        (
            "bad-times.csv",
            "user_id,item_id,timestamp\nu1,A,01/02/2024\n",
            &["no usable rows", "line 2", "\"01/02/2024\""],
        ),
        ("unknown-items.csv", "user_id,item_id,timestamp\nu1,B,2024-01-01\n", &["line 2", "\"B\"", "items.csv"]),
    ];
    for (name, body, needles) in cases {
        let events = work.join(name);
        std::fs::write(&events, body).unwrap();
        let out = work.join("bundle").display().to_string();
        let (ok, text) = shoprank(
            &["train", "--events", events.to_str().unwrap(), "--items", items.to_str().unwrap(), "--out", &out],
            &[],
        );
        assert!(!ok, "{name} was accepted:\n{text}");
        for needle in needles {
            assert!(text.contains(needle), "{name}: {needle:?} not in:\n{text}");
        }
        assert!(!Path::new(&out).exists(), "{name}: no bundle is written");
    }
    // The generic events file given as the Online Retail log.
    let events = work.join("events.csv");
    std::fs::write(&events, "user_id,item_id,timestamp\nu1,A,2024-01-01\n").unwrap();
    let (ok, text) = shoprank(&["train", "--data", events.to_str().unwrap()], &[]);
    assert!(!ok && text.contains("line 1") && text.contains("--events"), "{text}");
}
