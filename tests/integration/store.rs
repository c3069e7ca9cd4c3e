//! The store's contract, checked on both engines with the same code: the
//! embedded SQLite store and PostgreSQL (a fresh schema per test; skipped,
//! saying so, where PostgreSQL is unreachable, and mandatory in CI).

use std::sync::Arc;

use shoprank::{
    open_store, CatalogItem, EventKind, FeedbackEvent, PendingItem, PoolLimits, Store, StoreLocation, VariantCount,
};

use crate::common;

fn open(url: &str) -> Arc<dyn Store> {
    let pool = PoolLimits { max_connections: 4, connect_timeout: std::time::Duration::from_secs(5) };
    open_store(&StoreLocation::parse(url), pool).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

fn item(id: &str, text: &str) -> CatalogItem {
    CatalogItem {
        id: id.into(),
        text: text.into(),
        price: Some(2.5),
        available: true,
        attributes: serde_json::json!({"colour": "red"}),
    }
}

pub fn event(id: &str, kind: EventKind, ts_ms: i64) -> FeedbackEvent {
    FeedbackEvent {
        event_id: id.into(),
        user_id: "u1".into(),
        item_id: "i1".into(),
        kind,
        timestamp_ms: ts_ms,
        request_id: None,
        variant: None,
        quantity: None,
        price: Some(1.25),
    }
}

#[test]
fn the_catalog_keeps_items_and_embeddings_and_a_text_change_makes_an_item_pending() {
    for url in common::store_urls("catalog_contract") {
        {
            let store = open(&url);
            store.upsert(&[item("a", "red mug"), item("b", "blue cup")]).unwrap();
            let pending = store.pending(10).unwrap();
            assert_eq!(pending.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["a", "b"], "{url}");
            assert_eq!(store.set_embeddings("enc", &[(pending[0].clone(), vec![0.5, -1.0])]).unwrap(), ["a"]);
        }
        // Reopened (and migrated again: a no-op).
        let store = open(&url);
        let get = |id: &str, encoder: &str| store.load_all(encoder).unwrap().into_iter().find(|s| s.item.id == id);
        let a = get("a", "enc").unwrap();
        assert_eq!(a.item, item("a", "red mug"), "{url}");
        assert_eq!(a.embedding, Some(vec![0.5, -1.0]), "{url}");
        assert_eq!(get("a", "other").unwrap().embedding, None, "another encoder's vector ({url})");
        store.upsert(&[CatalogItem { price: Some(3.0), ..item("a", "red mug") }]).unwrap();
        assert!(get("a", "enc").unwrap().embedding.is_some(), "same text keeps the vector ({url})");
        let old = PendingItem { id: "b".into(), text: "blue cup".into() };
        store.upsert(&[item("b", "navy cup")]).unwrap();
        assert!(store.set_embeddings("enc", &[(old, vec![1.0, 0.0])]).unwrap().is_empty(), "stale text ({url})");
        assert_eq!(store.pending(10).unwrap(), [PendingItem { id: "b".into(), text: "navy cup".into() }]);
        assert_eq!(store.forget_other_embeddings("new encoder").unwrap(), 1, "{url}");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (_, before) = store.changes(i64::MAX).unwrap();
        assert!(store.delete("a").unwrap());
        assert!(!store.delete("a").unwrap());
        assert_eq!(store.load_all("enc").unwrap().len(), 1, "{url}");
        // Every write is logged for the other replicas; a deleted item is absent.
        let (changes, now) = store.changes(before - 1).unwrap();
        assert_eq!(changes.iter().map(|c| c.item_id.as_str()).collect::<Vec<_>>(), ["a"], "{url}");
        assert!(now >= before, "{url}");
        let ids = ["a".to_string(), "b".to_string()];
        assert_eq!(store.items(&ids, "enc").unwrap().iter().map(|s| s.item.id.as_str()).collect::<Vec<_>>(), ["b"]);
    }
}

#[test]
fn events_are_stored_once_per_id_and_read_back_oldest_first() {
    for url in common::store_urls("events_contract") {
        let store = open(&url);
        let first = [event("e1", EventKind::Purchase, 2_000), event("e2", EventKind::Click, 1_000)];
        let mut with_variant = event("e3", EventKind::Impression, 1_000);
        with_variant.request_id = Some("b.00ff".into());
        with_variant.variant = Some("b".into());
        // A retry of e1 in a later batch of the same commit, and an id twice
        // in one batch: each stored once, the first occurrence counted new.
        let second = [
            with_variant.clone(),
            event("e1", EventKind::Purchase, 2_000),
            event("e4", EventKind::Purchase, 1_000),
            event("e4", EventKind::Purchase, 1_000),
        ];
        let new = store.append(&[&first, &second]).unwrap();
        assert_eq!(new, vec![vec![true, true], vec![true, false, true, false]], "{url}");
        assert_eq!(store.append(&[&first]).unwrap(), vec![vec![false, false]], "a retried batch ({url})");
        assert_eq!(store.event_count().unwrap(), 4, "{url}");

        let mut purchases = Vec::new();
        store.scan(&[EventKind::Purchase], &mut |e| purchases.push(e)).unwrap();
        assert_eq!(purchases.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(), ["e4", "e1"], "{url}");
        assert_eq!(purchases[1], first[0], "read back as written ({url})");
        let mut all = Vec::new();
        store.scan(&EventKind::ALL, &mut |e| all.push(e.event_id)).unwrap();
        assert_eq!(all, ["e2", "e3", "e4", "e1"], "same time: arrival order ({url})");
        assert_eq!(
            store.variant_counts().unwrap(),
            [VariantCount { variant: "b".into(), kind: EventKind::Impression, events: 1 }],
            "{url}"
        );
    }
}

/// Two handles on one store (two replicas), four writers, overlapping
/// ids: every id is stored exactly once and nothing is lost.
#[test]
fn concurrent_writers_store_every_event_exactly_once() {
    for url in common::store_urls("concurrent_writers") {
        let replicas = [open(&url), open(&url)];
        std::thread::scope(|scope| {
            for writer in 0..4 {
                let store = replicas[writer % 2].clone();
                scope.spawn(move || {
                    for round in 0..20 {
                        // Writers 0 and 1 write the same ids; so do 2 and 3.
                        let batch: Vec<FeedbackEvent> = (0..50)
                            .map(|i| event(&format!("w{}-{round}-{i}", writer / 2), EventKind::Click, i))
                            .collect();
                        store.append(&[&batch]).unwrap();
                    }
                });
            }
        });
        assert_eq!(replicas[0].event_count().unwrap(), 2 * 20 * 50, "{url}");
    }
}

/// Replicas starting together on a new store: all open it, the schema is
/// migrated once, and each sees the same tables.
#[test]
fn replicas_opening_a_new_store_together_all_start() {
    for url in common::store_urls("concurrent_open") {
        let stores: Vec<Arc<dyn Store>> = std::thread::scope(|scope| {
            let opening: Vec<_> = (0..4).map(|_| scope.spawn(|| open(&url))).collect();
            opening.into_iter().map(|handle| handle.join().expect("a replica failed to open the store")).collect()
        });
        stores[0].append(&[&[event("once", EventKind::Click, 1)]]).unwrap();
        for store in &stores {
            assert_eq!(store.event_count().unwrap(), 1, "{url}");
        }
    }
}
