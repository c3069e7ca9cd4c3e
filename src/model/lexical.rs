//! A lexical index over item texts: BM25 (k1 = 1.2, b = 0.75, as Lucene and
//! tantivy score it) over lower-cased alphanumeric tokens, held in memory by
//! tantivy. Sentence encoders blur brand names, model numbers and sizes
//! that shoppers type; a lexical match keeps them exact. In the model layer
//! because retrieval and the head's lexical features will share it with
//! evaluation (hybrid search); today `eval-search --judged` uses it. Items
//! are addressed by their position in the list the index was built from.

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, FAST, TEXT};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, Term};

/// The u64 fast field holding each document's position.
const POSITION: &str = "position";
/// Memory the writer may buffer before it writes a segment (tantivy's
/// minimum per thread is 15 MB).
const WRITER_BUDGET: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
#[error("lexical index: {0}")]
pub(crate) struct LexicalError(#[from] tantivy::TantivyError);

/// BM25 over a fixed list of texts.
pub(crate) struct LexicalIndex {
    index: Index,
    reader: IndexReader,
    text: Field,
}

impl LexicalIndex {
    /// Indexes `texts`; a hit's position is its text's index in `texts`.
    pub(crate) fn build<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Self, LexicalError> {
        let mut schema = Schema::builder();
        let text = schema.add_text_field("text", TEXT);
        let position = schema.add_u64_field(POSITION, FAST);
        let index = Index::create_in_ram(schema.build());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, WRITER_BUDGET)?;
        for (p, t) in texts.into_iter().enumerate() {
            writer.add_document(doc!(text => t, position => p as u64))?;
        }
        writer.commit()?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { index, reader, text })
    }

    /// The query's distinct terms, as the index tokenized the texts.
    fn terms(&self, query: &str) -> Result<Vec<Term>, LexicalError> {
        let mut analyzer = self.index.tokenizer_for_field(self.text)?;
        let mut stream = analyzer.token_stream(query);
        let mut terms = Vec::new();
        while stream.advance() {
            terms.push(Term::from_field_text(self.text, &stream.token().text));
        }
        terms.sort();
        terms.dedup();
        Ok(terms)
    }

    /// The `k` texts with the highest BM25 score for `query` (the sum over
    /// its distinct terms), best first, as (position, score); texts sharing
    /// no term with it are never returned.
    pub(crate) fn search(&self, query: &str, k: usize) -> Result<Vec<(usize, f32)>, LexicalError> {
        let terms = self.terms(query)?;
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .into_iter()
            .map(|term| (Occur::Should, Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)) as Box<dyn Query>))
            .collect();
        let searcher = self.reader.searcher();
        let hits = searcher.search(&BooleanQuery::new(clauses), &TopDocs::with_limit(k).order_by_score())?;
        hits.into_iter()
            .map(|(score, address)| {
                let column = searcher.segment_reader(address.segment_ord).fast_fields().u64(POSITION)?;
                let position = column.first(address.doc_id).expect("every document has a position");
                Ok((position as usize, score))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_bm25_and_returns_positions() {
        let index =
            LexicalIndex::build(["red leather handbag", "blue denim jeans", "red wine glass set", "handbag"]).unwrap();
        let hits = index.search("Red HANDBAG!", 10).unwrap();
        let positions: Vec<usize> = hits.iter().map(|(p, _)| *p).collect();
        // Both terms beat one; the short "handbag" beats the long "red wine glass set".
        assert_eq!(positions[0], 0, "{hits:?}");
        assert_eq!(positions.len(), 3, "jeans share no term: {hits:?}");
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "{hits:?}");
        assert!(index.search("", 10).unwrap().is_empty());
        assert!(index.search("sofa", 10).unwrap().is_empty());
        assert_eq!(index.search("red", 1).unwrap().len(), 1);
    }

    /// The score is textbook BM25: idf · tf·(k1+1) / (tf + k1·(1 − b + b·len/avglen)),
    /// idf = ln(1 + (N − n + 0.5)/(n + 0.5)), k1 = 1.2, b = 0.75.
    #[test]
    fn the_score_is_textbook_bm25() {
        let texts = ["mug mug red", "red lamp", "blue lamp shade"];
        let index = LexicalIndex::build(texts).unwrap();
        let (n, avg) = (3.0f32, 8.0f32 / 3.0);
        let bm25 = |tf: f32, len: f32, df: f32| {
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len / avg))
        };
        let hits = index.search("mug", 3).unwrap();
        assert_eq!(hits[0].0, 0);
        assert!((hits[0].1 - bm25(2.0, 3.0, 1.0)).abs() < 1e-3 * hits[0].1, "{hits:?} vs {}", bm25(2.0, 3.0, 1.0));
    }
}
