//! The OpenAPI document at `GET /openapi.json`, checked against the router
//! that serves it: it lists exactly the routes served, and real answers
//! (successes and errors) validate against the schemas it documents for
//! their status.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use shoprank::{app, AppState, Metrics};
use tower::ServiceExt;

use crate::common;

fn shared_state() -> AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE.get_or_init(|| common::ready_state(&common::settings())).clone()
}

/// The routes `app` serves, as method and path template. Kept by hand: a
/// route added to the router, or to the document, without the other fails
/// here.
const ROUTES: [(&str, &str); 14] = [
    ("post", "/recommend"),
    ("put", "/v1/catalog/items"),
    ("get", "/v1/catalog/items"),
    ("get", "/v1/catalog/items/{id}"),
    ("delete", "/v1/catalog/items/{id}"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/v1/model"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/events"),
    ("post", "/admin/reload"),
    ("post", "/admin/rollback"),
    ("delete", "/v1/users/{id}"),
];

/// The methods an OpenAPI path item can hold an operation for.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn request(method: &str, uri: &str, body: Option<&Value>) -> Request<Body> {
    let builder = Request::builder().method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap()).uri(uri);
    match body {
        Some(body) => {
            builder.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).unwrap()
        }
        None => builder.body(Body::empty()).unwrap(),
    }
}

async fn document() -> Value {
    let response = app(shared_state()).oneshot(request("get", "/openapi.json", None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).expect("the document is JSON")
}

/// The (method, path template) pairs the document has operations for.
fn documented_routes(document: &Value) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            assert!(METHODS.contains(&method.as_str()), "{path}: `{method}` is not an operation");
            routes.push((method.clone(), path.clone()));
        }
    }
    routes.sort();
    routes
}

/// A validator for `schema`, a part of `document`: the document's
/// components go along, so that `#/components/schemas/…` resolves.
fn validator(document: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    root["components"] = document["components"].clone();
    jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("not a valid schema ({e}): {schema}"))
}

fn assert_valid(document: &Value, schema: &Value, instance: &Value, what: &str) {
    let validator = validator(document, schema);
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{what} does not match its schema:\n{}\n{instance:#}", errors.join("\n"));
}

/// `$ref`s to `#/…` followed.
fn resolve<'a>(document: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(pointer) = value["$ref"].as_str() {
        value = document.pointer(pointer.trim_start_matches('#')).unwrap_or_else(|| panic!("{pointer} is missing"));
    }
    value
}

/// Sends `request` through the router and checks the answer against the
/// document: the response `template` documents for its method and status
/// (a path the router does not serve: `components.responses.NotFound` or
/// `MethodNotAllowed`), its media type, its schema, and Retry-After on a 503.
/// Returns the status and the body.
async fn check_answer(
    document: &Value,
    state: AppState,
    request: Request<Body>,
    template: Option<&str>,
) -> (StatusCode, Value) {
    let method = request.method().as_str().to_lowercase();
    let what = format!("{} {}", request.method(), request.uri());
    let response = app(state).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("a UTF-8 body");
    let documented = match (template, status) {
        (Some(path), _) => &document["paths"][path][&method]["responses"][status.as_str()],
        (None, StatusCode::NOT_FOUND) => &document["components"]["responses"]["NotFound"],
        (None, StatusCode::METHOD_NOT_ALLOWED) => &document["components"]["responses"]["MethodNotAllowed"],
        (None, other) => panic!("{what} answered {other}: the router serves it, the document does not list it"),
    };
    let documented = resolve(document, documented);
    assert!(documented.is_object(), "{what} answered {status}, which the document does not list: {text}");
    let content_type = headers.get(header::CONTENT_TYPE).expect("a Content-Type").to_str().unwrap();
    let media = &documented["content"][content_type];
    assert!(media.is_object(), "{what} answered {status} as {content_type}, documented as {}", documented["content"]);
    let body = if content_type == "application/json" {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
    } else {
        Value::String(text)
    };
    assert_valid(document, &media["schema"], &body, &format!("{what} ({status})"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(headers.contains_key(header::RETRY_AFTER), "{what}: a 503 without Retry-After");
        assert!(documented["headers"]["Retry-After"].is_object(), "{what}: Retry-After is not documented");
    }
    (status, body)
}

#[tokio::test]
async fn the_document_describes_this_service() {
    let document = document().await;
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", document["openapi"]);
    assert_eq!(document["info"]["title"], "shoprank");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    // Every error answer of every operation is the one error body.
    for (method, path) in documented_routes(&document) {
        let responses = document["paths"][&path][&method]["responses"].as_object().expect("responses");
        assert!(responses.contains_key("200"), "{method} {path} documents no 200");
        for (status, response) in responses.iter().filter(|(status, _)| status.as_str() != "200") {
            let schema = &resolve(&document, response)["content"]["application/json"]["schema"];
            let refs = schema["allOf"][0]["$ref"].as_str();
            assert_eq!(refs, Some("#/components/schemas/ErrorBody"), "{method} {path} {status}: {schema}");
        }
    }
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_served() {
    let document = document().await;
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    expected.sort();
    assert_eq!(documented_routes(&document), expected);

    // Each documented route is served: neither 404 nor 405. The item is
    // put first, so that reading and deleting it answer 200.
    let state = shared_state();
    for (method, path) in ROUTES {
        let uri = path.replace("{id}", "openapi-probe");
        let body = match (method, path) {
            ("put", _) => Some(json!({"items": [{"id": "openapi-probe", "text": "a probe"}]})),
            ("post", _) => Some(json!({})),
            _ => None,
        };
        let (status, body) =
            check_answer(&document, state.clone(), request(method, &uri, body.as_ref()), Some(path)).await;
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {status} {body}"
        );
    }

    // And with every other method, each documented path answers 405: the
    // document lists every method the router serves there.
    for path in document["paths"].as_object().unwrap().keys() {
        let uri = path.replace("{id}", "openapi-probe");
        for method in ["get", "put", "post", "delete", "patch"] {
            if ROUTES.contains(&(method, path.as_str())) {
                continue;
            }
            let (status, body) = check_answer(&document, state.clone(), request(method, &uri, None), None).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}: {body}");
        }
    }
}

fn recommend_request() -> Value {
    json!({
        "user": {
            "id": "c-17850",
            "text": "buys party supplies",
            "query": "red retrospot",
            "history": [
                "JUMBO BAG RED RETROSPOT",
                {"id": "20725", "title": "LUNCH BAG RED RETROSPOT"},
                {"text": "RED RETROSPOT CHARLOTTE BAG"}
            ]
        },
        "candidates": [
            {"id": "cake", "title": "RED RETROSPOT CAKE CASES", "price": 0.55, "sku": "22383",
             "attributes": {"brand": "Retrospot", "colour": ["red", "white"]}},
            {"id": "bag", "text": "JUMBO BAG PINK POLKADOT", "available": true, "attributes": {"brand": "Jumbo"}},
            {"id": "tyre", "text": "Car tyre 205/55 R16 all-season", "price": 79.0}
        ],
        "top_k": 2,
        "exclude": ["20725"],
        "filters": {"available": true, "min_price": 0, "max_price": 100,
                    "attributes": {"brand": ["Retrospot", "Jumbo"]}},
        "diversity": 0.3,
        "explain": true,
        "facets": ["colour", "brand"]
    })
}

/// The request body `method path` documents.
fn request_schema<'a>(document: &'a Value, method: &str, path: &str) -> &'a Value {
    &document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
}

#[tokio::test]
async fn request_schemas_follow_serde() {
    let document = document().await;
    let recommend = request_schema(&document, "post", "/recommend");
    let upsert = request_schema(&document, "put", "/v1/catalog/items");
    assert_valid(&document, recommend, &recommend_request(), "a full /recommend request");
    let items =
        json!({"items": [{"id": "m", "title": "Mug", "attributes": {"colour": "red"}}, {"id": "n", "text": "Nib"}]});
    assert_valid(&document, upsert, &items, "an upsert");
    // What serde refuses, the schemas refuse.
    for refused in [
        json!({"user": {"query": "mug"}, "colour": "red"}),
        json!({"user": {"history": [{"text": "mug", "title": "mug"}]}}),
        json!({"user": {"history": [{"id": "7"}]}}),
        json!({"user": {"query": "mug"}, "candidates": [{"id": "7"}]}),
        json!({"user": {"query": "mug"}, "filters": {"in_stock": true}}),
        json!({"user": {"query": "mug"}, "filters": {"attributes": {"brand": 5}}}),
        json!({"user": {"query": "mug"}, "facets": "brand"}),
        json!({"user": {"query": "mug"}, "top_k": 0}),
        json!({"candidates": []}),
    ] {
        assert!(!validator(&document, recommend).is_valid(&refused), "the schema takes {refused}");
    }
    for refused in [json!({"items": [{"id": "m"}]}), json!({"items": [{"id": "m", "text": "Mug", "attributes": [1]}]})]
    {
        assert!(!validator(&document, upsert).is_valid(&refused), "the schema takes {refused}");
    }
}

#[tokio::test]
async fn real_answers_match_their_documented_schemas() {
    let document = document().await;
    let state = shared_state();
    let check = |request, template| check_answer(&document, state.clone(), request, template);

    let (status, body) = check(request("post", "/recommend", Some(&recommend_request())), Some("/recommend")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["items"][0]["explanation"]["reasons"].is_array(), "{body}");
    assert!(body["facets"]["colour"].is_array(), "{body}");

    let mut plain = recommend_request();
    plain["explain"] = json!(false);
    let (status, body) = check(request("post", "/recommend", Some(&plain)), Some("/recommend")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let malformed = Request::post("/recommend").body(Body::from("{\"user\": ")).unwrap();
    let (status, body) = check(malformed, Some("/recommend")).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_json")));

    let mut zero = recommend_request();
    zero["top_k"] = json!(0);
    let (status, body) = check(request("post", "/recommend", Some(&zero)), Some("/recommend")).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_top_k")));

    let wrong_type = json!({"user": {"query": 7}});
    let (status, body) = check(request("post", "/recommend", Some(&wrong_type)), Some("/recommend")).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field")));

    let too_large = Request::post("/recommend").header(header::CONTENT_LENGTH, "1000000000").body(Body::empty());
    let (status, body) = check(too_large.unwrap(), Some("/recommend")).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")));

    let (status, body) = check(request("get", "/no/such/route", None), None).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    let (status, body) = check(request("get", "/recommend", None), None).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));

    for path in ["/health", "/ready", "/metrics", "/openapi.json", "/v1/model", "/v1/catalog/items"] {
        let (status, body) = check(request("get", path, None), Some(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }

    let items = json!({"items": [{"id": "openapi-mug", "title": "Red enamel mug", "price": 7.5,
        "attributes": {"colour": "red"}}]});
    let (status, body) = check(request("put", "/v1/catalog/items", Some(&items)), Some("/v1/catalog/items")).await;
    assert_eq!((status, body["upserted"].as_u64()), (StatusCode::OK, Some(1)), "{body}");
    let (status, body) =
        check(request("put", "/v1/catalog/items", Some(&json!({"items": []}))), Some("/v1/catalog/items")).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("empty_items")));

    let page = check(request("get", "/v1/catalog/items?limit=1", None), Some("/v1/catalog/items")).await;
    assert_eq!((page.0, page.1["items"][0]["id"].as_str()), (StatusCode::OK, Some("openapi-mug")), "{}", page.1);
    let (status, body) = check(request("get", "/v1/catalog/items?limit=0", None), Some("/v1/catalog/items")).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_page")));
    let (_, body) = check(request("get", "/v1/model", None), Some("/v1/model")).await;
    assert!(body["training"]["epochs"].is_array() && body["validation"]["ndcg@10"].is_number(), "{body}");
    assert_eq!(body["variants"][0]["name"], "default", "{body}");

    let item = "/v1/catalog/items/{id}";
    let (status, body) = check(request("get", "/v1/catalog/items/openapi-mug", None), Some(item)).await;
    assert_eq!((status, &body["attributes"]), (StatusCode::OK, &json!({"colour": "red"})), "{body}");
    let (status, body) = check(request("delete", "/v1/catalog/items/openapi-mug", None), Some(item)).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"deleted": "openapi-mug"})));
    let (status, body) = check(request("get", "/v1/catalog/items/openapi-mug", None), Some(item)).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::NOT_FOUND, Some("item_not_found")));

    let events = json!({"events": [{"event_id": "openapi-1", "user_id": "u", "item_id": "i", "type": "click",
        "timestamp": "2026-11-29T10:00:00Z", "request_id": "default.0000000000000001"}]});
    let (status, body) = check(request("post", "/v1/events", Some(&events)), Some("/v1/events")).await;
    assert_eq!((status, body["received"].as_u64()), (StatusCode::OK, Some(1)), "{body}");
    let bad =
        json!({"events": [{"event_id": "openapi-2", "user_id": "u", "item_id": "i", "type": "like", "timestamp": 1}]});
    let (status, body) = check(request("post", "/v1/events", Some(&bad)), Some("/v1/events")).await;
    assert_eq!((status, body["problems"][0]["index"].as_u64()), (StatusCode::UNPROCESSABLE_ENTITY, Some(0)), "{body}");
    // The shared state has no admin token: the admin routes are off.
    for path in ["/admin/reload", "/admin/rollback"] {
        let (status, body) = check(request("post", path, None), Some(path)).await;
        assert_eq!((status, body["kind"].as_str()), (StatusCode::FORBIDDEN, Some("admin_disabled")), "{path}");
    }
    let (status, body) = check(request("delete", "/v1/users/u", None), Some("/v1/users/{id}")).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::FORBIDDEN, Some("admin_disabled")));
}

/// A shopper's erasure (issue 30), with a token: each answer as documented.
#[tokio::test]
async fn erasure_answers_match_their_documented_schemas() {
    let document = document().await;
    let mut settings = common::settings();
    settings.admin.token = "t0ken".into();
    let state = common::ready_state(&settings);
    let erase = |uri: &str, token: &str| {
        let request = Request::delete(uri).header(header::AUTHORIZATION, format!("Bearer {token}"));
        request.body(Body::empty()).unwrap()
    };
    let template = Some("/v1/users/{id}");
    let (status, body) = check_answer(&document, state.clone(), erase("/v1/users/c-17850", "t0ken"), template).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"deleted_events": 0})));
    let (status, body) = check_answer(&document, state.clone(), erase("/v1/users/c-17850", "nope"), template).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let (status, body) = check_answer(&document, state.clone(), erase("/v1/users/%09", "t0ken"), template).await;
    assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_user_id")));
}

#[tokio::test]
async fn answers_before_the_models_load_match_too() {
    let document = document().await;
    let settings = common::settings();
    let unready = AppState::new(Metrics::new(), &settings);
    for (method, path, body) in [
        ("get", "/ready", None),
        ("post", "/recommend", Some(recommend_request())),
        ("get", "/health", None),
        ("get", "/v1/model", None),
        ("get", "/v1/catalog/items", None),
    ] {
        let (status, answer) =
            check_answer(&document, unready.clone(), request(method, path, body.as_ref()), Some(path)).await;
        let expected = if path == "/health" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        assert_eq!(status, expected, "{method} {path}: {answer}");
    }
}
