//! The narrow view of an encoder that the offline pipeline needs: its
//! identity, the user text it would compose, and embeddings of many texts.
//! Production runs the BERT [`Encoder`]; unit tests of training run a cheap
//! deterministic embedder, so the whole pipeline is testable without weights.

use crate::config::UserTextBudget;
use crate::model::encoder::{Encoder, EncoderError, EncoderIdentity};
use crate::model::user_text::{self, UserSignals};

pub trait TextEmbedder {
    /// What a head trained on these embeddings records.
    fn identity(&self) -> EncoderIdentity;
    /// Names the embeddings' exact settings, so cached vectors of different
    /// encoders (or precisions, or windows) never mix.
    fn cache_key(&self) -> String;
    /// The user text of these signals, within the encoder's window.
    fn user_text(&self, budget: UserTextBudget, signals: UserSignals<'_>) -> Result<String, EncoderError>;
    /// One unit-length vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncoderError>;
}

/// Texts per forward pass in offline jobs (length-sorted, so little padding).
const OFFLINE_BATCH: usize = 32;

impl TextEmbedder for Encoder {
    fn identity(&self) -> EncoderIdentity {
        Encoder::identity(self)
    }

    fn cache_key(&self) -> String {
        self.embedding_key()
    }

    fn user_text(&self, budget: UserTextBudget, signals: UserSignals<'_>) -> Result<String, EncoderError> {
        user_text::compose(self.tokenizer(), budget, self.max_seq_len(), signals)
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncoderError> {
        Encoder::embed(self, texts, OFFLINE_BATCH)
    }
}
