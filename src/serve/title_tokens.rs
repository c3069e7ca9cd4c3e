//! The tokens of recently seen history titles, bounded in bytes
//! (`cache.title_tokens_max_bytes`).
//!
//! Composing a request's user text tokenizes each history title to cut it
//! to its budget (`model::user_text`): five titles were about half of the
//! composing time, the largest part of a request's work before its forward
//! pass. Viewed titles are catalog titles and repeat across users, so the
//! server keeps their tokens. Keys are the title's 128-bit XXH3 hash, as in
//! the embedding cache (`serve::cache`); one cache serves one encoder, whose
//! tokenizer made its entries. Hits, misses and bytes go to the metrics.

use std::sync::Arc;

use tokenizers::Tokenizer;
use xxhash_rust::xxh3::xxh3_128;

use crate::model::encoder::EncoderError;
use crate::model::user_text::{PartTokens, TitleTokens};
use crate::serve::cache::{ByteLru, ENTRY_OVERHEAD};
use crate::serve::metrics::Metrics;

pub struct TitleTokenCache {
    lru: ByteLru<PartTokens>,
    metrics: Metrics,
}

impl TitleTokenCache {
    pub fn new(max_bytes: usize, metrics: Metrics) -> Self {
        Self { lru: ByteLru::new(max_bytes, cost), metrics }
    }

    /// Entries and bytes held now (the tests check the budget with it).
    #[cfg(test)]
    pub(crate) fn usage(&self) -> (usize, usize) {
        self.lru.usage()
    }
}

fn cost(tokens: &PartTokens) -> usize {
    tokens.bytes() + ENTRY_OVERHEAD
}

impl TitleTokens for TitleTokenCache {
    fn title_tokens(&self, tokenizer: &Tokenizer, title: &str) -> Result<Arc<PartTokens>, EncoderError> {
        let key = xxh3_128(title.as_bytes());
        if let Some(found) = self.lru.get(key) {
            self.metrics.title_tokens_hits.inc();
            return Ok(found);
        }
        self.metrics.title_tokens_misses.inc();
        // Tokenized outside the lock: other requests keep their lookups.
        // Another request may tokenize the same title meanwhile; the second
        // insertion replaces the first.
        let tokens = Arc::new(PartTokens::of(tokenizer, title)?);
        if let Some(usage) = self.lru.insert(key, tokens.clone()) {
            self.metrics.title_tokens_bytes.set(usage.bytes as i64);
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;

    fn tokenizer() -> Tokenizer {
        let vocab = [("[UNK]", 0), ("red", 1), ("mug", 2), ("blue", 3)].map(|(w, i)| (w.to_string(), i));
        let model = WordLevel::builder().vocab(vocab.into_iter().collect()).unk_token("[UNK]".into()).build().unwrap();
        let mut tokenizer = Tokenizer::new(model);
        tokenizer.with_pre_tokenizer(Some(Whitespace {}));
        tokenizer
    }

    #[test]
    fn a_title_is_tokenized_once_and_gives_the_tokenizers_tokens() {
        let tokenizer = tokenizer();
        let metrics = Metrics::new();
        let cache = TitleTokenCache::new(1 << 20, metrics.clone());
        let first = cache.title_tokens(&tokenizer, "red mug").unwrap();
        assert_eq!(*first, PartTokens::of(&tokenizer, "red mug").unwrap());
        let again = cache.title_tokens(&tokenizer, "red mug").unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second lookup is the cached entry");
        assert_eq!(cache.usage(), (1, cost(&first)));
        assert_eq!((metrics.title_tokens_hits.get(), metrics.title_tokens_misses.get()), (1, 1));
        assert_eq!(metrics.title_tokens_bytes.get(), cost(&first) as i64);
    }

    #[test]
    fn the_least_recently_used_titles_go_first_once_over_the_bound() {
        let tokenizer = tokenizer();
        let one = cost(&PartTokens::of(&tokenizer, "red mug").unwrap());
        let cache = TitleTokenCache::new(2 * one, Metrics::new());
        for title in ["red mug", "blue mug", "red mug", "mug red"] {
            cache.title_tokens(&tokenizer, title).unwrap();
        }
        // "blue mug" was the least recently used when "mug red" came.
        assert_eq!(cache.usage(), (2, 2 * one));
        assert!(cache.lru.get(xxh3_128(b"blue mug")).is_none());
        assert!(cache.lru.get(xxh3_128(b"red mug")).is_some() && cache.lru.get(xxh3_128(b"mug red")).is_some());
        // An entry over the whole bound (0 keeps none) is returned, not kept.
        for max_bytes in [one - 1, 0] {
            let tiny = TitleTokenCache::new(max_bytes, Metrics::new());
            assert_eq!(cost(&tiny.title_tokens(&tokenizer, "red mug").unwrap()), one);
            assert_eq!(tiny.usage(), (0, 0));
        }
    }
}
