//! Search quality on the committed bundle: a labelled query set built from
//! its catalog (real product titles; see `offline::search_eval`), ranked by
//! query cosine, by the head without its query features, and by what
//! `/recommend` ships. Needs no purchase log, so it always runs.

use shoprank::{
    build_query_set, evaluate_search, Banding, Bundle, Candidate, EmbedStore, Metrics, QuerySetRule, RankQuery,
    NUMERIC_FEATURES,
};

use crate::common;

#[test]
fn a_search_query_ranks_relevant_products_first_for_known_and_new_items() {
    let settings = common::settings();
    let encoder = common::encoder();
    let bundle = Bundle::load(&settings.bundle.path, &encoder.identity(), encoder.precision()).unwrap();
    let rule = QuerySetRule { queries: 40, relevant: 10, distractors: 40, seed: 0 };
    let queries = build_query_set(bundle.stats(), rule);
    assert_eq!(queries.len(), 40, "the committed catalog yields the queries");
    let mut store = EmbedStore::open(None, &*encoder).unwrap();
    let banding = Banding::from_settings(&settings.search);
    let report =
        evaluate_search(bundle.stats(), bundle.head(), &*encoder, settings.user_text, &mut store, &queries, banding)
            .unwrap();
    for catalog in ["known", "new"] {
        let ndcg = |method: &str| report.results[&format!("{method}/{catalog}")].ndcg10;
        let (shipped, cosine, no_query) = (ndcg("shipped"), ndcg("text-cosine"), ndcg("head-no-query"));
        assert!(shipped >= cosine - 0.01, "{catalog}: shipped {shipped:.3} vs text-cosine {cosine:.3}");
        assert!(shipped > no_query + 0.1, "{catalog}: the query features matter: {shipped:.3} vs {no_query:.3}");
    }
}

#[test]
fn served_search_features_carry_the_query_words_match() {
    let settings = common::settings();
    let service = common::service(&settings, Metrics::new());
    let bundle = service.bundle();
    let candidate = |id: &str, text: &str| Candidate {
        id: id.into(),
        text: text.into(),
        price: None,
        available: true,
        attributes: serde_json::Value::Null,
    };
    let candidates = vec![
        candidate("phrase", "JUMBO LUNCH BAG RED"),
        candidate("apart", "BAG FOR YOUR LUNCH"),
        candidate("typo", "LUNCH BOX"),
        candidate("none", "CAKE TIN PANTRY DESIGN"),
    ];
    let feature = |name: &str| NUMERIC_FEATURES.iter().position(|n| *n == name).unwrap();
    let words = |query: Option<&str>| {
        let query = RankQuery::new(query.map(String::from), Vec::new(), candidates.clone(), 4);
        let rows = service.ranker().numeric_features(&bundle, &query).unwrap();
        let named = ["query_terms_exact", "query_terms_matched", "query_phrase"].map(feature);
        let share = feature("query_bm25_share");
        rows.iter().map(|r| (named.map(|f| r[f]), r[share])).collect::<Vec<_>>()
    };
    let rows = words(Some("lunch bag"));
    assert_eq!(rows[0].0, [1.0, 1.0, 1.0], "both words, as a phrase");
    assert_eq!(rows[1].0, [1.0, 1.0, 0.0], "both words, apart");
    assert_eq!(rows[2].0, [0.5, 0.5, 0.0], "one word of two");
    assert_eq!(rows[3].0, [0.0, 0.0, 0.0]);
    assert!(rows[0].1 > rows[2].1 && rows[2].1 > 0.0 && rows[3].1 == 0.0, "{rows:?}");
    assert!(rows.iter().all(|(_, share)| (0.0..=1.0).contains(share)));
    // A word the candidates lack, within one typo of one they hold.
    let rows = words(Some("lunhc"));
    assert_eq!(rows[2].0, [0.0, 1.0, 0.0], "matched within a typo, not exactly");
    assert!(words(None).iter().all(|(named, share)| *named == [0.0; 3] && *share == 0.0), "no query, no match");
}
