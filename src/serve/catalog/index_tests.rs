//! The in-memory catalog index: exact scan, the inverted file (and its file
//! across restarts), int8 vectors' recall, filters, the lexical index in step.

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
fn attribute_filters_apply_in_the_exact_scan_the_inverted_file_and_the_lexical_index() {
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
        let index = CatalogIndex::from_stored(&IndexOptions::new(2, exact_scan_max, true), stored.clone());
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
    let back = index.read().get("a").unwrap().1.unwrap().to_vec();
    assert!(crate::model::encoder::cosine(&back, &unit(1.0)) > 0.9999, "{back:?}");
    index.delete("a");
    assert_eq!(index.counts(), (0, 0));
    index.upsert(&[item("b", "cup", None, true)]);
    assert_eq!(index.read().len(), 1);
    assert!(index.read().nearest(&unit(0.0), 5, &ItemFilter::default()).is_empty());
}

#[test]
fn above_the_exact_scan_bound_the_inverted_file_answers_and_follows_updates() {
    let stored: Vec<StoredItem> = (0..300)
        .map(|i| StoredItem {
            item: item(&format!("i{i}"), &format!("T{i}"), Some(i as f32), true),
            embedding: Some(unit(i as f32 * 0.01)),
        })
        .collect();
    let index = CatalogIndex::from_stored(&IndexOptions::new(2, 100, true), stored);
    assert!(index.approximate());
    let ids = |filter: &ItemFilter, k| -> Vec<String> {
        index.read().nearest(&unit(1.0), k, filter).into_iter().map(|(id, _)| id.to_string()).collect()
    };
    assert_eq!(ids(&ItemFilter::default(), 1), ["i100"]);
    let cheap = ItemFilter { max_price: Some(50.0), ..Default::default() };
    assert_eq!(ids(&cheap, 1), ["i50"], "filters apply inside the inverted file search");
    // A new text moves i100 far away; a new item lands where it was.
    index.upsert(&[item("i100", "moved", Some(100.0), true), item("new", "N", Some(1.0), true)]);
    index.set_vector("i100", "moved", &unit(2.5));
    index.set_vector("new", "N", &unit(1.0));
    assert_eq!(ids(&ItemFilter::default(), 1), ["new"]);
    index.delete("new");
    let near = ids(&ItemFilter::default(), 2);
    assert!(near.contains(&"i99".to_string()) && near.contains(&"i101".to_string()), "{near:?}");
}

fn stored_on_circle(n: usize, step: f32) -> Vec<StoredItem> {
    (0..n)
        .map(|i| StoredItem {
            item: item(&format!("i{i}"), &format!("T{i}"), Some(i as f32), true),
            embedding: Some(unit(i as f32 * step)),
        })
        .collect()
}

#[test]
fn the_inverted_file_is_saved_beside_the_store_and_read_back_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("shoprank-index-ivf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = IndexOptions {
        ann_file: Some(dir.join("catalog.ivf")),
        encoder_key: "enc".into(),
        ann_probe: 2,
        ..IndexOptions::new(2, 100, false)
    };
    let stored = stored_on_circle(400, 0.015);
    let first = CatalogIndex::from_stored(&options, stored.clone());
    assert_eq!(first.ann_start(), Some(AnnStart { trained: true, from_file: 0, assigned: 400, lists: 20 }));
    assert!(dir.join("catalog.ivf").exists(), "written once items were assigned");
    let nearest = |index: &CatalogIndex| -> Vec<String> {
        index.read().nearest(&unit(3.0), 3, &ItemFilter::default()).into_iter().map(|(id, _)| id.to_string()).collect()
    };
    let before = nearest(&first);
    drop(first);

    // A restart on the same store: every cell comes from the file, none is
    // computed, and retrieval answers as before.
    let second = CatalogIndex::from_stored(&options, stored.clone());
    assert_eq!(second.ann_start(), Some(AnnStart { trained: false, from_file: 400, assigned: 0, lists: 20 }));
    assert_eq!(nearest(&second), before);
    // Writes while running move and drop cells; the shutdown save keeps them.
    second.upsert(&[item("i200", "moved", Some(1.0), true)]);
    second.set_vector("i200", "moved", &unit(0.5));
    second.delete("i7");
    assert_eq!(second.save_ann().unwrap(), Some(399));
    drop(second);

    // A store that differs from the file: only the items that differ are
    // assigned (i10's vector changed, a new item, and, against the file
    // saved above, i200's stored vector and i7, deleted there); the rest is read.
    let mut changed = stored.clone();
    changed[10].embedding = Some(unit(2.0));
    changed.push(StoredItem { item: item("new", "N", None, true), embedding: Some(unit(3.0)) });
    let third = CatalogIndex::from_stored(&options, changed.clone());
    assert_eq!(third.ann_start(), Some(AnnStart { trained: false, from_file: 397, assigned: 4, lists: 20 }));
    assert!(nearest(&third)[..2].contains(&"new".to_string()), "new sits where i200 does");
    drop(third);
    let fourth = CatalogIndex::from_stored(&options, changed.clone());
    assert_eq!(fourth.ann_start().unwrap().assigned, 0, "the start-up that assigned items wrote the file back");
    drop(fourth);

    // Another encoder's file, or a damaged one, is not used: trained again.
    let other = IndexOptions { encoder_key: "other".into(), ..options.clone() };
    assert!(CatalogIndex::from_stored(&other, changed.clone()).ann_start().unwrap().trained);
    std::fs::write(dir.join("catalog.ivf"), b"damaged").unwrap();
    let fifth = CatalogIndex::from_stored(&options, changed);
    assert!(fifth.ann_start().unwrap().trained);
    assert!(nearest(&fifth)[..2].contains(&"new".to_string()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn int8_vectors_and_the_inverted_file_keep_recall_at_200_against_an_f32_exact_scan() {
    use rand::{Rng, SeedableRng};
    // Catalog-like 384-d unit vectors, as `shoprank scale-catalog` makes
    // them: 1,000 "titles" around 40 topics, each item 0.7 of one title,
    // 0.3 of another, and noise.
    let (dim, n) = (384, 40_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let normal = |v: Vec<f32>| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect::<Vec<f32>>()
    };
    let random = |rng: &mut rand::rngs::StdRng| -> Vec<f32> { (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect() };
    let topics: Vec<Vec<f32>> = (0..40).map(|_| random(&mut rng)).collect();
    let titles: Vec<Vec<f32>> = (0..1000)
        .map(|i| {
            let noise = random(&mut rng);
            normal(topics[i % 40].iter().zip(noise).map(|(t, r)| t + 0.8 * r).collect())
        })
        .collect();
    let mixed = |rng: &mut rand::rngs::StdRng| {
        let (a, b) = (&titles[rng.gen_range(0..1000)], &titles[rng.gen_range(0..1000)]);
        normal((0..dim).map(|d| 0.7 * a[d] + 0.3 * b[d] + rng.gen_range(-0.02..0.02)).collect())
    };
    let vectors: Vec<Vec<f32>> = (0..n).map(|_| mixed(&mut rng)).collect();
    let queries: Vec<Vec<f32>> = (0..20).map(|_| mixed(&mut rng)).collect();
    let stored: Vec<StoredItem> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| StoredItem { item: item(&format!("i{i}"), "t", None, true), embedding: Some(v.clone()) })
        .collect();
    let k = 200;
    let truths: Vec<HashSet<String>> = queries
        .iter()
        .map(|query| {
            let mut scored: Vec<(f32, usize)> =
                vectors.iter().enumerate().map(|(i, v)| (crate::model::encoder::cosine(query, v), i)).collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored[..k].iter().map(|(_, i)| format!("i{i}")).collect()
        })
        .collect();
    let recall = |index: &CatalogIndex| {
        let view = index.read();
        let found: usize = queries
            .iter()
            .zip(&truths)
            .map(|(query, truth)| {
                view.nearest(query, k, &ItemFilter::default()).iter().filter(|(id, _)| truth.contains(*id)).count()
            })
            .sum();
        found as f64 / (k * queries.len()) as f64
    };
    let exact = recall(&CatalogIndex::from_stored(&IndexOptions::new(dim, usize::MAX, false), stored.clone()));
    assert!(exact >= 0.99, "int8 exact scan recall@200 {exact}");
    // 200 lists: probing 12 scans 6% of the catalog, as 64 of 1,000 at a million.
    let mut by_probe = Vec::new();
    for probe in [6, 12, 24] {
        let options = IndexOptions { ann_probe: probe, ..IndexOptions::new(dim, 1000, false) };
        by_probe.push((probe, recall(&CatalogIndex::from_stored(&options, stored.clone()))));
    }
    eprintln!("recall@200 against f32: int8 exact scan {exact:.4}, inverted file (probe, recall) {by_probe:?}");
    assert!(by_probe[1].1 >= 0.95, "{by_probe:?}");
    assert!(by_probe.windows(2).all(|w| w[1].1 >= w[0].1), "more lists probed, more found: {by_probe:?}");
}

#[test]
fn the_lexical_index_is_kept_on_disk_and_catches_up_with_the_store_at_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options =
        IndexOptions { lexical_dir: Some(dir.path().join("lexical")), ..IndexOptions::new(2, usize::MAX, true) };
    let stored = |texts: &[(&str, &str)]| -> Vec<StoredItem> {
        let at = |i: usize| unit(i as f32 * 0.1);
        texts
            .iter()
            .enumerate()
            .map(|(i, (id, text))| StoredItem { item: item(id, text, None, true), embedding: Some(at(i)) })
            .collect()
    };
    let found = |index: &CatalogIndex, words: &str| -> Vec<String> {
        let view = index.read();
        let query = LexicalQuery::new(words, view.lexical_stats().as_ref().unwrap());
        let mut ids: Vec<String> =
            view.lexical_nearest(&query, 10, &ItemFilter::default()).into_iter().map(|(i, _)| i.id.clone()).collect();
        ids.sort();
        ids
    };
    let first =
        CatalogIndex::from_stored(&options, stored(&[("a", "red mug"), ("b", "blue lamp"), ("c", "green kettle")]));
    let fresh = Reconciled { kept: 0, added: 3, removed: 0 };
    assert_eq!(first.lexical_start(), Some(LexicalStart { on_disk: true, reconciled: fresh }));
    first.upsert(&[item("d", "red kettle", None, true)]);
    first.set_vector("d", "red kettle", &unit(1.0));
    assert_eq!(found(&first, "kettle"), ["c", "d"]);
    // A second index on the same directory while the first holds it: in memory.
    let beside = CatalogIndex::from_stored(&options, stored(&[("a", "red mug")]));
    assert_eq!(beside.lexical_start().map(|s| s.on_disk), Some(false));
    assert_eq!(found(&first, "mug"), ["a"], "the first is untouched");
    drop((first, beside));

    // While it was down the store moved on: b changed, c went.
    let second =
        CatalogIndex::from_stored(&options, stored(&[("a", "red mug"), ("b", "blue desk lamp"), ("d", "red kettle")]));
    let caught_up = Reconciled { kept: 2, added: 1, removed: 2 };
    assert_eq!(second.lexical_start(), Some(LexicalStart { on_disk: true, reconciled: caught_up }));
    assert_eq!(found(&second, "kettle"), ["d"]);
    assert_eq!(found(&second, "desk"), ["b"]);
    // Deletes reach the disk too.
    second.delete("d");
    drop(second);
    let third = CatalogIndex::from_stored(&options, stored(&[("a", "red mug"), ("b", "blue desk lamp")]));
    assert_eq!(third.lexical_start().unwrap().reconciled, Reconciled { kept: 2, added: 0, removed: 0 });
}

#[test]
fn only_a_filter_beyond_availability_makes_lexical_retrieval_search_deeper() {
    let available = ItemFilter { available_only: true, ..Default::default() };
    assert!(!ItemFilter::default().narrows() && !available.narrows());
    assert!(ItemFilter { min_price: Some(1.0), ..available.clone() }.narrows());
    assert!(ItemFilter { exclude: ["a".to_string()].into(), ..available.clone() }.narrows());
    let blue = AttributeFilter::new([("colour".to_string(), ["blue".to_string()].into())]);
    assert!(ItemFilter { attributes: blue, ..available }.narrows());
}
