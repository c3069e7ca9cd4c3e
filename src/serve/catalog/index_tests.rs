//! The in-memory catalog index: exact scan, HNSW, filters, the lexical index in step.

use super::*;

fn item(id: &str, text: &str, price: Option<f32>, available: bool) -> CatalogItem {
    CatalogItem { id: id.into(), text: text.into(), price, available, attributes: serde_json::Value::Null }
}

fn unit(angle: f32) -> Vec<f32> {
    vec![angle.cos(), angle.sin()]
}

#[test]
fn nearest_is_an_exact_scan_over_embedded_items_the_filter_allows() {
    let index = CatalogIndex::new(2, usize::MAX, true);
    index.upsert(&[
        item("a", "A", Some(1.0), true),
        item("b", "B", Some(5.0), true),
        item("c", "C", None, false),
        item("d", "D", Some(2.0), true),
        item("e", "E", Some(2.0), true),
    ]);
    for (id, angle) in [("a", 0.0), ("b", 0.1), ("c", 0.05), ("d", 0.5)] {
        index.set_vector(id, &id.to_uppercase(), &unit(angle));
    }
    let ids = |filter: &ItemFilter, k| -> Vec<String> {
        index.read().nearest(&unit(0.0), k, filter).into_iter().map(|(id, _)| id.to_string()).collect()
    };
    assert_eq!(ids(&ItemFilter::default(), 10), ["a", "c", "b", "d"], "e has no embedding yet");
    assert_eq!(ids(&ItemFilter::default(), 2), ["a", "c"]);
    let available = ItemFilter { available_only: true, ..Default::default() };
    assert_eq!(ids(&available, 10), ["a", "b", "d"]);
    let priced = ItemFilter { min_price: Some(1.5), max_price: Some(5.0), ..Default::default() };
    assert_eq!(ids(&priced, 10), ["b", "d"], "no price, no match for a price range");
    let excluding = ItemFilter { exclude: ["a".to_string()].into(), ..available.clone() };
    assert_eq!(ids(&excluding, 1), ["b"]);
}

#[test]
fn attribute_filters_apply_in_the_exact_scan_the_graph_and_the_lexical_index() {
    let stored: Vec<StoredItem> = (0..300)
        .map(|i| {
            let mut item = item(&format!("i{i}"), &format!("mug {i}"), None, true);
            item.attributes =
                serde_json::json!({"colour": if i % 10 == 0 { vec!["red", "blue"] } else { vec!["grey"] }});
            StoredItem { item, embedding: Some(unit(i as f32 * 0.01)) }
        })
        .collect();
    let blue = ItemFilter {
        attributes: AttributeFilter::new([("colour".to_string(), ["blue".to_string()].into())]),
        ..Default::default()
    };
    for exact_scan_max in [usize::MAX, 100] {
        let index = CatalogIndex::from_stored(2, exact_scan_max, true, stored.clone());
        let view = index.read();
        let nearest: Vec<&str> = view.nearest(&unit(1.04), 2, &blue).into_iter().map(|(id, _)| id).collect();
        assert_eq!(nearest, ["i100", "i110"], "exact_scan_max {exact_scan_max}");
        let query = LexicalQuery::new("mug", view.lexical_stats().as_ref().unwrap());
        let found = view.lexical_nearest(&query, 100, &blue);
        assert_eq!(found.len(), 30);
        assert!(found.iter().all(|(item, _)| blue.allows_item(item)));
    }
}

#[test]
fn a_text_change_hides_the_item_until_its_new_embedding_and_deletes_free_the_slot() {
    let index = CatalogIndex::new(2, usize::MAX, true);
    index.upsert(&[item("a", "red mug", None, true)]);
    index.set_vector("a", "red mug", &unit(0.0));
    assert_eq!(index.counts(), (1, 1));
    index.upsert(&[item("a", "blue mug", None, true)]);
    assert_eq!(index.counts(), (1, 0));
    index.set_vector("a", "red mug", &unit(0.0));
    assert_eq!(index.counts(), (1, 0), "a vector of the old text is ignored");
    index.set_vector("a", "blue mug", &unit(1.0));
    assert_eq!(index.read().get("a").unwrap().1, Some(&unit(1.0)[..]));
    index.delete("a");
    assert_eq!(index.counts(), (0, 0));
    index.upsert(&[item("b", "cup", None, true)]);
    assert_eq!(index.read().len(), 1);
    assert!(index.read().nearest(&unit(0.0), 5, &ItemFilter::default()).is_empty());
}

#[test]
fn above_the_exact_scan_bound_hnsw_answers_and_follows_updates() {
    let stored: Vec<StoredItem> = (0..300)
        .map(|i| StoredItem {
            item: item(&format!("i{i}"), &format!("T{i}"), Some(i as f32), true),
            embedding: Some(unit(i as f32 * 0.01)),
        })
        .collect();
    let index = CatalogIndex::from_stored(2, 100, true, stored);
    let ids = |filter: &ItemFilter, k| -> Vec<String> {
        index.read().nearest(&unit(1.0), k, filter).into_iter().map(|(id, _)| id.to_string()).collect()
    };
    assert_eq!(ids(&ItemFilter::default(), 1), ["i100"]);
    let cheap = ItemFilter { max_price: Some(50.0), ..Default::default() };
    assert_eq!(ids(&cheap, 1), ["i50"], "filters apply inside the graph search");
    // A new text moves i100 far away; a new item lands where it was.
    index.upsert(&[item("i100", "moved", Some(100.0), true), item("new", "N", Some(1.0), true)]);
    index.set_vector("i100", "moved", &unit(2.5));
    index.set_vector("new", "N", &unit(1.0));
    assert_eq!(ids(&ItemFilter::default(), 1), ["new"]);
    index.delete("new");
    let near = ids(&ItemFilter::default(), 2);
    assert!(near.contains(&"i99".to_string()) && near.contains(&"i101".to_string()), "{near:?}");
}
