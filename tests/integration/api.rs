//! The HTTP API through the real router (`app(state).oneshot`), with the real
//! encoder and the committed head.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use shoprank::{
    app, AppState, BatchForward, Bundle, Embedder, Encoder, EncoderError, Metrics, Ranker, Service, TokenizedText,
};
use tower::ServiceExt;

use crate::common;

fn shared_state() -> AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE.get_or_init(|| common::ready_state(&common::settings())).clone()
}

pub(crate) async fn call(router: Router, request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, retry_after, body)
}

fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/recommend").header(header::CONTENT_TYPE, "application/json").body(body.into()).unwrap()
}

async fn recommend(state: AppState, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = call(app(state), post(body.to_string())).await;
    (status, body)
}

fn realistic_request() -> Value {
    json!({
        "user": {
            "id": "c-17850",
            "query": "red retrospot",
            "history": ["JUMBO BAG RED RETROSPOT", "RED RETROSPOT CHARLOTTE BAG", "LUNCH BAG RED RETROSPOT"]
        },
        "candidates": [
            {"id": "tyre", "text": "Car tyre 205/55 R16 all-season", "price": 79.0},
            {"id": "usb", "text": "USB-C charging cable 2 m"},
            {"id": "cake", "text": "RED RETROSPOT CAKE CASES", "price": 0.55},
            {"id": "drill", "text": "Cordless hammer drill 18V", "price": 120.0},
            {"id": "22386", "text": "JUMBO BAG PINK POLKADOT"},
            {"id": "oil", "text": "Engine oil 5W-30, 5 litres"}
        ],
        "top_k": 4
    })
}

#[tokio::test]
async fn recommend_ranks_and_reports_the_model() {
    let (status, body) = recommend(shared_state(), realistic_request()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "top_k honoured");
    let scores: Vec<f64> = items.iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted: {scores:?}");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    let ranks: Vec<u64> = items.iter().map(|i| i["rank"].as_u64().unwrap()).collect();
    assert_eq!(ranks, [1, 2, 3, 4]);
    assert_eq!(body["model"]["encoder"], "all-MiniLM-L6-v2");
    assert!(!body["model"]["head"].as_str().unwrap().is_empty());
    assert!(body["took_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn related_products_rank_above_unrelated_ones() {
    let (_, body) = recommend(shared_state(), realistic_request()).await;
    let top: Vec<&str> = body["items"].as_array().unwrap().iter().take(2).map(|i| i["id"].as_str().unwrap()).collect();
    let mut top_sorted = top.clone();
    top_sorted.sort();
    assert_eq!(top_sorted, ["22386", "cake"], "the two gift-shop bags/cases lead: {body}");
}

#[tokio::test]
async fn default_top_k_is_ten_and_history_objects_are_accepted() {
    let candidates: Vec<Value> = (0..12)
        .map(|i| json!({"id": format!("p{i}"), "title": format!("product number {i}"), "colour": "red"}))
        .collect();
    let body = json!({"user": {"history": [{"id": "85123A", "text": "WHITE HANGING HEART T-LIGHT HOLDER"}]}, "candidates": candidates});
    let (status, body) = recommend(shared_state(), body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn texts_longer_than_the_window_are_truncated_not_rejected() {
    let long = "vintage ceramic teapot ".repeat(400);
    let body = json!({"user": {"text": long}, "candidates": [{"id": "a", "text": long}, {"id": "b", "text": "mug"}]});
    let (status, body) = recommend(shared_state(), body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn expect_error(body: impl Into<Body>, status: StatusCode, kind: &str, mentions: &str) {
    let (got, _, body) = call(app(shared_state()), post(body)).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["kind"], kind, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains(mentions), "error {message:?} should mention {mentions:?}");
}

#[tokio::test]
async fn malformed_json_is_400() {
    expect_error("{\"user\": {", StatusCode::BAD_REQUEST, "malformed_json", "not valid JSON").await;
    expect_error("definitely not json", StatusCode::BAD_REQUEST, "malformed_json", "not valid JSON").await;
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let mut body = realistic_request();
    body["top_k"] = json!("ten");
    expect_error(body.to_string(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "top_k").await;
    let mut body = realistic_request();
    body["candidates"][2]["price"] = json!("cheap");
    expect_error(body.to_string(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "candidates[2].price").await;
    let body = json!({"user": {"query": "x"}, "candidates": [{"id": "a", "text": "b"}], "topk": 3});
    expect_error(body.to_string(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "topk").await;
}

#[tokio::test]
async fn a_user_needs_some_signal() {
    let body = json!({"user": {"id": "u1", "query": "  ", "history": []}, "candidates": [{"id": "a", "text": "b"}]});
    expect_error(body.to_string(), StatusCode::UNPROCESSABLE_ENTITY, "missing_user_signal", "query").await;
}

#[tokio::test]
async fn candidate_rules_are_enforced() {
    let cases = [
        (json!([{"id": "", "text": "mug"}]), "invalid_candidate", "candidates[0].id"),
        (json!([{"id": "a", "text": "mug"}, {"id": "b", "text": " "}]), "invalid_candidate", "candidates[1].text"),
        (json!([{"id": "a", "text": "mug"}, {"id": "a", "text": "cup"}]), "duplicate_candidate_id", "`a`"),
        (json!([{"id": "a", "text": "mug", "price": -1}]), "invalid_candidate", "price"),
    ];
    for (candidates, kind, mentions) in cases {
        let body = json!({"user": {"query": "mug"}, "candidates": candidates}).to_string();
        expect_error(body, StatusCode::UNPROCESSABLE_ENTITY, kind, mentions).await;
    }
}

#[tokio::test]
async fn top_k_must_be_a_whole_number_of_at_least_one() {
    let with_top_k = |top_k: &str| {
        let mut body = realistic_request();
        body["top_k"] = json!(null);
        body.to_string().replace("\"top_k\":null", &format!("\"top_k\":{top_k}"))
    };
    for top_k in ["0", "-0", "-3", "2.5", "0.25e1", "1e-3"] {
        expect_error(with_top_k(top_k), StatusCode::UNPROCESSABLE_ENTITY, "invalid_top_k", "top_k").await;
    }
    // A whole number written as a JSON float is a whole number.
    for (top_k, expected) in [("2.0", 2), ("1e0", 1), ("3E0", 3)] {
        let response = app(shared_state()).oneshot(post(with_top_k(top_k))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{top_k}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["items"].as_array().unwrap().len(), expected, "{top_k}: {body}");
    }
}

#[tokio::test]
async fn every_answer_forbids_content_sniffing() {
    for request in
        [post(realistic_request().to_string()), post("{"), Request::get("/health").body(Body::empty()).unwrap()]
    {
        let response = app(shared_state()).oneshot(request).await.unwrap();
        let sniffing = response.headers().get("x-content-type-options").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(sniffing.as_deref(), Some("nosniff"), "{}", response.status());
    }
}

#[tokio::test]
async fn arrays_are_not_taken_for_objects() {
    let cases = [
        (json!([{"query": "mug"}, [{"id": "a", "text": "mug"}]]), "expected a JSON object"),
        (json!({"user": ["mug"], "candidates": [{"id": "a", "text": "mug"}]}), "user"),
        (json!({"user": {"query": "mug"}, "candidates": [["a", "mug"]]}), "candidates[0]"),
        (json!({"user": {"query": "mug"}, "candidates": [{"id": "a", "text": "mug"}], "filters": [true]}), "filters"),
    ];
    for (body, mentions) in cases {
        expect_error(body.to_string(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", mentions).await;
    }
    // A history entry is a title or an object, never a list.
    let body = json!({"user": {"history": [["a", "mug"]]}, "candidates": [{"id": "a", "text": "mug"}]});
    expect_error(body.to_string(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "history").await;
}

#[tokio::test]
async fn error_bodies_stay_small_whatever_the_request_echoes() {
    let huge = "k".repeat(700_000);
    let unknown_key = format!(r#"{{"user": {{"query": "mug"}}, "{huge}": 1}}"#);
    let huge_top_k = json!({"user": {"query": "mug"}, "top_k": huge}).to_string();
    let huge_id =
        json!({"user": {"query": "mug"}, "candidates": [{"id": huge, "text": "a"}, {"id": huge, "text": "b"}]});
    for body in [unknown_key, huge_top_k, huge_id.to_string()] {
        let response = app(shared_state()).oneshot(post(body)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert!(bytes.len() <= 1024, "an error body of {} bytes", bytes.len());
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(body["error"].as_str().unwrap().ends_with('…'), "{body}");
    }
}

#[tokio::test]
async fn oversized_heads_get_json_errors() {
    let long_uri = format!("/recommend?{}", "q".repeat(9000));
    let request = Request::post(long_uri).body(Body::from("{}")).unwrap();
    let (status, _, body) = call(app(shared_state()), request).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::URI_TOO_LONG, Some("uri_too_long")), "{body}");
    let mut request = post(realistic_request().to_string());
    for i in 0..150 {
        request.headers_mut().insert(
            header::HeaderName::from_bytes(format!("x-padding-{i}").as_bytes()).unwrap(),
            header::HeaderValue::from_static("1"),
        );
    }
    let (status, _, body) = call(app(shared_state()), request).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Some("headers_too_large")),
        "{body}"
    );
}

#[tokio::test]
async fn new_text_over_the_request_budget_is_422() {
    let mut settings = common::settings();
    settings.batching.max_request_tokens = 300;
    let state = common::ready_state(&settings);
    let candidates: Vec<Value> =
        (0..40).map(|i| json!({"id": i.to_string(), "text": format!("never seen enamel jug number {i}")})).collect();
    let body = json!({"user": {"query": "jug"}, "candidates": candidates});
    let (status, _, body) = call(app(state), post(body.to_string())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["kind"], "encoder_budget");
    assert!(body["error"].as_str().unwrap().contains("max_request_tokens"), "{body}");
}

#[tokio::test]
async fn non_finite_numbers_are_rejected() {
    let body = r#"{"user": {"query": "mug"}, "candidates": [{"id": "a", "text": "mug", "price": 1e999}]}"#;
    expect_error(body, StatusCode::UNPROCESSABLE_ENTITY, "non_finite_number", "candidates[0].price").await;
    let body = r#"{"user": {"query": "mug"}, "candidates": [{"id": "a", "text": "mug", "price": NaN}]}"#;
    expect_error(body, StatusCode::BAD_REQUEST, "malformed_json", "").await;
}

#[tokio::test]
async fn too_many_candidates_is_422() {
    let candidates: Vec<Value> = (0..1001).map(|i| json!({"id": i.to_string(), "text": "mug"})).collect();
    let body = json!({"user": {"query": "mug"}, "candidates": candidates}).to_string();
    expect_error(body, StatusCode::UNPROCESSABLE_ENTITY, "too_many_candidates", "1000").await;
}

#[tokio::test]
async fn too_much_history_is_422() {
    let history: Vec<&str> = vec!["mug"; 201];
    let body = json!({"user": {"history": history}, "candidates": [{"id": "a", "text": "mug"}]}).to_string();
    expect_error(body, StatusCode::UNPROCESSABLE_ENTITY, "too_many_history_items", "200").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let padding = "x".repeat(2 * 1024 * 1024 + 1);
    let body = json!({"user": {"query": padding}, "candidates": [{"id": "a", "text": "mug"}]}).to_string();
    expect_error(body, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "max_body_bytes").await;
}

#[tokio::test]
async fn curl_style_form_content_type_is_accepted() {
    let request = Request::post("/recommend")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(realistic_request().to_string()))
        .unwrap();
    let (status, _, body) = call(app(shared_state()), request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn ready_is_503_until_models_are_installed() {
    let settings = common::settings();
    let metrics = Metrics::new();
    let state = AppState::new(metrics.clone(), &settings);
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();

    let (status, retry, body) = call(app(state.clone()), get("/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["kind"], "not_ready");
    assert!(retry.is_some(), "503 carries Retry-After");
    let (status, _, _) = call(app(state.clone()), get("/health")).await;
    assert_eq!(status, StatusCode::OK, "liveness does not wait for models");
    let (status, _, body) = call(app(state.clone()), post(realistic_request().to_string())).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready")));

    state.install(common::service(&settings, metrics)); // warmed up inside
    let (status, _, body) = call(app(state), get("/ready")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn metrics_describe_the_traffic() {
    let state = common::ready_state(&common::settings());
    let (status, _) = recommend(state.clone(), realistic_request()).await;
    assert_eq!(status, StatusCode::OK);
    let mut bad = realistic_request();
    bad["top_k"] = json!(0);
    recommend(state.clone(), bad).await;
    let (status, _, body) = call(app(state), Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    for expected in [
        r#"shoprank_http_requests_total{route="/recommend",status="200"} 1"#,
        r#"shoprank_http_requests_total{route="/recommend",status="422"} 1"#,
        r#"shoprank_request_errors_total{kind="invalid_top_k"} 1"#,
        r#"shoprank_http_request_duration_seconds_count{route="/recommend"} 2"#,
        "shoprank_encoder_forward_seconds_count",
        "shoprank_encoder_batch_texts_bucket",
        "shoprank_candidates_per_request_count 2", // warm-up + the request
        "shoprank_predicted_score_count",
        r#"shoprank_model_info{encoder="all-MiniLM-L6-v2",head="#,
        "shoprank_embedding_cache_hits_total",
        "shoprank_embedding_cache_entries",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(expected), "metrics lack {expected:?}:\n{text}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let (status, _, body) = call(app(shared_state()), Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _, body) = call(app(shared_state()), Request::get("/recommend").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
}

#[tokio::test]
async fn a_full_encoder_queue_answers_degraded_with_the_candidates_it_was_sent() {
    let mut settings = common::settings();
    // The warm-up embeds 4 texts (user text, query, history, candidate);
    // this request 7 (user text, query, 5 candidates).
    settings.batching.max_queued_texts = 4;
    let state = common::ready_state(&settings);
    let candidates: Vec<Value> =
        (0..5).map(|i| json!({"id": i.to_string(), "text": format!("never seen item {i}")})).collect();
    let body = json!({"user": {"query": "a query never seen"}, "candidates": candidates});
    let (status, retry, body) = call(app(state), post(body.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["degraded"], &body["degraded_reason"]), (&json!(true), &json!("overloaded")), "{body}");
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        5,
        "every candidate comes back, ranked without its text: {body}"
    );
    assert_eq!(retry, None, "an answer, not a refusal");
}

#[tokio::test]
async fn the_readme_example_request_is_served() {
    let body = std::fs::read_to_string(common::repo_path("tests/fixtures/example-request.json")).unwrap();
    let (status, _, body) = call(app(shared_state()), post(body)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(ids[0], "22386", "the pink polkadot jumbo bag suits a red-retrospot bag buyer: {body}");
    assert!(!ids.contains(&"sku-512"), "engine oil is not in this shopper's top 5: {body}");
}

/// The real encoder for the warm-up, then a crash: the encoder thread dies
/// on the first batch after start-up.
struct DiesAfterWarmUp {
    encoder: Arc<Encoder>,
    calls: AtomicUsize,
}

impl BatchForward for DiesAfterWarmUp {
    fn forward(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EncoderError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) > 0 {
            panic!("simulated encoder crash");
        }
        self.encoder.forward(batch)
    }
}

#[tokio::test]
async fn a_dead_encoder_thread_turns_ready_503_and_fails_requests_fast() {
    let settings = common::settings();
    let metrics = Metrics::new();
    let encoder = common::encoder();
    let forward = Arc::new(DiesAfterWarmUp { encoder: encoder.clone(), calls: AtomicUsize::new(0) });
    let embedder = Arc::new(Embedder::with_forward(
        encoder.clone(),
        forward,
        settings.batching.clone(),
        settings.cache.max_bytes,
        metrics.clone(),
    ));
    let ranker = Ranker::new(embedder, &settings, metrics.clone());
    let bundle = Bundle::load(&settings.bundle.path, &encoder.identity(), encoder.precision()).unwrap();
    let state = AppState::new(metrics.clone(), &settings);
    state.install(Arc::new(Service::new(ranker, bundle, metrics).expect("the warm-up runs on the real encoder")));
    let get_ready = || Request::get("/ready").body(Body::empty()).unwrap();
    assert_eq!(call(app(state.clone()), get_ready()).await.0, StatusCode::OK);

    // The first request's batch kills the encoder thread.
    let (status, _, body) = call(app(state.clone()), post(realistic_request().to_string())).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("encoder_stopped")), "{body}");
    let (status, retry, body) = call(app(state.clone()), get_ready()).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("encoder_stopped")));
    assert!(retry.is_some(), "503 carries Retry-After");
    let (status, _, _) = call(app(state.clone()), Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a dead encoder fails liveness: the process needs a restart");
    let started = std::time::Instant::now();
    let (status, _, body) = call(app(state), post(realistic_request().to_string())).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("encoder_stopped")));
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "fails fast, not at the request timeout");
}

#[tokio::test]
async fn each_response_names_the_bundle_that_served_it_across_an_install() {
    let settings = common::settings();
    let metrics = Metrics::new();
    let service = common::service(&settings, metrics.clone());
    let state = AppState::new(metrics, &settings);
    state.install(service.clone());
    let (_, before) = recommend(state.clone(), realistic_request()).await;
    let first = before["model"]["head"].as_str().unwrap().to_string();

    // The committed bundle again, under another version.
    let dir = std::env::temp_dir().join(format!("shoprank-api-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["head.safetensors", "stats.json.gz"] {
        std::fs::copy(settings.bundle.path.join(file), dir.join(file)).unwrap();
    }
    let manifest = std::fs::read_to_string(settings.bundle.path.join("bundle.json")).unwrap();
    std::fs::write(dir.join("bundle.json"), manifest.replace(&format!("\"{first}\""), "\"second\"")).unwrap();
    let previous = service
        .install(Bundle::load(&dir, &common::encoder().identity(), common::encoder().precision()).unwrap())
        .unwrap();
    assert_eq!(previous.version(), first);

    let (status, after) = recommend(state.clone(), realistic_request()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["model"]["head"], "second");
    assert_eq!(after["items"], before["items"], "same weights, same ranking");
    let (_, _, ready) = call(app(state.clone()), Request::get("/ready").body(Body::empty()).unwrap()).await;
    assert_eq!(ready["head"], "second");
    let (_, _, metrics) = call(app(state), Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let text = metrics.as_str().unwrap();
    assert!(text.contains(r#"head="second""#) && !text.contains(&format!(r#"head="{first}""#)), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
