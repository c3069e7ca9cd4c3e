//! The model layer: everything a trained bundle is made of and the one way it
//! scores. Serving and the offline pipeline both build on it; it imports
//! neither of them.
//!
//! - [`files`]: where the encoder's files come from (local dir or hf-hub).
//! - [`encoder`]: tokenize → forward (shoprank's fused CPU kernels) →
//!   mean-pool → L2-normalise.
//! - [`user_text`]: user signals → one budgeted user text.
//! - [`stats`]: the history statistics a bundle ships (popularity, prices,
//!   co-purchase and EASE neighbours), addressed by [`stats::ItemPos`].
//! - [`features`]: the one feature builder of training, evaluation and serving.
//! - [`head`]: the MLP scoring head and its validated spec.
//! - [`calibration`]: the map from the head's logit to a purchase
//!   probability at a shop's real base rate.
//! - [`relevance`]: with a query, relevance bands first, probability within.
//! - [`lexical`]: BM25 over item texts (tantivy), its terms and typo
//!   tolerance: the lexical side of search.
//! - [`live_stats`]: a bundle's statistics brought forward with the
//!   purchases since its history ended.
//! - [`scoring`]: features → head → purchase probabilities, for one user.
//! - [`candidates`]: candidate sources from the statistics (linked, popular).
//! - [`explain`]: a score taken apart into reasons (group Shapley values).
//! - [`bundle`]: head + spec + statistics + training record, one directory,
//!   one version.
//! - [`versions`]: a directory of bundle versions and its `CURRENT` pointer.

pub(crate) mod bundle;
pub(crate) mod calibration;
pub(crate) mod candidates;
pub(crate) mod encoder;
pub(crate) mod explain;
pub(crate) mod features;
pub(crate) mod files;
pub(crate) mod head;
pub(crate) mod lexical;
pub(crate) mod live_stats;
pub(crate) mod relevance;
pub(crate) mod scoring;
pub(crate) mod stats;
pub(crate) mod threads;
pub(crate) mod user_text;
pub(crate) mod versions;

use std::io::Read;
use std::path::Path;

/// Opens a file for reading, transparently un-gzipping `*.gz`.
pub(crate) fn open_maybe_gz(path: &Path) -> std::io::Result<Box<dyn Read>> {
    let reader = std::io::BufReader::new(std::fs::File::open(path)?);
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::GzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}
