//! A shopper's erasure (issue 30), on both engines: `DELETE /v1/users/{id}`
//! behind the admin token leaves no row of the shopper in any table, keeps
//! everyone else's, is a no-op the second time, and a retrain from the store
//! afterwards never sees the shopper. (That events queued before the erasure
//! are erased with the rest is `serve::event_writer`'s unit test: it needs a
//! store whose commits wait.)

use axum::http::StatusCode;
use serde_json::{json, Value};
use shoprank::{DataSource, EventKind};

use crate::common;
use crate::feedback::{open_store, request, runtime, send, shoprank, synthetic_log};

/// Rows, in any table of the store at `url`, with a column equal to
/// `value` (as text): a check that knows no schema, so a table added later
/// that holds user ids is covered too.
fn rows_holding(url: &str, value: &str) -> Vec<String> {
    let mut found = Vec::new();
    if url.starts_with("postgres") {
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        let columns = client
            .query(
                "SELECT table_name::text, column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema()",
                &[],
            )
            .unwrap();
        for column in columns {
            let (table, column): (String, String) = (column.get(0), column.get(1));
            let query = format!("SELECT COUNT(*) FROM \"{table}\" WHERE \"{column}\"::text = $1");
            let n: i64 = client.query_one(&query, &[&value]).unwrap().get(0);
            if n > 0 {
                found.push(format!("{table}.{column}: {n}"));
            }
        }
    } else {
        let path = std::path::Path::new(url).join("shoprank.sqlite3");
        let connection = rusqlite::Connection::open(&path).unwrap();
        let mut tables = connection.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").unwrap();
        let tables: Vec<String> = tables.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
        for table in tables {
            let mut info = connection.prepare(&format!("SELECT name FROM pragma_table_info('{table}')")).unwrap();
            let columns: Vec<String> = info.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
            for column in columns {
                let query = format!("SELECT COUNT(*) FROM \"{table}\" WHERE CAST(\"{column}\" AS TEXT) = ?1");
                let n: i64 = connection.query_row(&query, [value], |row| row.get(0)).unwrap();
                if n > 0 {
                    found.push(format!("{table}.{column}: {n}"));
                }
            }
        }
    }
    found
}

fn event(id: &str, user: &str, kind: &str) -> Value {
    json!({"event_id": id, "user_id": user, "item_id": "85123A", "type": kind, "timestamp": 1_322_000_000,
           "request_id": format!("default.{id}"), "quantity": 1, "price": 2.55})
}

#[test]
fn an_erasure_leaves_no_row_of_the_shopper_and_every_row_of_the_others() {
    for url in common::store_urls("erasure") {
        let mut settings = common::settings();
        settings.store.url = url.clone();
        settings.admin.token = "t0ken".into();
        let state = common::ready_state(&settings);
        let rt = runtime();
        let (gone, kept) = ("shopper-to-forget", "shopper-who-stays");
        let events: Vec<Value> = ["impression", "click", "add_to_cart", "purchase"]
            .iter()
            .enumerate()
            .flat_map(|(n, kind)| [event(&format!("g{n}"), gone, kind), event(&format!("k{n}"), kept, kind)])
            .collect();
        let (status, body) = send(&rt, &state, request("POST", "/v1/events", Some(&json!({"events": events})), None));
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        assert_eq!(rows_holding(&url, gone), ["events.user_id: 4"], "{url}");

        let path = format!("/v1/users/{gone}");
        for token in [None, Some("t0ke"), Some("")] {
            let (status, body) = send(&rt, &state, request("DELETE", &path, None, token));
            assert_eq!((status, body["kind"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{token:?}");
        }
        assert_eq!(rows_holding(&url, gone).len(), 1, "{url}: nothing erased without the token");

        let (status, body) = send(&rt, &state, request("DELETE", &path, None, Some("t0ken")));
        assert_eq!((status, &body), (StatusCode::OK, &json!({"deleted_events": 4})), "{url}");
        // Committed before the answer: another connection sees it at once.
        assert_eq!(rows_holding(&url, gone), Vec::<String>::new(), "{url}: no row of the shopper remains");
        let mut left = Vec::new();
        open_store(&url).scan(&EventKind::ALL, &mut |e| left.push((e.event_id, e.user_id))).unwrap();
        let expected: Vec<(String, String)> = (0..4).map(|n| (format!("k{n}"), kept.to_string())).collect();
        assert_eq!(left, expected, "{url}: the other shopper's events are intact");

        // Idempotent, and an id never seen answers the same way.
        for path in [path.as_str(), "/v1/users/never-seen", "/v1/users/shopper%2Fwith%20slash"] {
            let (status, body) = send(&rt, &state, request("DELETE", path, None, Some("t0ken")));
            assert_eq!((status, &body), (StatusCode::OK, &json!({"deleted_events": 0})), "{url} {path}");
        }
        let (status, body) = send(&rt, &state, request("DELETE", "/v1/users/%20", None, Some("t0ken")));
        assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_user_id")));
        let too_long = format!("/v1/users/{}", "x".repeat(257));
        let (status, body) = send(&rt, &state, request("DELETE", &too_long, None, Some("t0ken")));
        assert_eq!((status, body["kind"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_user_id")));
        assert_eq!(open_store(&url).event_count().unwrap(), 4, "{url}");

        let metrics = state.metrics().render();
        assert!(metrics.contains("shoprank_user_erasures_total 4"), "{metrics}");
        assert!(metrics.contains("shoprank_erased_events_total 4"), "{metrics}");
        assert!(!metrics.contains(gone), "the metrics never name the shopper");
    }
    // Without a configured token, erasure is off like every admin route.
    let state = common::ready_state(&common::settings());
    let (status, body) = send(&runtime(), &state, request("DELETE", "/v1/users/u1", None, Some("")));
    assert_eq!((status, body["kind"].as_str()), (StatusCode::FORBIDDEN, Some("admin_disabled")));
}

/// The purchase log imported into a store, one shopper erased through the
/// API: the training data `shoprank train --store` loads holds everyone
/// else's purchases and none of the shopper's.
#[test]
fn a_retrain_after_an_erasure_never_sees_the_shopper() {
    for url in common::store_urls("erasure_retrain") {
        let work = common::temp_dir("erasure_retrain");
        let (events, items) = synthetic_log(&work);
        let import =
            ["store", "import", "--events", events.to_str().unwrap(), "--items", items.to_str().unwrap(), "--store"];
        let imported = shoprank(&[&import[..], &[url.as_str()]].concat(), &[]);
        assert!(imported.contains("1980 purchases (1980 new)"), "{imported}");
        let mut settings = common::settings();
        settings.store.url = url.clone();
        settings.admin.token = "t0ken".into();
        let before = DataSource::Store(settings.store.clone()).load().unwrap();
        assert!(format!("{:?}", before.users).contains("\"c7\""), "{url}");

        let state = common::ready_state(&settings);
        let (status, body) = send(&runtime(), &state, request("DELETE", "/v1/users/c7", None, Some("t0ken")));
        assert_eq!((status, &body), (StatusCode::OK, &json!({"deleted_events": 22})), "{url}");

        let after = DataSource::Store(settings.store.clone()).load().unwrap();
        let users = format!("{:?}", after.users);
        assert!(!users.contains("\"c7\""), "{url}: the erased shopper is in the training data");
        assert!(users.contains("\"c6\"") && users.contains("\"c8\""), "{url}");
        assert_eq!(after.events.len(), before.events.len() - 22, "{url}: only the shopper's purchases are gone");
        // And what `store export` writes (the CSV a retrain can read) lacks them too.
        let export = work.join("export");
        shoprank(&["store", "export", "--store", &url, "--out", export.to_str().unwrap()], &[]);
        let exported = std::fs::read_to_string(export.join("events.csv")).unwrap();
        assert!(!exported.lines().any(|line| line.starts_with("c7,")), "{url}");
        assert!(exported.lines().any(|line| line.starts_with("c6,")), "{url}");
    }
}
