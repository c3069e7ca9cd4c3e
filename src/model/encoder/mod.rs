//! The text encoder: tokenize, BERT forward pass with the attention mask, mean
//! pooling over real tokens, L2 normalisation — the recipe sentence-transformers
//! applies to all-MiniLM-L6-v2 and moka-ai/m3e-small, so vectors match it to
//! 1e-5. Any BERT does: sizes (hidden, heads, layers, intermediate, vocabulary,
//! positions, activation) come from the model's `config.json`, tokenization
//! (normaliser, casing, CJK splitting, word pieces) from its `tokenizer.json`.
//!
//! The encoder is synchronous and CPU-bound; the serving layer runs it on a
//! thread of its own behind an async handle.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{Tokenizer, TruncationParams};

mod arithmetic;
mod bert_fast;
pub(crate) mod int8;
pub(crate) mod kernels;

use serde::{Deserialize, Serialize};

pub(crate) use self::arithmetic::Arithmetic;
use self::bert_fast::FastBert;
use self::kernels::vectorised;
use crate::config::{EncoderSettings, LinearLayer};
use crate::model::files::{EncoderFiles, ModelFilesError, WeightsFormat};

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error(transparent)]
    Files(#[from] ModelFilesError),
    #[error("cannot read encoder config {path}: {source}")]
    Config { path: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("cannot load tokenizer {path}: {source}")]
    Tokenizer { path: String, source: tokenizers::Error },
    #[error("tokenization failed: {0}")]
    Tokenize(tokenizers::Error),
    #[error("model error: {0}")]
    Candle(#[from] candle_core::Error),
    /// `SHOPRANK_INT8_KERNEL` names no kernel, or one this CPU lacks.
    #[error("{0}")]
    Int8Kernel(String),
}

/// A text turned into token ids, truncated to the encoder's window and
/// wrapped in `[CLS] … [SEP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    pub ids: Vec<u32>,
}

impl TokenizedText {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Which implementation of the transformer runs the forward pass.
enum Backbone {
    /// candle-transformers' `BertModel`: the reference, padded batches.
    Reference(BertModel),
    /// shoprank's own forward pass: no work on padding, optional int8 weights.
    Fast(FastBert),
}

/// The encoder a head was trained with: its embeddings are the head's input,
/// so a head only serves beside the same encoder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncoderIdentity {
    pub name: String,
    pub dim: usize,
}

/// A loaded BERT sentence encoder.
pub struct Encoder {
    backbone: Backbone,
    tokenizer: Tokenizer,
    device: Device,
    max_seq_len: usize,
    dim: usize,
    name: String,
    /// The linear layers that run in int8 (in `LinearLayer::ALL`'s order);
    /// none: the encoder is f32, vectors and key alike.
    int8_layers: Vec<LinearLayer>,
}

impl Encoder {
    /// Finds the encoder `settings.source` names (a directory or a hub repo
    /// id) and loads it: the one way the server and the commands load it.
    pub(crate) fn open(settings: &EncoderSettings) -> Result<Self, EncoderError> {
        let files = EncoderFiles::resolve(&settings.source, &settings.revision)?;
        let started = std::time::Instant::now();
        let encoder = Self::load(&files, settings)?;
        tracing::info!(
            encoder = encoder.name(),
            dim = encoder.dim(),
            precision = encoder.precision().as_str(),
            // Names a partial int8 mix (`encoder.int8_layers`) too.
            embeddings = encoder.embedding_key(),
            secs = started.elapsed().as_secs_f64(),
            "encoder loaded"
        );
        if Arithmetic::resolve(settings.precision) == Arithmetic::Int8 && encoder.precision() == Arithmetic::F32 {
            tracing::warn!("encoder.precision is int8 but encoder.int8_layers is empty: every layer runs in f32");
        }
        Ok(encoder)
    }

    /// Loads the encoder from its files. `settings.precision`, resolved on
    /// this CPU (`auto`: see [`Arithmetic::auto`]), picks exact f32 or int8
    /// weights; `reference = true` forces candle-transformers'
    /// `BertModel` (exact f32), used to check the fast path against it.
    pub fn load(files: &EncoderFiles, settings: &EncoderSettings) -> Result<Self, EncoderError> {
        Self::load_with(files, settings, false)
    }

    pub fn load_reference(files: &EncoderFiles, settings: &EncoderSettings) -> Result<Self, EncoderError> {
        Self::load_with(files, settings, true)
    }

    fn load_with(files: &EncoderFiles, settings: &EncoderSettings, reference: bool) -> Result<Self, EncoderError> {
        int8::Kernel::check_forced().map_err(EncoderError::Int8Kernel)?;
        let device = Device::Cpu;
        let config_path = files.config.display().to_string();
        let config_text = std::fs::read_to_string(&files.config)
            .map_err(|e| EncoderError::Config { path: config_path.clone(), source: Box::new(e) })?;
        let config: BertConfig = serde_json::from_str(&config_text)
            .map_err(|e| EncoderError::Config { path: config_path, source: Box::new(e) })?;

        let mut tokenizer = Tokenizer::from_file(&files.tokenizer)
            .map_err(|source| EncoderError::Tokenizer { path: files.tokenizer.display().to_string(), source })?;
        // The shipped tokenizer.json pads every text to 128 and truncates at
        // 128; sentence-transformers uses a 256-token window and pads per
        // batch. Padding is done here, per batch, so switch the file's off.
        let max_seq_len = settings.max_seq_len.min(config.max_position_embeddings);
        let lowercased = settings.lowercase && lowercase_first(&mut tokenizer)?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_seq_len, ..Default::default() }))
            .map_err(EncoderError::Tokenize)?;

        let vb = match files.format {
            // SAFETY: the weights file is memory-mapped read-only; shoprank
            // never writes it, and the fetch script replaces it only atomically.
            WeightsFormat::Safetensors => unsafe {
                VarBuilder::from_mmaped_safetensors(&[&files.weights], DType::F32, &device)?
            },
            // Read into memory through Candle's pickle reader (no code runs).
            WeightsFormat::PyTorch => VarBuilder::from_pth(&files.weights, DType::F32, &device)?,
        };
        let int8_layers = if reference { Vec::new() } else { arithmetic::int8_layers(settings) };
        let backbone = if reference {
            Backbone::Reference(BertModel::load(vb, &config)?)
        } else {
            Backbone::Fast(FastBert::load(vb, &config, &int8_layers)?)
        };
        Ok(Self {
            backbone,
            tokenizer,
            device,
            max_seq_len,
            dim: config.hidden_size,
            // Lower-cased text gives other vectors: the name says so, so a
            // head or a cached vector made without it is never taken for one
            // made with it (and start-up refuses such a bundle).
            name: if lowercased { format!("{}+lowercase", files.name) } else { files.name.clone() },
            int8_layers,
        })
    }

    /// Embedding width (384 for all-MiniLM-L6-v2, 512 for m3e-small).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// What a head trained on this encoder's embeddings records.
    pub fn identity(&self) -> EncoderIdentity {
        EncoderIdentity { name: self.name.clone(), dim: self.dim }
    }

    /// Names this encoder's embeddings exactly (model, precision, window),
    /// so vectors stored by one encoder are never taken for another's.
    pub fn embedding_key(&self) -> String {
        // "int8pc": the per-channel int8 kernels, whose vectors differ from
        // those the earlier int8 (candle Q8_0) stored under "int8".
        let precision = match self.precision() {
            Arithmetic::F32 => "f32".to_string(),
            Arithmetic::Int8 if self.int8_layers.len() == LinearLayer::ALL.len() => "int8pc".to_string(),
            // Some layers kept in f32: other vectors, another key.
            Arithmetic::Int8 => {
                let layers: Vec<&str> = self.int8_layers.iter().map(|l| l.as_str()).collect();
                format!("int8pc[{}]", layers.join("+"))
            }
        };
        format!("{}-{precision}-{}", self.name(), self.max_seq_len())
    }

    /// The encoder's name, e.g. `all-MiniLM-L6-v2`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The precision this encoder runs in, `auto` resolved: int8 if any
    /// of its linear layers does. The head serves in the same, and
    /// `/ready`, the metrics and the logs report it.
    pub fn precision(&self) -> Arithmetic {
        if self.int8_layers.is_empty() {
            Arithmetic::F32
        } else {
            Arithmetic::Int8
        }
    }

    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenizes one text, truncating it to the window (cut first to what
    /// the window can use: see [`cut_to_window`]).
    pub fn tokenize(&self, text: &str) -> Result<TokenizedText, EncoderError> {
        let (text, _) = cut_to_window(text, self.max_seq_len);
        let encoding = self.tokenizer.encode(text, true).map_err(EncoderError::Tokenize)?;
        Ok(TokenizedText { ids: encoding.get_ids().to_vec() })
    }

    /// Embeds texts in one forward pass (padded to the longest in the case
    /// of the reference backbone). Returns one unit-length vector per text.
    pub fn embed_tokenized(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EncoderError> {
        Ok(self.embed_tokenized_until(batch, &|| false)?.expect("never stopped"))
    }

    /// As [`Encoder::embed_tokenized`], asking `stop` between layers; `None`
    /// if it said yes. The server's encoder thread stops a batch whose
    /// requests have all been abandoned this way.
    pub(crate) fn embed_tokenized_until(
        &self,
        batch: &[&TokenizedText],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Vec<Vec<f32>>>, EncoderError> {
        if batch.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let pooled = match &self.backbone {
            Backbone::Reference(model) => self.reference_forward(model, batch)?,
            Backbone::Fast(model) => {
                let ids: Vec<&[u32]> = batch.iter().map(|t| t.ids.as_slice()).collect();
                match model.forward_pooled(&ids, &self.device, stop)? {
                    Some(pooled) => pooled,
                    None => return Ok(None),
                }
            }
        };
        let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let normalized = pooled.broadcast_div(&norms)?;
        Ok(Some(normalized.to_vec2::<f32>()?))
    }

    fn reference_forward(&self, model: &BertModel, batch: &[&TokenizedText]) -> Result<Tensor, EncoderError> {
        let longest = batch.iter().map(|t| t.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch.len() * longest);
        let mut mask = Vec::with_capacity(batch.len() * longest);
        for text in batch {
            ids.extend_from_slice(&text.ids);
            ids.extend(std::iter::repeat_n(0u32, longest - text.len()));
            mask.extend(std::iter::repeat_n(1u32, text.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - text.len()));
        }
        let shape = (batch.len(), longest);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let token_types = ids.zeros_like()?;
        let hidden = model.forward(&ids, &token_types, Some(&mask))?;
        // Mean over real tokens only: padded positions carry garbage.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        Ok(summed.broadcast_div(&counts)?)
    }

    /// Embeds texts of any number, sorting them by length into batches of at
    /// most `max_batch` so that little padding is computed. Output order is
    /// the input order.
    pub fn embed(&self, texts: &[&str], max_batch: usize) -> Result<Vec<Vec<f32>>, EncoderError> {
        let tokenized = texts.iter().map(|t| self.tokenize(t)).collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| tokenized[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(max_batch.max(1)) {
            let batch: Vec<&TokenizedText> = chunk.iter().map(|&i| &tokenized[i]).collect();
            for (&i, vector) in chunk.iter().zip(self.embed_tokenized(&batch)?) {
                out[i] = vector;
            }
        }
        Ok(out)
    }
}

/// Makes `tokenizer` lower-case text before its own normalisation, unless it
/// already does (a BERT normaliser with `lowercase`, as all-MiniLM-L6-v2's
/// has); true if it changed anything. m3e-small's tokenizer keeps case, but
/// its vocabulary has lower-case English only, so "iPhone" or a title in
/// capitals becomes `[UNK]`s: `encoder.lowercase` trades exactness to the
/// reference for English words it can read.
fn lowercase_first(tokenizer: &mut Tokenizer) -> Result<bool, EncoderError> {
    use tokenizers::normalizers::{Lowercase, Sequence};
    use tokenizers::NormalizerWrapper;
    fn lowercases(normalizer: &NormalizerWrapper) -> bool {
        match normalizer {
            NormalizerWrapper::BertNormalizer(bert) => bert.lowercase,
            NormalizerWrapper::Lowercase(_) => true,
            NormalizerWrapper::Sequence(steps) => steps.as_ref().iter().any(lowercases),
            _ => false,
        }
    }
    let steps = match tokenizer.get_normalizer() {
        Some(existing) if lowercases(existing) => return Ok(false),
        Some(existing) => vec![NormalizerWrapper::Lowercase(Lowercase), existing.clone()],
        None => vec![NormalizerWrapper::Lowercase(Lowercase)],
    };
    tokenizer.with_normalizer(Some(Sequence::new(steps))).map_err(EncoderError::Tokenize)?;
    Ok(true)
}

/// Dot product of two unit vectors = their cosine (see [`dot`]). Feature
/// building calls it up to 51 times per (user, candidate) pair, which made
/// it the cost of ranking a large catalog.
#[inline]
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    dot(a, b)
}

vectorised! {
    /// Dot product over the shorter of the two slices.
    ///
    /// Sixteen partial sums, added in a fixed order: the compiler vectorises it
    /// for the CPU found at run time, and every CPU gets the same bits (no fused
    /// multiply-add, the same summation order), so training, evaluation and
    /// serving agree exactly.
    pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
        const LANES: usize = 16;
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut lanes = [0f32; LANES];
        let (mut xs, mut ys) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        for (x, y) in (&mut xs).zip(&mut ys) {
            for k in 0..LANES {
                lanes[k] += x[k] * y[k];
            }
        }
        let tail: f32 = xs.remainder().iter().zip(ys.remainder()).map(|(x, y)| x * y).sum();
        lanes.iter().sum::<f32>() + tail
    }
}

/// Characters of a text the tokenizer is given per token of the window. A
/// WordPiece token spans a few characters (a long word is split into
/// pieces), so the window's tokens come from far fewer characters than this
/// allows; the cut only bounds the work and memory a huge text costs (the
/// tokenizer normalises and splits the whole of what it is given, though
/// the window keeps 256 tokens).
pub(crate) const CHARS_PER_WINDOW_TOKEN: usize = 32;

/// `text` cut to what a window of `tokens` tokens can use, at most
/// [`CHARS_PER_WINDOW_TOKEN`] characters a token (before the last white
/// space within that bound, so no word is split, where there is one), and
/// whether it was cut.
pub(crate) fn cut_to_window(text: &str, tokens: usize) -> (&str, bool) {
    let max_chars = tokens.saturating_mul(CHARS_PER_WINDOW_TOKEN);
    let Some((end, _)) = text.char_indices().nth(max_chars) else { return (text, false) };
    let cut = &text[..end];
    let at_word = cut.rfind(char::is_whitespace).filter(|&w| w > 0).map_or(cut, |w| &cut[..w]);
    (at_word, true)
}

#[cfg(test)]
mod tests {
    use super::{cosine, cut_to_window, CHARS_PER_WINDOW_TOKEN};

    #[test]
    fn cosine_is_the_dot_product_for_any_length() {
        for n in [0, 1, 15, 16, 17, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 3 % 13) as f32 - 6.0) / 10.0).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((cosine(&a, &b) as f64 - exact).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn a_text_is_cut_to_what_the_window_can_use_at_a_word() {
        assert_eq!(cut_to_window("red mug", 2), ("red mug", false));
        let long = "word ".repeat(100);
        let (cut, was_cut) = cut_to_window(&long, 2);
        assert!(was_cut && cut.chars().count() <= 2 * CHARS_PER_WINDOW_TOKEN, "{cut:?}");
        assert!(cut.ends_with("word"), "cut before the white space: {cut:?}");
        let unbroken = "é".repeat(1000);
        let (cut, _) = cut_to_window(&unbroken, 1);
        assert_eq!(cut.chars().count(), CHARS_PER_WINDOW_TOKEN, "no white space: cut at a character");
    }
}
