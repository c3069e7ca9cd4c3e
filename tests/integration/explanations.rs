//! Explanations say only what is true: over many random requests (known and
//! new items, with and without a query, a profile and a history, with and
//! without prices), every reason's `kind` and `text` are checked against the
//! request and the bundle's statistics they rest on, and every explanation
//! adds up to its score (README, "Explanations", lists the conditions).

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shoprank::{app, HistoryStats};

use crate::api::call;
use crate::common;

const REQUESTS: usize = 120;

const QUERIES: [&str; 6] = ["red bag", "christmas lights", "tea cup", "wooden toy", "candle holder", "garden sign"];
const PROFILES: [&str; 3] = ["runs a small café", "buys gifts for children", "decorates for christmas"];
const NEW_PRODUCTS: [&str; 5] = [
    "men's running shoes",
    "slim fit blue jeans",
    "stainless steel vacuum flask",
    "red leather handbag",
    "wireless phone charger",
];

/// A random request over the bundle's items and a few new products.
fn random_request(rng: &mut StdRng, stats: &HistoryStats) -> Value {
    let mut user = serde_json::Map::new();
    let query = rng.gen_bool(0.5).then(|| *QUERIES.choose(rng).unwrap());
    if let Some(query) = query {
        user.insert("query".into(), json!(query));
    }
    if rng.gen_bool(0.3) {
        user.insert("text".into(), json!(PROFILES.choose(rng).unwrap()));
    }
    let history_len = if rng.gen_bool(0.3) { 0 } else { rng.gen_range(1..5) };
    if history_len > 0 || user.is_empty() {
        let history: Vec<Value> = (0..history_len.max(1))
            .map(|_| {
                let item = &stats.items[rng.gen_range(0..stats.items.len())];
                if rng.gen_bool(0.7) {
                    json!({"id": item.id, "text": item.text})
                } else {
                    json!(item.text) // a title alone: matched by text
                }
            })
            .collect();
        user.insert("history".into(), json!(history));
    }
    let mut candidates: Vec<Value> = (0..8)
        .map(|_| {
            let item = &stats.items[rng.gen_range(0..stats.items.len())];
            let mut candidate = json!({"id": item.id, "text": item.text});
            if rng.gen_bool(0.3) {
                candidate["price"] = json!(rng.gen_range(1..30));
            }
            candidate
        })
        .collect();
    for (n, text) in NEW_PRODUCTS.choose_multiple(rng, 3).enumerate() {
        let mut candidate = json!({"id": format!("new-{n}"), "text": text});
        if rng.gen_bool(0.5) {
            candidate["price"] = json!(rng.gen_range(5..90));
        }
        candidates.push(candidate);
    }
    candidates.sort_by_key(|c| c["id"].as_str().unwrap().to_string());
    candidates.dedup_by_key(|c| c["id"].as_str().unwrap().to_string());
    json!({"user": user, "candidates": candidates, "top_k": 20, "explain": true})
}

/// The history titles and ids of a request.
fn history_of(request: &Value) -> Vec<(Option<String>, String)> {
    request["user"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| match h {
            Value::String(title) => (None, title.clone()),
            _ => (Some(h["id"].as_str().unwrap().to_string()), h["text"].as_str().unwrap().to_string()),
        })
        .collect()
}

/// Checks one reason against the request and the statistics; returns its kind.
fn check_reason(reason: &Value, item_id: &str, request: &Value, stats: &HistoryStats) -> String {
    let kind = reason["kind"].as_str().unwrap().to_string();
    let text = reason["text"].as_str().unwrap();
    let history = history_of(request);
    let known = stats.position_of_id(item_id).map(|p| stats.item(p)).filter(|s| s.buyers > 0);
    let candidate = request["candidates"].as_array().unwrap().iter().find(|c| c["id"] == item_id).unwrap();
    let context = format!("{item_id}: {reason} for {request}");
    match kind.as_str() {
        "matches_query" => {
            let query = request["user"]["query"].as_str().unwrap_or_else(|| panic!("no query: {context}"));
            assert_eq!(text, format!("matches your search \"{query}\""), "{context}");
        }
        "bought_together" => {
            let target = stats.position_of_id(item_id).unwrap_or_else(|| panic!("item unknown: {context}"));
            let ids = reason["history_ids"].as_array().unwrap();
            assert!(!ids.is_empty(), "{context}");
            for id in ids {
                let from = stats.position_of_id(id.as_str().unwrap()).unwrap();
                let s = stats.item(from);
                let linked = s.neighbours.iter().chain(&s.recent_ease).any(|(to, w)| *to == target && *w > 0.0);
                assert!(linked, "no link from {id} in the statistics: {context}");
                assert!(
                    history.iter().any(|(hid, title)| hid.as_deref() == id.as_str() || *title == s.text),
                    "{id} is not in the history: {context}"
                );
                assert!(text.contains(&format!("\"{}\"", s.text)), "{context}");
            }
        }
        "similar_to_history" => {
            assert!(!history.is_empty(), "{context}");
            assert!(history.iter().any(|(_, title)| text == format!("similar to \"{title}\"")), "{context}");
        }
        "popular" => {
            let s = known.unwrap_or_else(|| panic!("a never-bought item called popular: {context}"));
            let end = &stats.cutoff[..10];
            let expected = if s.week_buyers > 0 {
                format!("popular in the week before {end} ({} buyer", s.week_buyers)
            } else if s.recent_buyers > 0 {
                format!("popular in the 30 days before {end} ({} buyer", s.recent_buyers)
            } else {
                format!("bought by {} customer", s.buyers)
            };
            assert!(text.starts_with(&expected) && text.contains(end), "expected {expected:?}: {context}");
        }
        "new_product" => {
            assert!(known.is_none(), "a bought item called new: {context}");
            assert_eq!(text, format!("new product: no purchases before {}", &stats.cutoff[..10]), "{context}");
        }
        "matches_profile" => {
            assert!(request["user"]["text"].is_string() || !history.is_empty(), "{context}");
        }
        "price" => {
            let price = candidate["price"].as_f64().or(known.and_then(|s| s.price).map(f64::from));
            let price = price.unwrap_or_else(|| panic!("no known price: {context}"));
            assert_eq!(text, format!("its price ({price:.2})"), "{context}");
        }
        other => panic!("unknown kind {other}: {context}"),
    }
    kind
}

#[tokio::test]
async fn every_reason_is_true_of_its_item_and_request() {
    let state = common::ready_state(&common::settings());
    let bundle = state.service_if_loaded().expect("a ready state has its service").bundle();
    let stats = bundle.stats();
    let mut rng = StdRng::seed_from_u64(26);
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for _ in 0..REQUESTS {
        let request = random_request(&mut rng, stats);
        let http = Request::post("/recommend")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(request.to_string()))
            .unwrap();
        let (status, _, body) = call(app(state.clone()), http).await;
        assert_eq!(status, StatusCode::OK, "{body} for {request}");
        for item in body["items"].as_array().unwrap() {
            let explanation = &item["explanation"];
            let reasons = explanation["reasons"].as_array().unwrap();
            let listed: f64 = reasons.iter().map(|r| r["contribution"].as_f64().unwrap()).sum();
            let (score, baseline) = (item["score"].as_f64().unwrap(), explanation["baseline"].as_f64().unwrap());
            let unlisted = explanation["unlisted"].as_f64().unwrap();
            assert!((baseline + listed + unlisted - score).abs() < 1e-4, "{item}");
            for reason in reasons {
                assert!(reason["contribution"].as_f64().unwrap() > 0.0, "{reason}");
                let kind = check_reason(reason, item["id"].as_str().unwrap(), &request, stats);
                *kinds.entry(kind).or_default() += 1;
            }
        }
    }
    // The requests reach every kind the committed bundle's head produces,
    // so the checks above were not vacuous.
    for kind in
        ["matches_query", "bought_together", "similar_to_history", "popular", "new_product", "matches_profile", "price"]
    {
        assert!(kinds.get(kind).copied().unwrap_or(0) > 0, "no {kind} reason in {REQUESTS} requests: {kinds:?}");
    }
    eprintln!("reasons checked, by kind: {kinds:?}");
}
