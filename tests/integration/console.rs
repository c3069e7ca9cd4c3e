//! The console (`GET /console`, issue 30): the page and every asset it
//! loads answer with their content type and a strict
//! Content-Security-Policy, and every request its scripts make is a route
//! of the OpenAPI document — "it talks only to the documented API" as a
//! test that fails when a script calls anything else. The catalog's
//! browsing route, added for the console, is walked page by page. The
//! real-browser test is `scripts/browser-test`.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use shoprank::{app, AppState, Metrics};
use tower::ServiceExt;

use crate::common;

/// A state without a loaded service: the console and the document need none.
fn unready_state() -> AppState {
    AppState::new(Metrics::new(), &common::settings())
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn get(state: &AppState, uri: &str) -> Answer {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, body: String::from_utf8(bytes.to_vec()).expect("a UTF-8 body") }
}

fn header(answer: &Answer, name: header::HeaderName) -> &str {
    answer.headers.get(&name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap()
}

/// The values of `attribute="..."` in `html`.
fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let marker = format!(" {attribute}=\"");
    html.match_indices(&marker)
        .filter_map(|(at, _)| {
            let rest = &html[at + marker.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// The sibling modules a script imports (`import … from './api.js';`), as paths.
fn imports(script: &str) -> Vec<String> {
    script
        .lines()
        .filter(|line| line.starts_with("import "))
        .map(|line| {
            let from = line.rsplit(" from ").next().unwrap().trim_end_matches(';').trim_matches('\'');
            format!("/console/{}", from.strip_prefix("./").expect("a sibling module"))
        })
        .collect()
}

/// Every file the console loads, found the way a browser finds them: the
/// page's `src` and `href`, then each script's imports. Each is fetched
/// and checked: 200, its content type, the CSP, nosniff. Returns the
/// scripts' paths and sources.
async fn crawl(state: &AppState) -> Vec<(String, String)> {
    let page = get(state, "/console").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(header(&page, header::CONTENT_TYPE), "text/html; charset=utf-8");
    let mut queue: Vec<String> = attribute_values(&page.body, "src")
        .into_iter()
        .chain(attribute_values(&page.body, "href"))
        .map(str::to_string)
        .collect();
    assert!(queue.iter().any(|p| p.ends_with(".css")) && queue.iter().any(|p| p.ends_with(".js")), "{queue:?}");
    let mut seen = BTreeSet::new();
    let mut scripts = Vec::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let asset = get(state, &path).await;
        assert_eq!(asset.status, StatusCode::OK, "{path}: {}", asset.body);
        let expected = if path.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else if path.ends_with(".css") {
            "text/css; charset=utf-8"
        } else if path.ends_with(".svg") {
            "image/svg+xml"
        } else {
            panic!("{path}: the page loads something other than a script, a stylesheet or an icon")
        };
        assert_eq!(header(&asset, header::CONTENT_TYPE), expected, "{path}");
        assert_csp(&asset, &path);
        if path.ends_with(".js") {
            queue.extend(imports(&asset.body));
            scripts.push((path, asset.body));
        }
    }
    scripts
}

fn assert_csp(answer: &Answer, what: &str) {
    let csp = header(answer, header::CONTENT_SECURITY_POLICY);
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert!(directives.contains(&"default-src 'self'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{what}: {csp}");
    assert_eq!(header(answer, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{what}");
}

/// A request a script makes: its method and the path of its URL, with each
/// `${…}` segment as `None` (any value).
#[derive(Debug)]
struct Call {
    method: String,
    segments: Vec<Option<String>>,
    source: String,
}

/// Every `fetch(` in `script`. Each must have a literal URL (a string or a
/// template) and, if it has options, start them with `method: '…'`; any
/// other form fails here, so no request escapes the check.
fn fetch_calls(path: &str, script: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    for (at, _) in script.match_indices("fetch(") {
        let rest = &script[at + "fetch(".len()..];
        let snippet: String = script[at..].chars().take(80).collect();
        let quote = rest.chars().next().filter(|c| matches!(c, '\'' | '"' | '`'));
        let quote = quote.unwrap_or_else(|| panic!("{path}: `{snippet}`: fetch's URL must be a literal"));
        let end = rest[1..].find(quote).unwrap_or_else(|| panic!("{path}: `{snippet}`: unterminated URL")) + 1;
        let url = &rest[1..end];
        let after = rest[end + 1..].trim_start();
        let method = if after.starts_with(')') {
            "GET".to_string()
        } else {
            let options = after.strip_prefix(',').map(str::trim_start).and_then(|o| o.strip_prefix('{'));
            let method = options.and_then(|o| o.trim_start().strip_prefix("method:")).map(str::trim_start);
            let method = method.and_then(|m| m.strip_prefix('\'')).and_then(|m| m.split('\'').next());
            method.unwrap_or_else(|| panic!("{path}: `{snippet}`: options must start with `method: '…'`")).to_string()
        };
        let url_path = url.split('?').next().unwrap();
        let segments = url_path
            .split('/')
            .map(|segment| match segment.find("${") {
                None => Some(segment.to_string()),
                Some(0) if segment.ends_with('}') && segment.matches("${").count() == 1 => None,
                Some(_) => panic!("{path}: `{snippet}`: a `${{…}}` must be a whole path segment"),
            })
            .collect();
        calls.push(Call { method, segments, source: snippet });
    }
    calls
}

/// Whether `call` is an operation of the document: same method, and path
/// segments equal, a `${…}` only where the template has a `{parameter}`.
fn documented(document: &Value, call: &Call) -> Option<String> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .filter(|(_, item)| item.get(call.method.to_lowercase()).is_some())
        .map(|(template, _)| template)
        .find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == call.segments.len()
                && parts.iter().zip(&call.segments).all(|(part, segment)| match segment {
                    Some(literal) => part == literal,
                    None => part.starts_with('{') && part.ends_with('}'),
                })
        })
        .cloned()
}

#[tokio::test]
async fn the_page_and_its_assets_answer_with_their_type_and_a_strict_policy() {
    let state = unready_state();
    let page = get(&state, "/console").await;
    assert_csp(&page, "/console");
    assert!(page.body.starts_with("<!doctype html>"), "{}", &page.body[..40]);
    assert!(!page.body.contains("<script>") && !page.body.contains(" style="), "no inline script or style");
    let scripts = crawl(&state).await;
    assert!(scripts.len() >= 5, "{:?}", scripts.iter().map(|(p, _)| p).collect::<Vec<_>>());
    // An unknown asset is the API's own 404.
    let unknown = get(&state, "/console/nothing.js").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(serde_json::from_str::<Value>(&unknown.body).unwrap()["kind"], "not_found");
}

#[tokio::test]
async fn every_request_the_console_makes_is_a_documented_route() {
    let state = unready_state();
    let document: Value = serde_json::from_str(&get(&state, "/openapi.json").await.body).unwrap();
    let mut used = BTreeSet::new();
    for (path, script) in crawl(&state).await {
        for call in fetch_calls(&path, &script) {
            let route = documented(&document, &call)
                .unwrap_or_else(|| panic!("{path}: {} `{}` is not a route of /openapi.json", call.method, call.source));
            used.insert(format!("{} {route}", call.method));
        }
    }
    // What the console needs, each at least once (a parser that found
    // nothing would pass the loop above).
    for route in [
        "POST /recommend",
        "GET /v1/catalog/items",
        "GET /v1/catalog/items/{id}",
        "GET /v1/model",
        "GET /ready",
        "GET /metrics",
        "POST /admin/reload",
        "POST /admin/rollback",
    ] {
        assert!(used.contains(route), "the console never calls {route}: {used:?}");
    }
}

#[test]
fn the_fetch_parser_refuses_what_it_cannot_check() {
    let call = &fetch_calls("t.js", "x = fetch(`/v1/catalog/items/${encodeURIComponent(id)}?a=1`);")[0];
    assert_eq!((call.method.as_str(), call.segments.len()), ("GET", 5));
    assert_eq!((call.segments[3].as_deref(), &call.segments[4]), (Some("items"), &None));
    let call = &fetch_calls("t.js", "fetch('/admin/reload', { method: 'POST', headers })")[0];
    assert_eq!(call.method, "POST");
    for bad in ["fetch(url)", "fetch('/x', options)", "fetch(`/v1/${a}b`)"] {
        let outcome = std::panic::catch_unwind(|| fetch_calls("t.js", bad));
        assert!(outcome.is_err(), "{bad} passed");
    }
}

/// `GET /v1/catalog/items`: pages in id order, each id once, `next_after`
/// only while more follow, and a bad `limit` is `invalid_page`.
#[tokio::test]
async fn catalog_pages_walk_every_item_once() {
    let state = common::ready_state(&common::settings());
    let ids = ["mug-03", "bag-01", "mug-01", "Zebra", "bag-02"];
    let items: Vec<Value> = ids.iter().map(|id| json!({"id": id, "text": format!("product {id}")})).collect();
    let put = Request::put("/v1/catalog/items")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "items": items }).to_string()))
        .unwrap();
    assert_eq!(app(state.clone()).oneshot(put).await.unwrap().status(), StatusCode::OK);

    let mut walked = Vec::new();
    let mut uri = "/v1/catalog/items?limit=2".to_string();
    loop {
        let answer = get(&state, &uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let page: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(page["catalog_items"], 5);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        walked.extend(items.iter().map(|item| item["id"].as_str().unwrap().to_string()));
        assert!(items.iter().all(|item| item["embedded"].is_boolean() && item["text"].is_string()));
        match page["next_after"].as_str() {
            Some(after) => uri = format!("/v1/catalog/items?limit=2&after={after}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    expected.sort();
    assert_eq!(walked, expected);

    for bad in ["?limit=0", "?limit=201", "?limit=ten", "?page=2"] {
        let answer = get(&state, &format!("/v1/catalog/items{bad}")).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(serde_json::from_str::<Value>(&answer.body).unwrap()["kind"], "invalid_page", "{bad}");
    }
}
