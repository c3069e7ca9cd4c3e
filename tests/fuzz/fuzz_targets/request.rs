//! Any bytes as the body of `POST /recommend` and `PUT /v1/catalog/items`:
//! parsing and validation either accept the body or return an error that
//! the API can answer with (a 4xx status, a bounded message); never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoprank::{parse_body, RecommendRequest, Settings, UpsertRequest};

fuzz_target!(|body: &[u8]| {
    let limits = Settings::load(None).expect("default settings").limits;
    match parse_body::<RecommendRequest>(body) {
        Ok(request) => match request.validate(&limits) {
            Ok(query) => {
                assert!(query.top_k >= 1);
                assert!(query.candidates.as_ref().is_none_or(|c| !c.is_empty() && c.len() <= limits.max_candidates));
                assert!(query.history.len() <= limits.max_history);
                assert!((0.0..=1.0).contains(&query.diversity));
            }
            Err(error) => assert!(error.status().is_client_error(), "{error:?}"),
        },
        Err(error) => assert!(error.status().is_client_error(), "{error:?}"),
    }
    match parse_body::<UpsertRequest>(body) {
        Ok(request) => {
            if let Err(error) = request.validate(1000) {
                assert!(error.status().is_client_error(), "{error:?}");
            }
        }
        Err(error) => assert!(error.status().is_client_error(), "{error:?}"),
    }
});
