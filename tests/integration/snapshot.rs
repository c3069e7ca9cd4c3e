//! What the service answers, pinned: a real `shoprank serve` (the shipped
//! bundle, the f32 encoder, a small generated catalog) is sent a fixed set
//! of requests, and every answer (status and JSON body) is compared with
//! `tests/snapshots/responses.txt`. A refactoring that claims to keep
//! behaviour proves it here; a change of behaviour shows up as a diff to
//! review.
//!
//! Volatile fields are masked (timings, request ids, the bundle's version)
//! and floats are rounded to 4 decimals, so the snapshot holds across
//! machines and runs. `SHOPRANK_UPDATE_SNAPSHOTS=1` rewrites the file with
//! what the server answers now (review the diff before committing it).

use serde_json::{json, Value};

use crate::common;

/// Where the answers are kept, from the repository root.
const SNAPSHOT: &str = "tests/snapshots/responses.txt";

/// Fields whose values change from run to run, masked wherever they appear:
/// timings, request ids, the bundle's version, and how many items the
/// background lane had still to embed when an upsert was answered.
const VOLATILE: [&str; 4] = ["took_ms", "request_id", "head", "pending_embeddings"];

/// A small catalog: twelve products, three with attributes, one
/// unavailable, some with prices.
fn catalog() -> Value {
    let products = [
        ("22386", "JUMBO BAG PINK POLKADOT", Some(1.95)),
        ("21212", "PACK OF 72 RETROSPOT CAKE CASES", Some(0.55)),
        ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", Some(2.55)),
        ("84879", "ASSORTED COLOUR BIRD ORNAMENT", None),
        ("20725", "LUNCH BAG RED RETROSPOT", Some(1.65)),
        ("bag-red", "red leather handbag for women", Some(89.0)),
        ("bag-tote", "black canvas tote bag", Some(25.0)),
        ("shoes-run", "mens running shoes", Some(70.0)),
        ("earphones", "bluetooth earphones with charging case", Some(35.0)),
        ("kettle", "stainless steel electric kettle", None),
        ("mug", "ceramic coffee mug", Some(8.0)),
        ("wallet", "leather wallet for women", Some(40.0)),
    ];
    let items: Vec<Value> = products
        .iter()
        .enumerate()
        .map(|(i, (id, text, price))| {
            let mut item = json!({"id": id, "text": text});
            if let Some(price) = price {
                item["price"] = json!(price);
            }
            if i % 4 == 1 {
                item["attributes"] = json!({"brand": format!("brand-{i}"), "tags": ["gift", i]});
            }
            if *id == "wallet" {
                item["available"] = json!(false);
            }
            item
        })
        .collect();
    json!({"items": items})
}

/// The requests, in order: (name, method, path, body). Bodies given as a
/// string are sent as they are (malformed JSON).
fn requests() -> Vec<(&'static str, &'static str, String, Option<String>)> {
    let example = std::fs::read_to_string(common::repo_path("tests/fixtures/example-request.json"))
        .expect("tests/fixtures/example-request.json");
    let json = |value: Value| Some(value.to_string());
    let candidates = json!([
        {"id": "tyre", "text": "Car tyre 205/55 R16 all-season", "price": 79.0},
        {"id": "usb", "text": "USB-C charging cable 2 m"},
        {"id": "cake", "text": "RED RETROSPOT CAKE CASES", "price": 0.55},
        {"id": "22386", "text": "JUMBO BAG PINK POLKADOT", "available": false},
        {"id": "oil", "title": "Engine oil 5W-30, 5 litres", "colour": "amber"}
    ]);
    vec![
        ("health", "GET", "/health".into(), None),
        ("ready", "GET", "/ready".into(), None),
        ("recommend: the example request", "POST", "/recommend".into(), Some(example)),
        (
            "recommend: candidates, profile text, defaults",
            "POST",
            "/recommend".into(),
            json(json!({"user": {"text": "likes baking and red things"}, "candidates": candidates})),
        ),
        (
            "recommend: candidates with explanations",
            "POST",
            "/recommend".into(),
            json(json!({
                "user": {
                    "query": "red retrospot",
                    "history": ["JUMBO BAG RED RETROSPOT", {"id": "20725", "title": "LUNCH BAG RED RETROSPOT"}]
                },
                "candidates": candidates,
                "top_k": 4,
                "explain": true,
                "filters": {"available": false}
            })),
        ),
        (
            "recommend: query over the catalog",
            "POST",
            "/recommend".into(),
            json(json!({"user": {"query": "bag for women"}, "top_k": 5})),
        ),
        (
            "recommend: catalog with filters, exclusions, diversity and explanations",
            "POST",
            "/recommend".into(),
            json(json!({
                "user": {"history": [{"id": "22386", "text": "JUMBO BAG PINK POLKADOT"}], "query": "gift"},
                "top_k": 3,
                "exclude": ["22386"],
                "filters": {"min_price": 1.0, "max_price": 50},
                "diversity": 0.5,
                "explain": true
            })),
        ),
        ("catalog: get an item with attributes", "GET", "/v1/catalog/items/21212".into(), None),
        ("catalog: get an unavailable item", "GET", "/v1/catalog/items/wallet".into(), None),
        ("catalog: get an unknown item", "GET", "/v1/catalog/items/no-such-item".into(), None),
        ("catalog: delete an item", "DELETE", "/v1/catalog/items/mug".into(), None),
        ("catalog: get the deleted item", "GET", "/v1/catalog/items/mug".into(), None),
        ("catalog: delete it again", "DELETE", "/v1/catalog/items/mug".into(), None),
        (
            "catalog: an invalid item",
            "PUT",
            "/v1/catalog/items".into(),
            json(json!({"items": [{"id": "a", "text": "x"}, {"id": "b", "text": "y", "price": -1}]})),
        ),
        ("catalog: no items", "PUT", "/v1/catalog/items".into(), json(json!({"items": []}))),
        ("bad: malformed JSON", "POST", "/recommend".into(), Some("{\"user\": {".into())),
        ("bad: not an object", "POST", "/recommend".into(), json(json!([1, 2]))),
        ("bad: no user signal", "POST", "/recommend".into(), json(json!({"user": {"text": "  "}}))),
        ("bad: unknown field", "POST", "/recommend".into(), json(json!({"user": {"query": "x"}, "colour": 1}))),
        ("bad: wrong type", "POST", "/recommend".into(), json(json!({"user": {"query": 7}}))),
        ("bad: top_k zero", "POST", "/recommend".into(), json(json!({"user": {"query": "x"}, "top_k": 0}))),
        ("bad: top_k fractional", "POST", "/recommend".into(), json(json!({"user": {"query": "x"}, "top_k": 2.5}))),
        (
            "bad: too many explained",
            "POST",
            "/recommend".into(),
            json(json!({"user": {"query": "x"}, "top_k": 101, "explain": true})),
        ),
        (
            "bad: duplicate candidate id",
            "POST",
            "/recommend".into(),
            json(json!({"user": {"query": "x"}, "candidates": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]})),
        ),
        (
            "bad: empty candidate text",
            "POST",
            "/recommend".into(),
            json(json!({"user": {"query": "x"}, "candidates": [{"id": "a", "text": " "}]})),
        ),
        (
            "bad: diversity out of range",
            "POST",
            "/recommend".into(),
            json(json!({"user": {"query": "x"}, "diversity": 2})),
        ),
        (
            "bad: price filters crossed",
            "POST",
            "/recommend".into(),
            json(json!({"user": {"query": "x"}, "filters": {"min_price": 5, "max_price": 1}})),
        ),
        (
            "events: a valid batch",
            "POST",
            "/v1/events".into(),
            json(json!({"events": [
                {"event_id": "e1", "user_id": "u1", "item_id": "22386", "type": "click", "timestamp": 1_700_000_000},
                {"event_id": "e2", "user_id": "u1", "item_id": "22386", "type": "purchase",
                 "timestamp": "2023-11-14T22:13:20Z", "quantity": 2, "price": 1.95},
                {"event_id": "e1", "user_id": "u1", "item_id": "22386", "type": "click", "timestamp": 1_700_000_000}
            ]})),
        ),
        (
            "events: invalid ones",
            "POST",
            "/v1/events".into(),
            json(json!({"events": [
                {"event_id": "e3", "user_id": "u1", "item_id": "x", "type": "like", "timestamp": 1_700_000_000},
                7,
                {"event_id": "", "user_id": "u1", "item_id": "x", "type": "click", "timestamp": 1_700_000_000}
            ]})),
        ),
        ("admin: reload without a token", "POST", "/admin/reload".into(), json(json!({}))),
        ("route: unknown", "GET", "/no/such/route".into(), None),
        ("route: wrong method", "GET", "/recommend".into(), None),
    ]
}

#[test]
fn responses_match_the_snapshot() {
    let settings = common::settings();
    let store = common::temp_dir("snapshot");
    let server =
        common::start_server(&settings, &store.display().to_string(), &[("SHOPRANK__ENCODER__PRECISION", "f32")]);
    let port = server.port();
    let mut answers = String::new();

    let (status, body) = common::http(port, "PUT", "/v1/catalog/items", Some(&catalog())).expect("upsert");
    record(&mut answers, "catalog: upsert twelve items", "PUT", "/v1/catalog/items", status, &body);
    wait_embedded(port, &catalog());

    for (name, method, path, body) in requests() {
        let (status, answer) = server.request(method, &path, body.as_deref()).expect(name);
        record(&mut answers, name, method, &path, status, &answer);
    }

    let path = common::repo_path(SNAPSHOT);
    if std::env::var("SHOPRANK_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &answers).unwrap();
        eprintln!("snapshot: wrote {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{SNAPSHOT}: {e}; SHOPRANK_UPDATE_SNAPSHOTS=1 writes it"));
    if expected != answers {
        panic!(
            "the answers differ from {SNAPSHOT} (- expected, + now); if the change is meant, rerun with \
             SHOPRANK_UPDATE_SNAPSHOTS=1 and commit the file:\n{}",
            diff(&expected, &answers)
        );
    }
}

/// Polls each item until the background lane has embedded it, so retrieval
/// sees the whole catalog.
fn wait_embedded(port: u16, catalog: &Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for item in catalog["items"].as_array().unwrap() {
        let path = format!("/v1/catalog/items/{}", item["id"].as_str().unwrap());
        loop {
            let (status, body) = common::http(port, "GET", &path, None).unwrap();
            assert_eq!(status, 200, "{path}: {body}");
            if serde_json::from_str::<Value>(&body).unwrap()["embedded"] == json!(true) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{path} was not embedded within 60 s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Appends one answer: a heading, the status, and the body as pretty JSON
/// (masked and rounded), or as text if it is not JSON.
fn record(out: &mut String, name: &str, method: &str, path: &str, status: u16, body: &str) {
    let body = match serde_json::from_str::<Value>(body) {
        Ok(value) => serde_json::to_string_pretty(&normalise(value, None)).unwrap(),
        Err(_) => body.to_string(),
    };
    out.push_str(&format!("## {name}\n{method} {path}\n{status}\n{body}\n\n"));
}

/// The value with volatile fields masked and floats rounded to 4 decimals.
fn normalise(value: Value, key: Option<&str>) -> Value {
    if key.is_some_and(|key| VOLATILE.contains(&key)) {
        return json!("<masked>");
    }
    match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k.clone(), normalise(v, Some(&k)))).collect())
        }
        Value::Array(list) => Value::Array(list.into_iter().map(|v| normalise(v, None)).collect()),
        Value::Number(n) if n.is_f64() => {
            let rounded = (n.as_f64().unwrap() * 1e4).round() / 1e4;
            // -0.0 and 0.0 print differently; they are the same answer.
            json!(if rounded == 0.0 { 0.0 } else { rounded })
        }
        other => other,
    }
}

/// A line diff of `expected` and `actual` (longest common subsequence),
/// changed lines with two lines of context.
fn diff(expected: &str, actual: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] { common[i + 1][j + 1] + 1 } else { common[i + 1][j].max(common[i][j + 1]) };
        }
    }
    let mut lines = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push((' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || common[i + 1][j] >= common[i][j + 1]) {
            lines.push(('-', a[i]));
            i += 1;
        } else {
            lines.push(('+', b[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..lines.len()).filter(|&k| lines[k].0 != ' ').collect();
    let near = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= 2);
    let mut out = String::new();
    let mut skipped = false;
    for (k, (sign, line)) in lines.iter().enumerate() {
        if near(k) {
            out.push_str(&format!("{sign} {line}\n"));
            skipped = false;
        } else if !skipped {
            out.push_str("  ...\n");
            skipped = true;
        }
    }
    out
}
