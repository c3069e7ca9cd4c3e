//! Live statistics (issue 29), on both engines through real servers:
//! purchases stored after the bundle's history make a product it has never
//! seen "known", its explanation names the live count, and two replicas of
//! one PostgreSQL store serve the same scores.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, ServerProcess};

/// Shoppers who buy the new product within the week before the newest purchase.
const BUYERS: usize = 60;

fn request() -> Value {
    json!({
        "user": {"history": [{"id": "85099B", "text": "JUMBO BAG RED RETROSPOT"}, "LUNCH BAG RED RETROSPOT"]},
        "candidates": [
            {"id": "NEW-TOWEL", "text": "RED RETROSPOT TEA TOWEL", "price": 2.5},
            {"id": "22386", "text": "JUMBO BAG PINK POLKADOT"}
        ],
        "explain": true,
        "top_k": 2
    })
}

fn item<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["items"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap_or_else(|| panic!("{id} in {body}"))
}

fn recommend(server: &ServerProcess) -> Value {
    let (status, body) = server.request("POST", "/recommend", Some(&request().to_string())).unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The `shoprank_live_stats_purchases` gauge, once it reads `expected`.
fn wait_for_purchases(server: &ServerProcess, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
        let line = metrics.lines().find(|l| l.starts_with("shoprank_live_stats_purchases ")).unwrap_or_default();
        if line.ends_with(&format!(" {expected}")) {
            return;
        }
        assert!(Instant::now() < deadline, "no refresh counted {expected} purchases: {line:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn stored_purchases_make_a_new_product_known_and_popular_on_every_replica() {
    for url in common::store_urls("live-stats") {
        let settings = common::settings();
        let env = [("SHOPRANK__BUNDLE__LIVE_STATS_SECS", "1")];
        let first = common::start_server(&settings, &url, &env);
        let before = recommend(&first);
        let reasons = item(&before, "NEW-TOWEL")["explanation"].to_string();
        assert!(!reasons.contains("popular in the week"), "unknown before any purchase: {reasons}");

        // The bundle's history ends 2011-11-01; the purchases come on 2011-11-20.
        let events: Vec<Value> = (0..BUYERS)
            .map(|u| {
                json!({"event_id": format!("p{u}"), "user_id": format!("shopper-{u}"), "item_id": "NEW-TOWEL",
                       "type": "purchase", "timestamp": 1_321_783_200 + u as i64, "quantity": 1, "price": 2.5})
            })
            .collect();
        let (status, body) = first.request("POST", "/v1/events", Some(&json!({"events": events}).to_string())).unwrap();
        assert_eq!(status, 200, "{body}");
        wait_for_purchases(&first, BUYERS);

        let after = recommend(&first);
        let towel = item(&after, "NEW-TOWEL");
        assert!(
            towel["score"].as_f64().unwrap() > item(&before, "NEW-TOWEL")["score"].as_f64().unwrap(),
            "{BUYERS} buyers this week raise its score: {before} then {after}"
        );
        let reasons = towel["explanation"]["reasons"].as_array().unwrap();
        let popular = reasons.iter().find(|r| r["kind"] == "popular").unwrap_or_else(|| panic!("{towel}"));
        assert_eq!(
            popular["text"],
            format!("popular in the week before 2011-11-20 ({BUYERS} buyers)"),
            "the live count, as of the newest purchase: {towel}"
        );

        if url.starts_with("postgres") {
            // A second replica on the same store counts the same purchases
            // and serves the same scores.
            let second = common::start_server(&settings, &url, &env);
            wait_for_purchases(&second, BUYERS);
            let theirs = recommend(&second);
            for id in ["NEW-TOWEL", "22386"] {
                assert_eq!(item(&theirs, id)["score"], item(&after, id)["score"], "{id}: {theirs} vs {after}");
            }
        }
    }
}
