//! What a score means and what the order maximises: the committed bundle's
//! calibration reported by `/ready` (and its absence, for a bundle without
//! one), and `"objective": "revenue"` ordering by probability × price.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use shoprank::app;

use crate::api::call;
use crate::common;

fn post(body: &Value) -> Request<Body> {
    Request::post("/recommend")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn ready() -> Request<Body> {
    Request::get("/ready").body(Body::empty()).unwrap()
}

/// Gift-shop candidates of similar appeal at very different prices, and
/// one with no price anywhere (not in the request, not a known id).
fn priced_request(objective: &str) -> Value {
    json!({
        "user": {"history": ["JUMBO BAG RED RETROSPOT", "LUNCH BAG RED RETROSPOT"]},
        "candidates": [
            {"id": "cheap", "text": "RED RETROSPOT CHARLOTTE BAG", "price": 0.85},
            {"id": "dear", "text": "RED RETROSPOT PICNIC BASKET", "price": 45.0},
            {"id": "mid", "text": "RED RETROSPOT CAKE STAND", "price": 9.95},
            {"id": "unpriced", "text": "RED RETROSPOT PEG BAG"}
        ],
        "top_k": 4,
        "objective": objective
    })
}

#[tokio::test]
async fn the_revenue_objective_orders_by_probability_times_price_and_keeps_the_scores() {
    let state = common::ready_state(&common::settings());
    let (status, _, conversion) = call(app(state.clone()), post(&priced_request("conversion"))).await;
    assert_eq!(status, StatusCode::OK, "{conversion}");
    let (status, _, revenue) = call(app(state), post(&priced_request("revenue"))).await;
    assert_eq!(status, StatusCode::OK, "{revenue}");

    let scores = |body: &Value| -> Vec<(String, f64)> {
        let mut all: Vec<(String, f64)> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["id"].as_str().unwrap().to_string(), i["score"].as_f64().unwrap()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    };
    assert_eq!(scores(&conversion), scores(&revenue), "the objective changes the order, never the probabilities");
    for item in conversion["items"].as_array().unwrap() {
        assert!(item.get("expected_revenue").is_none(), "only under the revenue objective: {item}");
    }

    let items = revenue["items"].as_array().unwrap();
    let expected: Vec<f64> = items.iter().map(|i| i["expected_revenue"].as_f64().unwrap()).collect();
    assert!(expected.windows(2).all(|w| w[0] >= w[1]), "ordered by expected revenue: {revenue}");
    let price = |id: &str| match id {
        "cheap" => 0.85,
        "dear" => 45.0,
        "mid" => 9.95,
        _ => f64::NAN,
    };
    for item in items {
        let (id, score, value) =
            (item["id"].as_str().unwrap(), item["score"].as_f64().unwrap(), item["expected_revenue"].as_f64().unwrap());
        if id == "unpriced" {
            // Priced at the statistics' median over priced items: a few pounds
            // in this log, neither zero nor the dearest.
            let implied = value / score;
            assert!(implied > 0.5 && implied < 45.0, "the unpriced item is ranked at {implied}");
        } else {
            assert!((value - score * price(id)).abs() < 1e-4 * value.max(1e-6), "{item}");
        }
    }
}

#[tokio::test]
async fn an_unknown_objective_is_refused_naming_the_field() {
    let state = common::ready_state(&common::settings());
    let (status, _, body) = call(app(state), post(&priced_request("profit"))).await;
    assert!(status.is_client_error(), "{status}: {body}");
    assert!(body.to_string().contains("objective"), "{body}");
}

#[tokio::test]
async fn ready_says_whether_the_scores_are_calibrated() {
    let (status, _, body) = call(app(common::ready_state(&common::settings())), ready()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["calibration"]["calibrated"], true, "the committed bundle ships a calibration: {body}");
    assert!(body["calibration"]["event"].as_str().unwrap().contains("within the next"), "{body}");
    let rate = body["calibration"]["base_rate"].as_f64().unwrap();
    assert!(rate > 0.0 && rate < 0.05, "a real purchase rate, not the 1:8 training mix: {rate}");

    // The same bundle without its calibration still loads, and says so.
    let dir = common::temp_dir("uncalibrated-bundle");
    for file in ["head.safetensors", "stats.json.gz"] {
        std::fs::copy(common::repo_path("models/bundle").join(file), dir.join(file)).unwrap();
    }
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(common::repo_path("models/bundle/bundle.json")).unwrap())
            .unwrap();
    manifest.as_object_mut().unwrap().remove("calibration");
    std::fs::write(dir.join("bundle.json"), manifest.to_string()).unwrap();
    let mut settings = common::settings();
    settings.bundle.path = dir.clone();
    let state = common::ready_state(&settings);
    let (status, _, body) = call(app(state.clone()), ready()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["calibration"]["calibrated"], false, "{body}");
    assert!(body["calibration"]["event"].as_str().unwrap().contains("uncalibrated"), "{body}");
    let (status, _, body) = call(app(state), post(&priced_request("conversion"))).await;
    assert_eq!(status, StatusCode::OK, "an uncalibrated bundle still serves: {body}");
    std::fs::remove_dir_all(&dir).unwrap();
}
