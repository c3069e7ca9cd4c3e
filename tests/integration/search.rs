//! Search quality on the committed bundle: a labelled query set built from
//! its catalog (real product titles; see `offline::search_eval`), ranked by
//! query cosine, by the head without its query features, and by what
//! `/recommend` ships. Needs no purchase log, so it always runs.

use shoprank::{build_query_set, evaluate_search, Banding, Bundle, EmbedStore, QuerySetRule};

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
