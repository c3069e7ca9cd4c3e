//! A split made ready for scoring: its co-purchase matrix and history
//! statistics, and the embeddings of every catalog item and of each test
//! user's text. Training windows, the inner validation split and the test
//! split are all prepared by this one code path.

use std::collections::HashSet;

use crate::config::UserTextBudget;
use crate::model::features::{self, CandidateInput, UserContext};
use crate::model::lexical::LexicalMatch;
use crate::model::stats::{HistoryStats, ItemPos};
use crate::model::user_text::UserSignals;
use crate::offline::data::split::{Split, TestUser};
use crate::offline::data::UserIdx;
use crate::offline::embed_store::{EmbedStore, EmbedStoreError};
use crate::offline::stats_builder::{self, CoPurchase, EaseCoverage};
use crate::offline::text_embedder::TextEmbedder;

/// What every split is prepared with: `train` and `eval` must agree on it.
#[derive(Debug, Clone, Copy)]
pub struct SplitSettings {
    pub user_text: UserTextBudget,
    pub ease_max_items: usize,
}

impl SplitSettings {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self { user_text: settings.user_text, ease_max_items: settings.offline.ease_max_items }
    }
}

pub struct PreparedSplit<'a> {
    pub split: Split<'a>,
    pub co_purchase: CoPurchase,
    /// Built from this split's history; positions equal catalog indices.
    pub stats: HistoryStats,
    /// User text of each test user, in `split.test_users` order.
    pub user_texts: Vec<String>,
    /// Over how many items the statistics' recent-purchase EASE was fitted.
    pub ease: EaseCoverage,
}

impl<'a> PreparedSplit<'a> {
    /// Builds statistics (the EASE over at most `settings.ease_max_items`) and
    /// user texts, and makes sure `store` holds the embeddings of every
    /// catalog text and user text.
    pub fn new(
        split: Split<'a>,
        encoder: &dyn TextEmbedder,
        settings: &SplitSettings,
        store: &mut EmbedStore,
    ) -> Result<Self, EmbedStoreError> {
        let co_purchase = CoPurchase::build(&split);
        let (stats, ease) = stats_builder::build(&split, &co_purchase, settings.ease_max_items);
        if ease.fitted_items < ease.catalog_items {
            tracing::warn!(
                fitted = ease.fitted_items,
                catalog = ease.catalog_items,
                "recent-purchase EASE fitted over the most recently bought items only (offline.ease_max_items)"
            );
        }
        let user_texts = split
            .test_users
            .iter()
            .map(|u| {
                let titles = split.history_titles(u.user);
                encoder.user_text(settings.user_text, UserSignals { query: None, profile: None, history: &titles })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let item_texts: Vec<&str> = stats.items.iter().map(|s| s.text.as_str()).collect();
        store.embed_all(encoder, &item_texts, "item texts")?;
        let user_refs: Vec<&str> = user_texts.iter().map(String::as_str).collect();
        store.embed_all(encoder, &user_refs, "user texts")?;
        Ok(Self { split, co_purchase, stats, user_texts, ease })
    }

    /// Keeps the test users (and their user texts) whose index in
    /// `split.test_users` passes `keep`; the statistics stay as they are.
    pub(crate) fn retain_test_users(&mut self, keep: impl Fn(usize) -> bool) {
        let kept: Vec<bool> = (0..self.split.test_users.len()).map(keep).collect();
        let mut flags = kept.iter();
        self.split.test_users.retain(|_| *flags.next().expect("one flag per user"));
        let mut flags = kept.iter();
        self.user_texts.retain(|_| *flags.next().expect("one flag per user"));
    }

    /// Catalog positions of the user's history, most recent first.
    pub fn history_positions(&self, user: UserIdx) -> Vec<ItemPos> {
        self.split
            .user_history
            .get(&user)
            .into_iter()
            .flatten()
            .filter_map(|&item| self.stats.position_of_id(self.split.data.items.name(item)))
            .collect()
    }

    /// Catalog positions the user has not bought in history: what the
    /// protocol ranks for them.
    pub fn candidates(&self, user: UserIdx) -> Vec<ItemPos> {
        let bought: HashSet<ItemPos> = self.history_positions(user).into_iter().collect();
        self.stats.positions().filter(|p| !bought.contains(p)).collect()
    }

    /// Catalog positions of a test user's truth.
    pub(crate) fn truth_positions(&self, user: &TestUser) -> HashSet<ItemPos> {
        user.truth.iter().filter_map(|&i| self.stats.position_of_id(self.split.data.items.name(i))).collect()
    }

    /// The feature builder's view of test user `index`.
    pub fn user_context(&self, index: usize, store: &EmbedStore) -> UserContext {
        self.user_context_with_text(index, &self.user_texts[index], store)
    }

    /// As [`Self::user_context`], with another user text (one with a query).
    pub(crate) fn user_context_with_text(&self, index: usize, user_text: &str, store: &EmbedStore) -> UserContext {
        self.user_context_with_vector(index, store.get(user_text).to_vec(), store)
    }

    /// As [`Self::user_context`], with another user vector (a degraded
    /// answer's, see `eval::DEGRADED`).
    pub(crate) fn user_context_with_vector(&self, index: usize, vector: Vec<f32>, store: &EmbedStore) -> UserContext {
        let user = self.split.test_users[index].user;
        let positions = self.history_positions(user);
        let embeddings: Vec<&[f32]> = positions
            .iter()
            .take(features::HISTORY_FEATURE_ITEMS)
            .map(|&p| store.get(&self.stats.item(p).text))
            .collect();
        let positions: Vec<Option<ItemPos>> = positions.into_iter().map(Some).collect();
        UserContext::new(&self.stats, vector, &positions, &embeddings)
    }

    /// A catalog item as a candidate (price from the statistics, as served
    /// when a request carries none).
    pub fn candidate<'s>(&self, position: ItemPos, store: &'s EmbedStore) -> CandidateInput<'s> {
        CandidateInput {
            position: Some(position),
            embedding: store.get(&self.stats.item(position).text),
            price: None,
            lexical: LexicalMatch::default(),
        }
    }

    /// The item id of a catalog position (for tie-breaking).
    pub fn item_id(&self, position: ItemPos) -> &str {
        &self.stats.item(position).id
    }
}
