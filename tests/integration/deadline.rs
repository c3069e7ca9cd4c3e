//! Deadlines (`deadline_ms`): a request whose texts the encoder cannot embed
//! in time is answered 200 from what needs no forward pass, marked
//! `degraded`, and counted; its queued texts are withdrawn; only a request
//! with nothing to rank that way gets an empty degraded answer. Through the real router,
//! with the real encoder behind a forward pass that can be made slow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use shoprank::{
    app, AppState, BatchForward, Bundle, Embedder, Encoder, EncoderError, Metrics, Ranker, Service, TokenizedText,
};

use crate::api::call;
use crate::common;

/// The real encoder, or (once `slow` is set) the real encoder two seconds
/// late: longer than any deadline the tests give.
struct SlowWhenAsked {
    encoder: Arc<Encoder>,
    slow: AtomicBool,
}

impl BatchForward for SlowWhenAsked {
    fn forward(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EncoderError> {
        if self.slow.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(2));
        }
        self.encoder.forward(batch)
    }
}

fn slow_state() -> (AppState, Arc<SlowWhenAsked>, Metrics) {
    let settings = common::settings();
    let metrics = Metrics::new();
    let encoder = common::encoder();
    let forward = Arc::new(SlowWhenAsked { encoder: encoder.clone(), slow: AtomicBool::new(false) });
    let embedder = Arc::new(Embedder::with_forward(
        encoder.clone(),
        forward.clone(),
        settings.batching.clone(),
        settings.cache.max_bytes,
        metrics.clone(),
    ));
    let ranker = Ranker::new(embedder, &settings, metrics.clone());
    let bundle = Bundle::load(&settings.bundle.path, &encoder.identity(), encoder.precision()).unwrap();
    let state = AppState::new(metrics.clone(), &settings);
    state.install(Arc::new(Service::new(ranker, bundle, metrics.clone()).expect("the warm-up runs")));
    (state, forward, metrics)
}

async fn recommend(state: &AppState, body: Value) -> (StatusCode, Value) {
    let request =
        Request::post("/recommend").header("content-type", "application/json").body(Body::from(body.to_string()));
    let (status, _, body) = call(app(state.clone()), request.unwrap()).await;
    (status, body)
}

fn candidates() -> Value {
    json!([
        {"id": "tyre", "text": "Car tyre 205/55 R16 all-season", "price": 79.0},
        {"id": "cake", "text": "RED RETROSPOT CAKE CASES", "price": 0.55},
        {"id": "drill", "text": "Cordless hammer drill 18V", "price": 120.0},
        {"id": "22386", "text": "JUMBO BAG PINK POLKADOT"},
        {"id": "20725", "text": "LUNCH BAG RED RETROSPOT"},
    ])
}

const HISTORY: [&str; 2] = ["JUMBO BAG RED RETROSPOT", "RED RETROSPOT CHARLOTTE BAG"];

fn degraded_count(metrics: &Metrics, reason: &str) -> u64 {
    metrics.degraded_answers.with_label_values(&[reason]).get()
}

#[tokio::test]
async fn past_its_deadline_a_request_is_ranked_from_what_is_cached_and_counted() {
    let (state, forward, metrics) = slow_state();
    // A first request embeds (and caches) the history and the candidates.
    let body = json!({"user": {"query": "red retrospot", "history": HISTORY}, "candidates": candidates()});
    let (status, full) = recommend(&state, body).await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert!(full.get("degraded").is_none() && full.get("degraded_reason").is_none(), "{full}");

    forward.slow.store(true, Ordering::SeqCst);
    // Nothing of this one is cached: its candidates come back all the same,
    // ordered without their texts' vectors: the query's words lead.
    let nothing = json!({
        "user": {"query": "cordless drill", "history": ["a history title never seen"]},
        "candidates": [
            {"id": "x-hose", "text": "garden hose, never embedded"},
            {"id": "x-drill", "text": "cordless drill, never embedded"},
            {"id": "x-pot", "text": "tea pot, never embedded"},
        ],
        "deadline_ms": 300,
    });
    let started = Instant::now();
    let (status, body) = recommend(&state, nothing).await;
    assert_eq!(status, StatusCode::OK, "a deadline the caller chose is not a server error: {body}");
    assert_eq!((&body["degraded"], &body["degraded_reason"]), (&json!(true), &json!("deadline")), "{body}");
    let ids: Vec<&str> = body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "every candidate the storefront sent comes back: {body}");
    assert_eq!(ids[0], "x-drill", "the candidate matching the query's words first: {body}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "stopped waiting at the deadline: {:?}",
        started.elapsed()
    );
    assert_eq!(degraded_count(&metrics, "deadline"), 1);

    // A filter that passes no candidate: nothing to rank, an empty answer,
    // degraded, still within the deadline and not a 5xx.
    let filtered = json!({
        "user": {"history": ["yet another history title never seen"]},
        "candidates": [{"id": "y", "text": "a candidate never seen", "price": 5.0}],
        "filters": {"min_price": 100.0},
        "deadline_ms": 200,
    });
    let (status, body) = recommend(&state, filtered).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["degraded"], true, "{body}");
    assert!(body["items"].as_array().unwrap().is_empty(), "{body}");
    assert_eq!(degraded_count(&metrics, "deadline"), 2, "an empty answer is a degraded one");

    // A new query (the user text and the query are new), the same history
    // and candidates (cached): ranked without the encoder.
    let abandoned_before = metrics.encoder_abandoned_texts.get();
    let body = json!({
        "user": {"query": "retrospot bags for a party", "history": HISTORY},
        "candidates": candidates(),
        "explain": true,
        "deadline_ms": 300,
    });
    let started = Instant::now();
    let (status, degraded) = recommend(&state, body).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{degraded}");
    assert!(took < Duration::from_millis(1500), "answered at the deadline, not after the encoder: {took:?}");
    assert_eq!(degraded["degraded"], true, "{degraded}");
    assert_eq!(degraded["degraded_reason"], "deadline", "{degraded}");
    let items = degraded["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "every candidate had a cached vector: {degraded}");
    assert!(items.iter().all(|i| (0.0..=1.0).contains(&i["score"].as_f64().unwrap())), "{degraded}");
    assert!(items.iter().all(|i| i["explanation"].is_object()), "explanations still work: {degraded}");
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    let top3 = &ids[..3];
    assert!(!top3.contains(&"tyre") && !top3.contains(&"drill"), "the bags lead on the history: {ids:?}");
    assert_eq!(degraded_count(&metrics, "deadline"), 3);
    assert!(
        metrics.encoder_abandoned_texts.get() > abandoned_before,
        "its texts queued behind the slow batch were withdrawn"
    );

    // No vector for the user at all (a new history title, no query): the
    // head still ranks the cached candidates on the statistics.
    let body = json!({
        "user": {"history": [{"id": "85099B", "text": "another history title never seen"}]},
        "candidates": candidates(),
        "deadline_ms": 200,
    });
    let (status, body) = recommend(&state, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["degraded"].as_bool(), body["items"].as_array().unwrap().len()), (Some(true), 5), "{body}");
    assert_eq!(degraded_count(&metrics, "deadline"), 4);

    let (_, _, text) = call(app(state.clone()), Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let text = text.as_str().unwrap();
    assert!(text.contains(r#"shoprank_degraded_answers_total{reason="deadline"} 4"#), "{text}");
}

#[tokio::test]
async fn deadline_ms_outside_its_bounds_is_refused_naming_the_field() {
    let state = common::ready_state(&common::settings());
    for bad in [json!(0), json!(10_001), json!(2.5), json!(-1)] {
        let body = json!({"user": {"query": "mug"}, "candidates": candidates(), "deadline_ms": bad});
        let (status, body) = recommend(&state, body).await;
        assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_deadline")));
        assert!(body["error"].as_str().unwrap().contains("deadline_ms"), "{body}");
    }
    let body = json!({"user": {"query": "mug"}, "candidates": candidates(), "deadline_ms": "soon"});
    let (status, body) = recommend(&state, body).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field")));
    assert!(body["error"].as_str().unwrap().contains("deadline_ms"), "{body}");
    // Within bounds, and answered in time: not degraded.
    let body = json!({"user": {"query": "mug"}, "candidates": candidates(), "deadline_ms": 10_000});
    let (status, body) = recommend(&state, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("degraded").is_none(), "{body}");
}

#[tokio::test]
async fn a_full_encoder_queue_is_answered_from_the_catalog_and_the_history_ids() {
    let mut settings = common::settings();
    // Ingestion (4 texts a batch) and the warm-up (4 texts) fit; a request
    // with five new history titles (six texts with the user text) does not.
    settings.batching.max_queued_texts = 5;
    let state = common::ready_state(&settings);
    let items = json!([
        {"id": "bag-red", "text": "red leather handbag for women", "price": 89.0},
        {"id": "bag-shoulder", "text": "red shoulder bag", "price": 45.0},
        {"id": "bag-tote", "text": "black canvas tote bag", "price": 25.0},
        {"id": "kettle", "text": "stainless steel electric kettle", "price": 30.0},
        {"id": "mug", "text": "ceramic coffee mug", "price": 8.0},
    ]);
    let put = Request::put("/v1/catalog/items")
        .header("content-type", "application/json")
        .body(Body::from(json!({"items": items}).to_string()))
        .unwrap();
    assert_eq!(call(app(state.clone()), put).await.0, StatusCode::OK);
    for id in ["bag-red", "bag-shoulder", "bag-tote", "kettle", "mug"] {
        let started = Instant::now();
        loop {
            let get = Request::get(format!("/v1/catalog/items/{id}")).body(Body::empty()).unwrap();
            let (_, _, body) = call(app(state.clone()), get).await;
            if body["embedded"] == json!(true) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{id} not embedded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The titles are new to the cache; two ids are the catalog's, whose
    // stored vectors make the user vector.
    let history: Vec<Value> = (0..5)
        .map(|i| match i {
            0 => json!({"id": "bag-red", "text": "a bag title the cache never saw"}),
            1 => json!({"id": "bag-shoulder", "text": "another bag title the cache never saw"}),
            i => json!(format!("an unknown history title number {i}")),
        })
        .collect();
    let (status, body) = recommend(&state, json!({"user": {"history": history}, "top_k": 3})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["degraded"].as_bool(), body["degraded_reason"].as_str()), (Some(true), Some("overloaded")));
    let ids: Vec<&str> = body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{body}");
    assert!(ids[0].starts_with("bag-"), "nearest to the history's bags: {ids:?}");
    let metrics = state.metrics();
    assert_eq!(metrics.degraded_answers.with_label_values(&["overloaded"]).get(), 1);
}
