//! The catalog through the router, against a real SQLite file: upserts,
//! reads and deletes, background embedding, retrieval without candidates,
//! request options (exclude, filters, diversity, explain), restarts, and
//! acknowledged writes surviving `kill -9` of a real `shoprank serve`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use shoprank::{app, AppState, CatalogStore, LexicalStart, Metrics, Reconciled, SqliteStore};

use crate::api::call;
use crate::common;

fn json_request(method: &str, uri: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn put_items(state: &AppState, items: Value) -> (StatusCode, Value) {
    let (status, _, body) =
        call(app(state.clone()), json_request("PUT", "/v1/catalog/items", &json!({"items": items}))).await;
    (status, body)
}

async fn get_item(state: &AppState, id: &str) -> (StatusCode, Value) {
    let request = Request::get(format!("/v1/catalog/items/{id}")).body(Body::empty()).unwrap();
    let (status, _, body) = call(app(state.clone()), request).await;
    (status, body)
}

async fn recommend(state: &AppState, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = call(app(state.clone()), json_request("POST", "/recommend", &body)).await;
    (status, body)
}

/// Waits until every listed item reports `embedded: true`.
async fn wait_embedded(state: &AppState, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in ids {
        loop {
            let (status, body) = get_item(state, id).await;
            assert_eq!(status, StatusCode::OK, "{id}: {body}");
            if body["embedded"] == json!(true) {
                break;
            }
            assert!(Instant::now() < deadline, "{id} was not embedded within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn ids(body: &Value) -> Vec<String> {
    body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

/// A small storefront catalog: bags, shoes, electronics, kitchen.
fn shop_items() -> Value {
    json!([
        {"id": "bag-red", "text": "red leather handbag for women", "price": 89.0, "attributes": {"brand": "Ava"}},
        {"id": "bag-shoulder", "text": "red shoulder bag", "price": 45.0},
        {"id": "bag-tote", "text": "black canvas tote bag", "price": 25.0},
        {"id": "shoes-run", "text": "mens running shoes", "price": 70.0},
        {"id": "earphones", "text": "bluetooth earphones with charging case", "price": 35.0},
        {"id": "kettle", "text": "stainless steel electric kettle", "price": 30.0},
        {"id": "mug", "text": "ceramic coffee mug", "price": 8.0},
        {"id": "wallet", "text": "leather wallet for women", "price": 40.0, "available": false}
    ])
}

const SHOP_IDS: [&str; 8] =
    ["bag-red", "bag-shoulder", "bag-tote", "shoes-run", "earphones", "kettle", "mug", "wallet"];

#[tokio::test]
async fn items_round_trip_and_bad_writes_name_the_problem() {
    let state = common::ready_state(&common::settings());
    let (status, body) = put_items(&state, shop_items()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["upserted"], 8);
    let (status, body) = get_item(&state, "bag-red").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["text"], "red leather handbag for women");
    assert_eq!(body["price"], 89.0);
    assert_eq!(body["available"], true);
    assert_eq!(body["attributes"]["brand"], "Ava");
    assert_eq!(get_item(&state, "wallet").await.1["available"], false);
    wait_embedded(&state, &SHOP_IDS).await;

    let delete = Request::delete("/v1/catalog/items/mug").body(Body::empty()).unwrap();
    let (status, _, body) = call(app(state.clone()), delete).await;
    assert_eq!((status, body["deleted"].as_str()), (StatusCode::OK, Some("mug")));
    assert_eq!(get_item(&state, "mug").await.0, StatusCode::NOT_FOUND);
    let delete = Request::delete("/v1/catalog/items/mug").body(Body::empty()).unwrap();
    let (status, _, body) = call(app(state.clone()), delete).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::NOT_FOUND, Some("item_not_found")));

    let cases = [
        (json!([]), "empty_items", "items"),
        (json!([{"id": "", "text": "x"}]), "invalid_item", "items[0].id"),
        (json!([{"id": "a", "text": " "}]), "invalid_item", "items[0].text"),
        (json!([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]), "invalid_item", "`a`"),
        (json!([{"id": "a", "text": "x", "price": -2}]), "invalid_item", "price"),
        (json!([{"id": "a", "text": "x", "attributes": [1, 2]}]), "invalid_item", "attributes"),
    ];
    for (items, kind, mentions) in cases {
        let (status, body) = put_items(&state, items).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["kind"], kind, "{body}");
        assert!(body["error"].as_str().unwrap().contains(mentions), "{body}");
    }
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"id": format!("i{i}"), "text": "x"})).collect();
    let (status, body) = put_items(&state, Value::Array(too_many)).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("too_many_items")));
}

#[tokio::test]
async fn a_full_catalog_refuses_new_items_but_accepts_updates() {
    let mut settings = common::settings();
    settings.catalog.max_items = 2;
    let state = common::ready_state(&settings);
    assert_eq!(
        put_items(&state, json!([{"id": "a", "text": "mug"}, {"id": "b", "text": "cup"}])).await.0,
        StatusCode::OK
    );
    let (status, body) = put_items(&state, json!([{"id": "c", "text": "plate"}])).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("catalog_full")), "{body}");
    assert_eq!(put_items(&state, json!([{"id": "a", "text": "blue mug"}])).await.0, StatusCode::OK);
}

#[tokio::test]
async fn recommend_without_candidates_is_product_search_over_the_catalog() {
    let state = common::ready_state(&common::settings());
    assert_eq!(put_items(&state, shop_items()).await.0, StatusCode::OK);
    wait_embedded(&state, &SHOP_IDS).await;

    let (status, body) = recommend(&state, json!({"user": {"query": "red handbag"}, "top_k": 3})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found = ids(&body);
    assert_eq!(found.len(), 3);
    let mut bags = found[..2].to_vec();
    bags.sort();
    assert_eq!(bags, ["bag-red", "bag-shoulder"], "both red bags first: {body}");

    // An empty candidate list retrieves too; unavailable items never show
    // by default, and do when asked for.
    let (_, body) = recommend(&state, json!({"user": {"query": "leather wallet"}, "candidates": [], "top_k": 8})).await;
    assert!(!ids(&body).contains(&"wallet".to_string()), "unavailable: {body}");
    let (_, body) =
        recommend(&state, json!({"user": {"query": "leather wallet"}, "filters": {"available": false}, "top_k": 1}))
            .await;
    assert_eq!(ids(&body), ["wallet"]);

    // exclude and a price range.
    let (_, body) = recommend(
        &state,
        json!({"user": {"query": "red handbag"}, "exclude": ["bag-red"], "filters": {"max_price": 50}, "top_k": 8}),
    )
    .await;
    let found = ids(&body);
    assert_eq!(found[0], "bag-shoulder", "{body}");
    assert!(!found.contains(&"bag-red".to_string()) && !found.contains(&"shoes-run".to_string()), "{body}");

    for (options, kind) in [
        (json!({"diversity": 1.5}), "invalid_diversity"),
        (json!({"filters": {"min_price": 10, "max_price": 5}}), "invalid_filters"),
        (json!({"filters": {"min_price": -1}}), "invalid_filters"),
    ] {
        let mut request = json!({"user": {"query": "bag"}});
        request.as_object_mut().unwrap().extend(options.as_object().unwrap().clone());
        let (status, body) = recommend(&state, request).await;
        assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(kind)), "{body}");
    }
}

/// Lexical search beside the embeddings: exact sizes and model numbers,
/// misspelt words, words only an attribute holds.
#[tokio::test]
async fn search_matches_exact_tokens_typos_and_attribute_values() {
    let state = common::ready_state(&common::settings());
    let mut items = shop_items();
    items.as_array_mut().unwrap().extend(
        json!([
            {"id": "drill-20", "text": "cordless drill 20v with battery", "price": 99.0},
            {"id": "drill-24", "text": "cordless drill 24v with battery", "price": 119.0},
            {"id": "drill-18", "text": "cordless drill 18v with battery", "price": 79.0},
            {"id": "pipe-half", "text": "copper pipe 1/2 inch", "price": 5.0},
            {"id": "pipe-3q", "text": "copper pipe 3/4 inch", "price": 6.0},
            {"id": "scarf", "text": "wool scarf", "price": 20.0, "attributes": {"brand": "Zephyrine", "colour": ["grey"]}}
        ])
        .as_array()
        .unwrap()
        .clone(),
    );
    assert_eq!(put_items(&state, items).await.0, StatusCode::OK);
    let mut all: Vec<&str> = SHOP_IDS.to_vec();
    all.extend(["drill-20", "drill-24", "drill-18", "pipe-half", "pipe-3q", "scarf"]);
    wait_embedded(&state, &all).await;

    let first = |query: &'static str| {
        let state = state.clone();
        async move {
            let (status, body) = recommend(&state, json!({"user": {"query": query}, "top_k": 3})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            ids(&body).first().cloned().unwrap_or_default()
        }
    };
    assert_eq!(first("24v drill").await, "drill-24", "the voltage is matched exactly");
    assert_eq!(first("copper pipe 3/4").await, "pipe-3q", "a size survives tokenisation");
    assert_eq!(first("lether handbga").await, "bag-red", "two typos corrected");
    // The answer says what it searched for, only when it corrected the query.
    let (_, body) = recommend(&state, json!({"user": {"query": "Lether handbga"}, "top_k": 1})).await;
    assert_eq!(body["corrected_query"], "leather handbag", "{body}");
    let (_, body) = recommend(&state, json!({"user": {"query": "leather handbag"}, "top_k": 1})).await;
    assert!(body.get("corrected_query").is_none(), "{body}");
    assert_eq!(first("zephyrine").await, "scarf", "a brand only the attributes name");
    // An update moves the item in the lexical index at once.
    let renamed = json!([{"id": "scarf", "text": "wool scarf", "attributes": {"brand": "Borealis"}}]);
    assert_eq!(put_items(&state, renamed).await.0, StatusCode::OK);
    assert_eq!(first("borealis").await, "scarf");
}

#[tokio::test]
async fn without_the_lexical_index_the_words_are_weighed_among_the_retrieved_items() {
    let mut settings = common::settings();
    settings.catalog.lexical_index = false;
    let state = common::ready_state(&settings);
    let items = json!([
        {"id": "drill-20", "text": "cordless drill 20v with battery"},
        {"id": "drill-24", "text": "cordless drill 24v with battery"},
        {"id": "drill-18", "text": "cordless drill 18v with battery"},
        {"id": "scarf", "text": "wool scarf", "attributes": {"brand": "Zephyrine"}},
        {"id": "hat", "text": "wool hat"}
    ]);
    assert_eq!(put_items(&state, items).await.0, StatusCode::OK);
    wait_embedded(&state, &["drill-20", "drill-24", "drill-18", "scarf", "hat"]).await;
    for (query, expected) in [("24v drill", "drill-24"), ("zephyrine wool", "scarf")] {
        let (status, body) = recommend(&state, json!({"user": {"query": query}, "top_k": 2})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ids(&body)[0], expected, "{query}: {body}");
    }
}

#[tokio::test]
async fn diversity_spreads_near_duplicates_apart() {
    let state = common::ready_state(&common::settings());
    let items = json!([
        {"id": "r1", "text": "red leather handbag"},
        {"id": "r2", "text": "red leather handbag, large"},
        {"id": "r3", "text": "red leather handbag, small"},
        {"id": "b1", "text": "black canvas backpack"},
        {"id": "s1", "text": "straw beach bag"}
    ]);
    assert_eq!(put_items(&state, items).await.0, StatusCode::OK);
    wait_embedded(&state, &["r1", "r2", "r3", "b1", "s1"]).await;
    // "Recommended for you" (no query, so no relevance bands): MMR trades
    // probability against similarity to the items already picked.
    let request =
        |diversity: f64| json!({"user": {"history": ["red leather handbag"]}, "top_k": 3, "diversity": diversity});
    let plain = ids(&recommend(&state, request(0.0)).await.1);
    let varied = ids(&recommend(&state, request(0.9)).await.1);
    let duplicates = |found: &[String]| found.iter().filter(|id| id.starts_with('r')).count();
    assert_eq!(duplicates(&plain), 3, "{plain:?}");
    assert!(duplicates(&varied) < 3, "MMR keeps fewer near-duplicates: {varied:?}");
    assert!(varied[0].starts_with('r'), "the best item stays first: {varied:?}");
}

/// The example, with caller-given candidates.
#[tokio::test]
async fn a_search_query_puts_both_bags_first() {
    let state = common::ready_state(&common::settings());
    let body = json!({
        "user": {"query": "red handbag", "history": ["leather wallet for women"]},
        "candidates": [
            {"id": "handbag", "text": "red leather handbag for women"},
            {"id": "shoes", "text": "mens running shoes"},
            {"id": "earphones", "text": "bluetooth earphones"},
            {"id": "shoulder", "text": "red shoulder bag"}
        ]
    });
    let (status, body) = recommend(&state, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut first_two = ids(&body)[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, ["handbag", "shoulder"], "{body}");
}

#[tokio::test]
async fn explanations_follow_the_inputs_and_add_up_to_the_score() {
    let state = common::ready_state(&common::settings());
    let candidates = json!([
        {"id": "22386", "text": "JUMBO BAG PINK POLKADOT"},
        {"id": "mug", "text": "ceramic coffee mug"}
    ]);
    let ask = |user: Value| json!({"user": user, "candidates": candidates.clone(), "explain": true});
    let reasons = |item: &Value| -> Vec<String> {
        item["explanation"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["kind"].as_str().unwrap().to_string())
            .collect()
    };
    let item =
        |body: &Value, id: &str| body["items"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap().clone();

    // With a search for mugs, the mug's first reason is the query match;
    // without the query, that reason is gone.
    let (status, with_query) =
        recommend(&state, ask(json!({"query": "coffee mug", "history": ["JUMBO BAG RED RETROSPOT"]}))).await;
    assert_eq!(status, StatusCode::OK, "{with_query}");
    let mug = item(&with_query, "mug");
    assert_eq!(reasons(&mug).first().map(String::as_str), Some("matches_query"), "{mug}");
    assert!(mug["explanation"]["reasons"][0]["text"].as_str().unwrap().contains("coffee mug"));
    let (_, without) = recommend(&state, ask(json!({"history": ["JUMBO BAG RED RETROSPOT"]}))).await;
    assert!(!reasons(&item(&without, "mug")).contains(&"matches_query".to_string()), "{without}");

    // A history item that co-purchase links to the candidate is named.
    let bag = item(&with_query, "22386");
    let together = bag["explanation"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "bought_together")
        .unwrap_or_else(|| panic!("no bought_together reason: {bag}"));
    assert!(together["text"].as_str().unwrap().contains("JUMBO BAG RED RETROSPOT"), "{together}");
    assert_eq!(together["history_ids"], json!(["85099B"]));

    // score = baseline + reasons + unlisted, and the listed reasons carry
    // most of an upward deviation.
    for body in [&with_query, &without] {
        for item in body["items"].as_array().unwrap() {
            let e = &item["explanation"];
            let listed: f64 =
                e["reasons"].as_array().unwrap().iter().map(|r| r["contribution"].as_f64().unwrap()).sum();
            let (score, baseline) = (item["score"].as_f64().unwrap(), e["baseline"].as_f64().unwrap());
            let unlisted = e["unlisted"].as_f64().unwrap();
            assert!((baseline + listed + unlisted - score).abs() < 1e-4, "{item}");
            if score - baseline > 0.05 {
                assert!(listed >= 0.8 * (score - baseline), "{item}");
            }
        }
    }
}

#[test]
fn a_restart_loads_items_and_embeddings_without_re_embedding() {
    let settings = common::settings();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    {
        let state = common::ready_state(&settings);
        runtime.block_on(async {
            assert_eq!(put_items(&state, shop_items()).await.0, StatusCode::OK);
            wait_embedded(&state, &SHOP_IDS).await;
        });
    }
    let metrics = Metrics::new();
    let state = AppState::new(metrics.clone(), &settings);
    let service = common::service(&settings, metrics.clone());
    // The lexical index was reopened from beside the store, nothing re-indexed.
    let lexical = service.catalog().unwrap().index().lexical_start();
    let reopened = Reconciled { kept: SHOP_IDS.len(), added: 0, removed: 0 };
    assert_eq!(lexical, Some(LexicalStart { on_disk: true, reconciled: reopened }));
    state.install(service);
    runtime.block_on(async {
        for id in SHOP_IDS {
            assert_eq!(get_item(&state, id).await.1["embedded"], true, "{id} embedded at once after the restart");
        }
    });
    // A word only an attribute holds still finds its item.
    runtime.block_on(async {
        let (status, body) = recommend(&state, json!({"user": {"query": "ava"}, "top_k": 1})).await;
        assert_eq!((status, ids(&body)), (StatusCode::OK, vec!["bag-red".to_string()]), "{body}");
    });
    let exported = metrics.render();
    assert!(exported.contains("shoprank_catalog_items 8"), "{exported}");
    assert!(exported.contains("shoprank_catalog_pending_items 0"), "{exported}");
    assert!(exported.contains("shoprank_catalog_embedded_total 0"), "nothing re-embedded: {exported}");
}

/// Above `catalog.exact_scan_max` the inverted file is trained once, saved
/// beside the embedded store, and read back by the next restart: no item is
/// assigned again, and retrieval answers through it.
#[test]
fn the_inverted_file_is_saved_beside_the_store_and_read_back_at_a_restart() {
    let mut settings = common::settings();
    settings.catalog.exact_scan_max = 4;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    {
        let state = common::ready_state(&settings);
        runtime.block_on(async {
            assert_eq!(put_items(&state, shop_items()).await.0, StatusCode::OK);
            wait_embedded(&state, &SHOP_IDS).await;
        });
    }
    let file = std::path::Path::new(&settings.store.url).join("catalog.ivf");
    assert!(!file.exists(), "an empty catalog at start-up: an exact scan, nothing saved");
    let start = |settings: &shoprank::Settings| {
        let service = common::service(settings, Metrics::new());
        let start = service.catalog().unwrap().index().ann_start();
        (service, start)
    };
    let (first, trained) = start(&settings);
    let trained = trained.expect("8 embedded items, above the bound of 4");
    assert!(trained.trained && trained.assigned == 8 && trained.from_file == 0, "{trained:?}");
    assert!(file.exists(), "saved once items were assigned");
    drop(first);
    let (second, read) = start(&settings);
    let read = read.unwrap();
    assert!(!read.trained && read.from_file == 8 && read.assigned == 0, "{read:?}");
    let state = AppState::new(Metrics::new(), &settings);
    state.install(second);
    runtime.block_on(async {
        let (status, body) = recommend(&state, json!({"user": {"query": "red leather handbag"}, "top_k": 3})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(ids(&body).contains(&"bag-red".to_string()), "retrieved through the inverted file: {body}");
    });
}

#[test]
fn acknowledged_catalog_writes_survive_kill_9() {
    let settings = common::settings();
    let data_dir = common::temp_dir("kill9");
    let mut server = common::start_server(&settings, &data_dir.display().to_string(), &[]);
    let port = server.port();
    // Acknowledged writes, the last one answered just before SIGKILL.
    let mut acknowledged = Vec::new();
    for batch in 0..20 {
        let items: Vec<Value> = (0..50)
            .map(|i| json!({"id": format!("b{batch}-{i}"), "text": format!("product {i} of batch {batch}")}))
            .collect();
        let (status, body) = common::http(port, "PUT", "/v1/catalog/items", Some(&json!({"items": items}))).unwrap();
        assert_eq!(status, 200, "{body}");
        acknowledged.extend((0..50).map(|i| format!("b{batch}-{i}")));
    }
    let (status, _) = common::http(port, "DELETE", "/v1/catalog/items/b0-0", None).unwrap();
    assert_eq!(status, 200);
    server.kill_9();

    let store = SqliteStore::open(&data_dir).unwrap();
    let key = common::encoder().embedding_key();
    let stored: std::collections::HashSet<String> =
        store.load_all(&key).unwrap().into_iter().map(|s| s.item.id).collect();
    assert!(!stored.contains("b0-0"), "the acknowledged delete held");
    for id in &acknowledged[1..] {
        assert!(stored.contains(id), "acknowledged item {id} lost");
    }
    drop(store);

    // And the service comes back with them, in the lexical index too (kept
    // beside the store, reconciled with it at start-up).
    assert!(data_dir.join("lexical").join("meta.json").exists(), "the lexical index is kept on disk");
    let server = common::start_server(&settings, &data_dir.display().to_string(), &[]);
    let (status, body) = common::http(server.port(), "GET", "/v1/catalog/items/b19-49", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !common::http(server.port(), "GET", "/v1/catalog/items/b19-49", None).unwrap().1.contains("\"embedded\":true")
    {
        assert!(Instant::now() < deadline, "b19-49 was never embedded");
        std::thread::sleep(Duration::from_millis(100));
    }
    let search = json!({"user": {"query": "batch 19 product 49"}, "top_k": 3});
    let (status, body) = common::http(server.port(), "POST", "/recommend", Some(&search)).unwrap();
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ids(&body).first().map(String::as_str), Some("b19-49"), "{body}");
}

fn sorted_ids(body: &Value) -> Vec<String> {
    let mut found = ids(body);
    found.sort();
    found
}

/// A facet's `(value, count)` pairs as the response lists them.
fn facet(body: &Value, name: &str) -> Vec<(String, u64)> {
    body["facets"][name]
        .as_array()
        .unwrap_or_else(|| panic!("no facet {name}: {body}"))
        .iter()
        .map(|f| (f["value"].as_str().unwrap().to_string(), f["count"].as_u64().unwrap()))
        .collect()
}

fn pairs(expected: &[(&str, u64)]) -> Vec<(String, u64)> {
    expected.iter().map(|(value, count)| (value.to_string(), *count)).collect()
}

/// Attribute filters and facets (issue 28): exact matches on attributes in
/// retrieval (every source) and on given candidates, list-valued and
/// numeric attributes, and value counts over the relevant candidates
/// before `top_k`.
#[tokio::test]
async fn attribute_filters_and_facets_apply_to_the_catalog_and_to_given_candidates() {
    let state = common::ready_state(&common::settings());
    let items = json!([
        {"id": "mug-ava-blue", "text": "ceramic coffee mug", "price": 8.0,
         "attributes": {"brand": "Ava", "colour": "blue"}},
        {"id": "mug-bex-blue", "text": "stoneware coffee mug", "price": 9.0,
         "attributes": {"brand": "Bex", "colour": ["blue", "white"]}},
        {"id": "mug-cal-red", "text": "porcelain coffee mug", "price": 7.0,
         "attributes": {"brand": "Cal", "colour": "red"}},
        {"id": "mug-ava-red", "text": "enamel coffee mug for camping", "price": 12.0,
         "attributes": {"brand": "Ava", "colour": ["red"], "size": 350}},
        {"id": "tyre", "text": "car tyre 205/55 R16 all-season", "price": 79.0, "attributes": {"brand": "Tyro"}}
    ]);
    assert_eq!(put_items(&state, items).await.0, StatusCode::OK);
    wait_embedded(&state, &["mug-ava-blue", "mug-bex-blue", "mug-cal-red", "mug-ava-red", "tyre"]).await;

    // Retrieval: a list of accepted values, and every named attribute.
    let search = |filters: Value, facets: Value| json!({"user": {"query": "coffee mug"}, "filters": filters, "facets": facets, "top_k": 10});
    let (status, body) = recommend(&state, search(json!({"attributes": {"brand": ["Ava", "Bex"]}}), json!([]))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(sorted_ids(&body), ["mug-ava-blue", "mug-ava-red", "mug-bex-blue"], "{body}");
    assert!(body.get("facets").is_none(), "no facets asked for, none answered: {body}");
    let both = json!({"attributes": {"brand": ["Ava", "Bex"], "colour": "blue"}});
    let (_, body) = recommend(&state, search(both, json!([]))).await;
    assert_eq!(sorted_ids(&body), ["mug-ava-blue", "mug-bex-blue"], "{body}");
    // A list-valued attribute passes if any element matches; a number
    // matches its JSON text; the other filters still apply.
    let (_, body) = recommend(&state, search(json!({"attributes": {"colour": "white"}}), json!([]))).await;
    assert_eq!(ids(&body), ["mug-bex-blue"], "{body}");
    let (_, body) = recommend(&state, search(json!({"attributes": {"size": "350"}}), json!([]))).await;
    assert_eq!(ids(&body), ["mug-ava-red"], "{body}");
    let (_, body) =
        recommend(&state, search(json!({"attributes": {"colour": "red"}, "max_price": 10}), json!([]))).await;
    assert_eq!(ids(&body), ["mug-cal-red"], "{body}");
    let (_, body) = recommend(&state, search(json!({"attributes": {"brand": "ava"}}), json!([]))).await;
    assert!(ids(&body).is_empty(), "values match exactly: {body}");

    // Facets without a query: over every candidate scored, before top_k.
    let (status, body) = recommend(
        &state,
        json!({"user": {"text": "likes coffee"}, "facets": ["brand", "colour", "material"], "top_k": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body).len(), 1);
    assert_eq!(facet(&body, "brand"), pairs(&[("Ava", 2), ("Bex", 1), ("Cal", 1), ("Tyro", 1)]));
    assert_eq!(facet(&body, "colour"), pairs(&[("blue", 2), ("red", 2), ("white", 1)]));
    assert_eq!(facet(&body, "material"), pairs(&[]), "a facet no item has is there, empty");
    // After the filters.
    let (_, body) =
        recommend(&state, search(json!({"attributes": {"brand": "Ava"}}), json!(["colour", "brand"]))).await;
    assert_eq!(facet(&body, "colour"), pairs(&[("blue", 1), ("red", 1)]), "{body}");
    assert_eq!(facet(&body, "brand"), pairs(&[("Ava", 2)]), "{body}");
    // With a query: the unrelated band (the tyre) is not counted.
    let (_, body) = recommend(&state, search(json!({}), json!(["brand"]))).await;
    let brands = facet(&body, "brand");
    assert!(brands.iter().all(|(brand, _)| brand != "Tyro"), "{body}");
    assert!(brands.contains(&("Bex".to_string(), 1)), "{body}");

    // Given candidates carry their own attributes.
    let (status, body) = recommend(
        &state,
        json!({
            "user": {"text": "likes coffee"},
            "candidates": [
                {"id": "a", "text": "blue mug", "attributes": {"brand": "Ava"}},
                {"id": "b", "text": "red mug", "attributes": {"brand": ["Bex", "Ava"]}},
                {"id": "c", "text": "green mug"},
                {"id": "d", "text": "grey mug", "attributes": {"brand": "Dot"}}
            ],
            "filters": {"attributes": {"brand": "Ava"}},
            "facets": ["brand"]
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(sorted_ids(&body), ["a", "b"], "{body}");
    assert_eq!(facet(&body, "brand"), pairs(&[("Ava", 2), ("Bex", 1)]));
}

/// Bad `filters.attributes`, `facets` and candidate attributes are 422s
/// naming the field.
#[tokio::test]
async fn bad_attribute_filters_and_facets_name_the_field() {
    let state = common::ready_state(&common::settings());
    let many_names: serde_json::Map<String, Value> = (0..17).map(|i| (format!("a{i}"), json!("x"))).collect();
    let many_values: Vec<String> = (0..65).map(|i| format!("v{i}")).collect();
    let long = "x".repeat(257);
    for (options, kind, field) in [
        (json!({"filters": {"attributes": ["brand"]}}), "invalid_filters", "filters.attributes"),
        (json!({"filters": {"attributes": {"brand": 5}}}), "invalid_filters", "filters.attributes.brand"),
        (json!({"filters": {"attributes": {"brand": []}}}), "invalid_filters", "filters.attributes.brand"),
        (json!({"filters": {"attributes": {"brand": ["Ava", 3]}}}), "invalid_filters", "filters.attributes.brand[1]"),
        (json!({"filters": {"attributes": {"": "Ava"}}}), "invalid_filters", "filters.attributes"),
        (json!({"filters": {"attributes": many_names}}), "invalid_filters", "filters.attributes"),
        (json!({"filters": {"attributes": {"brand": many_values}}}), "invalid_filters", "filters.attributes.brand"),
        (
            json!({"filters": {"attributes": {"brand": ["Ava", long]}}}),
            "invalid_filters",
            "filters.attributes.brand[1]",
        ),
        (json!({"facets": ["brand", "brand"]}), "invalid_facets", "facets[1]"),
        (json!({"facets": [""]}), "invalid_facets", "facets[0]"),
        (json!({"facets": (0..17).map(|i| format!("f{i}")).collect::<Vec<_>>()}), "invalid_facets", "facets"),
        (json!({"facets": "brand"}), "invalid_field", "facets"),
        (
            json!({"candidates": [{"id": "a", "text": "mug", "attributes": "blue"}]}),
            "invalid_candidate",
            "candidates[0].attributes",
        ),
    ] {
        let mut request = json!({"user": {"query": "mug"}});
        request.as_object_mut().unwrap().extend(options.as_object().unwrap().clone());
        let (status, body) = recommend(&state, request).await;
        assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(kind)), "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with(field), "{error} should name {field}");
    }
}

/// A replica on PostgreSQL keeps its lexical index (and inverted file) in
/// `catalog.index_dir` and reopens it at a restart; without one it builds
/// the index in memory at each start-up.
#[test]
fn a_postgres_replica_keeps_its_lexical_index_in_its_index_dir() {
    let Some(url) = common::postgres_url("postgres_index_dir") else { return };
    let mut settings = common::settings();
    settings.store.url = url;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let in_memory = common::service(&settings, Metrics::new());
    assert_eq!(in_memory.catalog().unwrap().index().lexical_start().map(|s| s.on_disk), Some(false));
    drop(in_memory);

    let dir = common::temp_dir("postgres-index-dir");
    settings.catalog.index_dir = Some(dir.clone());
    {
        let state = common::ready_state(&settings);
        runtime.block_on(async {
            assert_eq!(put_items(&state, shop_items()).await.0, StatusCode::OK);
            wait_embedded(&state, &SHOP_IDS).await;
        });
    }
    assert!(dir.join("lexical").join("meta.json").exists(), "kept in the index directory");
    let service = common::service(&settings, Metrics::new());
    let reopened = Reconciled { kept: SHOP_IDS.len(), added: 0, removed: 0 };
    assert_eq!(
        service.catalog().unwrap().index().lexical_start(),
        Some(LexicalStart { on_disk: true, reconciled: reopened })
    );
}
