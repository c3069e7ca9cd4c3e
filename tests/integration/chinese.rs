//! Chinese storefronts: the m3e-small preset end to end, through the real
//! router with the committed m3e-small bundle, and the user-text budgets on
//! Chinese text.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use shoprank::config::{Precision, UserTextBudget};
use shoprank::model::user_text::{compose, UserSignals};
use shoprank::serve::api::{app, AppState};
use shoprank::serve::metrics::Metrics;
use shoprank::serve::service::Service;

use crate::api::call;
use crate::common::{self, Backbone, M3E, MINILM};

/// The service the m3e-small preset builds: its encoder, its bundle.
fn chinese_state() -> AppState {
    let settings = common::preset_settings(M3E);
    let metrics = Metrics::new();
    let state = AppState::new(metrics.clone(), &settings);
    let encoder = common::model_encoder(M3E, Backbone::Fast(Precision::F32));
    state.install(Arc::new(Service::with_encoder(&settings, encoder, metrics).expect("the m3e-small bundle loads")));
    state
}

async fn ranked_ids(state: AppState, body: Value) -> Vec<String> {
    let request = Request::post("/recommend")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, body) = call(app(state), request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_string()).collect()
}

/// The example from the issue that asked for a Chinese encoder: with
/// all-MiniLM-L6-v2 the men's running shoes came first (0.894 against 0.891),
/// because its vocabulary turns most of these characters into [UNK].
#[tokio::test]
async fn a_chinese_query_ranks_the_red_handbag_first() {
    let body = json!({
        "user": {"id": "u-1", "query": "红色手提包", "history": ["女士钱包 真皮"]},
        "candidates": [
            {"id": "shoes", "text": "男士运动鞋"},
            {"id": "handbag", "text": "红色真皮手提包 女"},
            {"id": "jeans", "text": "蓝色牛仔裤 男 直筒"},
            {"id": "blocks", "text": "儿童益智积木玩具 3-6岁"},
            {"id": "kettle", "text": "不锈钢电热水壶 1.7升"}
        ]
    });
    let ids = ranked_ids(chinese_state(), body).await;
    assert_eq!(ids[0], "handbag", "{ids:?}");
    let position = |id: &str| ids.iter().position(|x| x == id).unwrap();
    assert!(position("handbag") < position("shoes"), "{ids:?}");
}

/// Budgets count tokens, and a Chinese character is one token in both
/// vocabularies (BERT splits CJK characters apart before word pieces), so a
/// budget of 4 keeps 4 characters. Cuts fall between characters, never inside
/// one, and the whole text fits its window.
#[test]
fn user_text_budgets_count_chinese_characters_and_never_split_one() {
    let budget = UserTextBudget { query_tokens: 4, profile_tokens: 3 };
    let history = ["红色真皮手提包 女", "女士钱包 真皮"];
    let signals = UserSignals { query: Some("红色真皮手提包"), profile: Some("喜欢简约风格"), history: &history };
    for model in [M3E, MINILM] {
        let encoder = common::model_encoder(model, Backbone::Fast(Precision::F32));
        let tokenizer = encoder.tokenizer();
        // 16 - [CLS] - [SEP] = 14: query 4 + "." + profile 3 + "." leave 5
        // tokens, which the first history title fills with 5 characters.
        let text = compose(tokenizer, budget, 16, signals).unwrap();
        assert_eq!(text, "红色真皮. 喜欢简. 红色真皮手", "{model}");
        assert_eq!(tokenizer.encode(text.as_str(), true).unwrap().len(), 16, "{model}");
        for window in 3..40 {
            let text = compose(tokenizer, budget, window, signals).unwrap();
            let tokens = tokenizer.encode(text.as_str(), true).unwrap().len();
            assert!(tokens <= window, "{model}: {tokens} tokens for a window of {window}: {text:?}");
        }
    }
}
