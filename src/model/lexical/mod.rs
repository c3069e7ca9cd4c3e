//! Lexical matching: BM25 over item texts, held by tantivy, with the terms
//! of [`tokens`] and the typo tolerance of [`scorer`]. Sentence encoders
//! blur brand names, model numbers and sizes that shoppers type; a lexical
//! match keeps them exact. Search retrieves from this index beside the
//! vector index and fuses both scores (`model::relevance`); `eval-search`
//! measures each. Documents are addressed by a caller's string key (the
//! catalog's item id, or a position in a list) and replaced by key; a hit
//! comes back as the document's `u64` handle, also the caller's (a hash of
//! the id, or the position): reading a string key back per hit cost more
//! than the search itself (4.3 ms for 400 hits against 0.3 ms at 100k items,
//! in a throw-away timing test).
//!
//! The index lives in memory or in a directory (memory-mapped, [`persist`]):
//! a catalog of a million items would otherwise rebuild it at every
//! start-up (about 30 s on 2 cores) and hold it all in anonymous memory.

mod persist;
pub(crate) mod scorer;
pub(crate) mod tokens;

use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::indexer::LogMergePolicy;
use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, STRING};
use tantivy::tokenizer::{PreTokenizedString, Token};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};
use xxhash_rust::xxh3::xxh3_64;

pub use self::persist::Reconciled;
pub(crate) use self::scorer::LexicalMatch;
pub use self::scorer::LexicalQuery;
#[cfg(feature = "offline")]
pub(crate) use self::scorer::TextsStats;
pub(crate) use self::scorer::{score, score_among, CorpusStats};

/// The string field holding each document's key: indexed whole, to replace
/// by key; a fast column, read in order when the index is reconciled.
const KEY: &str = "key";
/// A u64 fast field: the caller's handle for the document, what a hit returns.
const HANDLE: &str = "handle";
/// A u64 fast field: the hash of the text a document was indexed from, so
/// that a reopened index finds the items whose text changed while it was
/// closed.
const FINGERPRINT: &str = "fingerprint";
/// Memory the writer may buffer before it writes a segment (tantivy's
/// minimum for its one thread).
const WRITER_BUDGET: usize = 15 << 20;
/// The share of a segment's documents deleted or replaced at which it is merged.
const DELETED_SHARE_BEFORE_MERGE: f32 = 0.3;

#[derive(Debug, thiserror::Error)]
pub enum LexicalError {
    #[error("lexical index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("lexical index in {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
}

/// The index's fields.
#[derive(Clone, Copy)]
struct Fields {
    text: Field,
    key: Field,
    handle: Field,
    fingerprint: Field,
}

fn schema() -> (Schema, Fields) {
    let mut schema = Schema::builder();
    let indexing = TextFieldIndexing::default().set_index_option(IndexRecordOption::WithFreqs);
    let text = schema.add_text_field("text", TextOptions::default().set_indexing_options(indexing));
    let key = schema.add_text_field(KEY, STRING | FAST);
    let handle = schema.add_u64_field(HANDLE, FAST);
    let fingerprint = schema.add_u64_field(FINGERPRINT, FAST);
    (schema.build(), Fields { text, key, handle, fingerprint })
}

/// The hash a document is remembered by: its handle and text.
fn fingerprint(handle: u64, text: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&handle.to_le_bytes());
    hasher.update(text.as_bytes());
    hasher.digest()
}

/// The handle the catalog gives an item's document: a hash of its id.
pub(crate) fn id_handle(id: &str) -> u64 {
    xxh3_64(id.as_bytes())
}

/// BM25 over texts that can be added, replaced and removed by key.
pub struct LexicalIndex {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    /// Kept in a directory (see [`persist`]) rather than in memory.
    on_disk: bool,
}

impl LexicalIndex {
    /// An empty index in memory.
    pub fn in_memory() -> Result<Self, LexicalError> {
        let (schema, fields) = schema();
        Self::over(Index::create_in_ram(schema), fields, false)
    }

    fn over(index: Index, fields: Fields, on_disk: bool) -> Result<Self, LexicalError> {
        let writer: IndexWriter = index.writer_with_num_threads(1, WRITER_BUDGET)?;
        // Replaced and deleted documents stay in their segment, and in its
        // statistics (document frequencies, mean length), until a merge; a
        // kept index would collect them across restarts. tantivy's default
        // tolerates any share; a segment a third deleted is merged.
        let mut merges = LogMergePolicy::default();
        merges.set_del_docs_ratio_before_merge(DELETED_SHARE_BEFORE_MERGE);
        writer.set_merge_policy(Box::new(merges));
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { reader, writer: Mutex::new(writer), fields, on_disk })
    }

    /// Whether the index is kept in a directory.
    pub fn on_disk(&self) -> bool {
        self.on_disk
    }

    /// An in-memory index of `texts`, their positions for keys and handles.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Self, LexicalError> {
        let index = Self::in_memory()?;
        let keyed: Vec<(String, u64, &str)> =
            texts.into_iter().enumerate().map(|(p, t)| (p.to_string(), p as u64, t)).collect();
        index.apply(keyed.iter().map(|(key, handle, text)| (key.as_str(), Some((*handle, *text)))))?;
        Ok(index)
    }

    /// Puts (`Some((handle, text))`) or removes (`None`) each key's
    /// document, in order, and makes the changes visible to searches that
    /// start afterwards (on disk: durable too).
    pub fn apply<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a str, Option<(u64, &'a str)>)>,
    ) -> Result<(), LexicalError> {
        self.write(|writer| {
            for (key, document) in changes {
                writer.delete_term(Term::from_field_text(self.fields.key, key));
                if let Some((handle, text)) = document {
                    writer.add_document(self.document(key, handle, text))?;
                }
            }
            persist::commit(writer)
        })
    }

    /// Runs `changes` on the writer (they commit what they want to keep)
    /// and makes what they committed visible to searches. On an error it
    /// rolls back whatever they queued, so nothing half-done rides along
    /// with the next commit.
    fn write<T>(&self, changes: impl FnOnce(&mut IndexWriter) -> Result<T, LexicalError>) -> Result<T, LexicalError> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match changes(&mut writer) {
            Ok(done) => {
                drop(writer);
                self.reader.reload()?;
                Ok(done)
            }
            Err(error) => {
                let _ = writer.rollback();
                Err(error)
            }
        }
    }

    fn document(&self, key: &str, handle: u64, text: &str) -> TantivyDocument {
        let mut document = TantivyDocument::default();
        document.add_text(self.fields.key, key);
        document.add_u64(self.fields.handle, handle);
        document.add_u64(self.fields.fingerprint, fingerprint(handle, text));
        document.add_pre_tokenized_text(self.fields.text, pre_tokenized(text));
        document
    }

    /// This moment's statistics, for [`score`] and [`LexicalQuery::new`].
    pub fn stats(&self) -> IndexStats {
        IndexStats::new(self.reader.searcher(), self.fields.text)
    }

    /// `query` with each misspelt word replaced by the closest term the
    /// index holds (fewest edits, then most documents), or `None` if no
    /// word changed. A word is misspelt when it is one term the index lacks
    /// and [`scorer::allowed_typos`] allows it typos. The encoder, which
    /// reads word pieces, sees "leather handbag" for "lether handbga"; the
    /// lexical side matches typos on its own (see [`scorer`]).
    pub fn correct(&self, query: &str) -> Option<String> {
        let searcher = self.reader.searcher();
        let stats = IndexStats::new(searcher.clone(), self.fields.text);
        let mut changed = false;
        let words: Vec<String> = query
            .split_whitespace()
            .map(|word| {
                let terms = tokens::query_words(word).concat();
                let [term] = terms.as_slice() else { return word.to_string() };
                let typos = scorer::allowed_typos(&term.text, term.typed_chars);
                if typos == 0 || stats.doc_freq(&term.text) > 0 {
                    return word.to_string();
                }
                // The closest to what was typed: a misspelt plural's stem
                // (`canv` for `canvs`) is closer to other stems (`canva`)
                // than to the word.
                let typed = tokens::terms(word).into_iter().next().unwrap_or_else(|| term.text.clone());
                match self.closest_term(&searcher, &typed, typos) {
                    Some(closest) => {
                        changed = true;
                        closest
                    }
                    None => word.to_string(),
                }
            })
            .collect();
        changed.then(|| words.join(" "))
    }

    /// The term within `typos` edits of `term` with the fewest edits, then
    /// the most documents, then the longest (then the first in byte order).
    fn closest_term(&self, searcher: &Searcher, term: &str, typos: usize) -> Option<String> {
        let fuzzy = FuzzyTermQuery::new(Term::from_field_text(self.fields.text, term), typos as u8, true);
        let automaton = fuzzy.automaton().ok()?;
        let mut found: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for segment in searcher.segment_readers() {
            let Ok(inverted) = segment.inverted_index(self.fields.text) else { continue };
            let Ok(mut stream) = inverted.terms().search(&automaton).into_stream() else { continue };
            while stream.advance() {
                if let Ok(key) = std::str::from_utf8(stream.key()) {
                    *found.entry(key.to_string()).or_insert(0) += u64::from(stream.value().doc_freq);
                }
            }
        }
        found
            .into_iter()
            .min_by_key(|(key, docs)| {
                // On a tie, the longer term: a word rather than its stem
                // (`canvas`, not `canva`; both are in the same documents).
                (strsim::damerau_levenshtein(term, key), std::cmp::Reverse(*docs), std::cmp::Reverse(key.len()))
            })
            .map(|(key, _)| key)
    }

    /// The `k` documents with the highest BM25 for `query`'s retrieval terms
    /// (all of a short query, the rarest of a long one: see
    /// [`LexicalQuery::retrieval_terms`]), best first, as (handle, score).
    /// Terms the index lacks match within their typos (a constant score at
    /// the typo weight: `score` re-scores exactly). Documents sharing no
    /// such term with the query are never returned.
    pub fn search(&self, query: &LexicalQuery, k: usize) -> Result<Vec<(u64, f32)>, LexicalError> {
        if query.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = query
            .retrieval_terms()
            .into_iter()
            .map(|(text, typos)| {
                let term = Term::from_field_text(self.fields.text, text);
                let clause: Box<dyn Query> = if typos == 0 {
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
                } else {
                    let fuzzy = FuzzyTermQuery::new(term, typos as u8, true);
                    Box::new(BoostQuery::new(Box::new(fuzzy), scorer::TYPO_WEIGHT))
                };
                (Occur::Should, clause)
            })
            .collect();
        let searcher = self.reader.searcher();
        let hits = searcher.search(&BooleanQuery::new(clauses), &TopDocs::with_limit(k).order_by_score())?;
        hits.into_iter()
            .map(|(score, address)| {
                let handles = searcher.segment_reader(address.segment_ord).fast_fields().u64(HANDLE)?;
                let handle = handles.first(address.doc_id).ok_or_else(|| {
                    tantivy::TantivyError::InternalError(format!("document {address:?} has no handle"))
                })?;
                Ok((handle, score))
            })
            .collect()
    }
}

/// The text as [`tokens::terms`] cuts it. The text itself is not kept.
fn pre_tokenized(text: &str) -> PreTokenizedString {
    let tokens = tokens::terms(text)
        .into_iter()
        .enumerate()
        .map(|(position, text)| Token { position, text, ..Token::default() })
        .collect();
    PreTokenizedString { text: String::new(), tokens }
}

/// One moment's view of the index, with its BM25 statistics. The corpus
/// totals are summed over the segments once, when the view is taken: a
/// request scores a few hundred texts against them.
pub struct IndexStats {
    searcher: Searcher,
    text: Field,
    docs: u64,
    mean_terms: f32,
}

impl IndexStats {
    fn new(searcher: Searcher, text: Field) -> Self {
        let tokens: u64 = searcher
            .segment_readers()
            .iter()
            .filter_map(|segment| segment.inverted_index(text).ok())
            .map(|inverted| inverted.total_num_tokens())
            .sum();
        let slots: u64 = searcher.segment_readers().iter().map(|s| u64::from(s.max_doc())).sum();
        let docs = searcher.num_docs();
        Self { searcher, text, docs, mean_terms: tokens as f32 / slots.max(1) as f32 }
    }
}

impl CorpusStats for IndexStats {
    fn docs(&self) -> u64 {
        self.docs
    }
    fn mean_terms(&self) -> f32 {
        self.mean_terms
    }
    fn doc_freq(&self, term: &str) -> u64 {
        self.searcher.doc_freq(&Term::from_field_text(self.text, term)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(hits: &[(u64, f32)]) -> Vec<u64> {
        hits.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn ranks_by_bm25_and_returns_keys() {
        let index =
            LexicalIndex::build(["red leather handbag", "blue denim jeans", "red wine glass set", "handbag"]).unwrap();
        let stats = index.stats();
        let hits = index.search(&LexicalQuery::new("Red HANDBAG!", &stats), 10).unwrap();
        // Both terms beat one; the short "handbag" beats the long "red wine glass set".
        assert_eq!(keys(&hits), [0, 3, 2], "{hits:?}");
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "{hits:?}");
        assert!(index.search(&LexicalQuery::new("", &stats), 10).unwrap().is_empty());
        assert!(index.search(&LexicalQuery::new("sofa", &stats), 10).unwrap().is_empty());
        assert_eq!(index.search(&LexicalQuery::new("red", &stats), 1).unwrap().len(), 1);
    }

    /// tantivy's score is textbook BM25, and so is `score` with the index's
    /// statistics (up to tantivy's one-byte length norms).
    #[test]
    fn the_index_and_the_scorer_agree_on_textbook_bm25() {
        let texts = ["mug mug red", "red lamp", "blue lamp shade"];
        let index = LexicalIndex::build(texts).unwrap();
        let stats = index.stats();
        let (n, avg) = (3.0f32, 8.0f32 / 3.0);
        let bm25 = |tf: f32, len: f32, df: f32| {
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len / avg))
        };
        let query = LexicalQuery::new("mug", &stats);
        let hits = index.search(&query, 3).unwrap();
        assert_eq!(hits[0].0, 0);
        let expected = bm25(2.0, 3.0, 1.0);
        assert!((hits[0].1 - expected).abs() < 1e-3 * expected, "{hits:?} vs {expected}");
        assert!((score(&query, texts[0], &stats).bm25 - expected).abs() < 1e-4 * expected);
    }

    #[test]
    fn documents_are_replaced_and_removed_by_key() {
        let index = LexicalIndex::build(["red mug", "blue lamp"]).unwrap();
        index.apply([("0", Some((0, "green kettle"))), ("7", Some((7, "red kettle"))), ("1", None)]).unwrap();
        let stats = index.stats();
        assert_eq!(stats.docs(), 2);
        assert_eq!(keys(&index.search(&LexicalQuery::new("red", &stats), 10).unwrap()), [7]);
        assert_eq!(keys(&index.search(&LexicalQuery::new("kettle", &stats), 10).unwrap()).len(), 2);
        assert!(index.search(&LexicalQuery::new("lamp", &stats), 10).unwrap().is_empty());
    }

    #[test]
    fn misspelt_words_are_corrected_to_the_closest_most_common_term() {
        let index =
            LexicalIndex::build(["leather handbag", "leather belt", "feather duster", "canvas bag 30-in"]).unwrap();
        assert_eq!(index.correct("Lether handbga").as_deref(), Some("leather handbag"));
        // "eather" is one edit from leather (2 documents) and feather (1).
        assert_eq!(index.correct("eather").as_deref(), Some("leather"));
        assert_eq!(index.correct("leather 30-in bag"), None, "known words stay");
        assert_eq!(index.correct("zzzzzzz bga"), None, "nothing close, or too short to correct");
        // The index holds "canvas" and its stem "canva": a misspelt plural
        // is corrected to the word, and a known plural is left alone.
        let plurals = LexicalIndex::build(["canvas prints", "canvas bags"]).unwrap();
        assert_eq!(plurals.correct("canvs bag").as_deref(), Some("canvas bag"));
        assert_eq!(plurals.correct("canvas print"), None);
    }

    #[test]
    fn sizes_and_plurals_retrieve_however_the_titles_spell_them() {
        let index = LexicalIndex::build([
            "Area Rug 8 ft. x 10 ft. Blue",
            "Area Rug 5 ft. x 8 ft. Blue",
            "SanDisk 16GB memory card",
            "Kingston 32 GB memory card",
            "Mason Jar, 16-ounce",
        ])
        .unwrap();
        let stats = index.stats();
        let first = |query: &str| keys(&index.search(&LexicalQuery::new(query, &stats), 10).unwrap())[0];
        assert_eq!(first("5x8 rugs"), 1);
        assert_eq!(first("8x10 rug"), 0);
        assert_eq!(first("16 gb memory cards"), 2);
        assert_eq!(first("32gb memory card"), 3);
        assert_eq!(first("mason jars 16 oz"), 4);
    }

    #[test]
    fn misspelt_words_retrieve_within_their_typos_and_cjk_matches_by_bigrams() {
        let index = LexicalIndex::build(["leather handbag", "canvas backpack", "不锈钢保温杯 500ml"]).unwrap();
        let stats = index.stats();
        assert_eq!(keys(&index.search(&LexicalQuery::new("lether handbga", &stats), 10).unwrap()), [0]);
        assert_eq!(keys(&index.search(&LexicalQuery::new("保温杯", &stats), 10).unwrap()), [2]);
        assert_eq!(keys(&index.search(&LexicalQuery::new("500ML", &stats), 10).unwrap()), [2]);
        // A measure spelt apart beside Chinese words still meets its title.
        let found = index.search(&LexicalQuery::new("保温杯 500 ml", &stats), 10).unwrap();
        assert_eq!(keys(&found), [2]);
        assert_eq!(score(&LexicalQuery::new("保温杯 500 ml", &stats), "不锈钢保温杯 500ml", &stats).exact, 1.0);
    }
}
