//! A model bundle: everything `shoprank train` produces and a server loads
//! besides the encoder, in one directory with one version.
//!
//! | file | what |
//! |---|---|
//! | `bundle.json` | [`BundleManifest`]: version, head spec, training record, inner-validation metrics |
//! | `head.safetensors` | the head's weights |
//! | `stats.json.gz` | the history statistics the features are built from |
//!
//! A loaded [`Bundle`] is immutable; a server holds it behind one pointer so
//! that a new bundle replaces it in one swap. Loading checks everything it
//! can before a request sees it: the manifest's format, the head spec, the
//! encoder the head was trained on, the weights' shapes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::model::calibration::{Calibration, InvalidCalibration};
use crate::model::encoder::{Arithmetic, EncoderIdentity};
use crate::model::head::{HeadError, HeadSpec, ScoringHead};
use crate::model::stats::{HistoryStats, StatsError};

/// Manifest format understood by this build.
pub(crate) const BUNDLE_FORMAT: u32 = 2;
pub(crate) const MANIFEST_FILE: &str = "bundle.json";
pub(crate) const WEIGHTS_FILE: &str = "head.safetensors";
pub(crate) const STATS_FILE: &str = "stats.json.gz";

/// The metrics of one ranking, or their mean over users (EVAL_PROTOCOL v1 §4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    #[serde(rename = "ndcg@10")]
    pub ndcg10: f64,
    #[serde(rename = "recall@10")]
    pub recall10: f64,
    #[serde(rename = "hit@10")]
    pub hit10: f64,
    pub mrr: f64,
    pub auc: f64,
}

/// One epoch of one member's training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    /// Inner-validation NDCG@10 (absent during the refit).
    pub val_ndcg10: Option<f64>,
}

/// Wall time and peak resident memory of one stage of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub seconds: f64,
    /// The process's peak RSS during the stage (absent off Linux).
    pub peak_rss_mib: Option<f64>,
}

/// How a bundle was made: enough to reproduce and to chart it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TrainingRecord {
    /// The log trained on, as given on the command line.
    pub data: String,
    /// The importer's row counts (kept, skipped by reason).
    pub data_summary: String,
    /// UTC day of the run, `YYYY-MM-DD`.
    pub date: String,
    pub command: String,
    /// The trainer's options as it recorded them. Serving never reads them,
    /// so the model layer keeps them as plain JSON rather than depend on the
    /// offline layer's type.
    pub options: serde_json::Value,
    /// Examples of the final fit.
    pub examples: usize,
    /// The selected epoch count of each ensemble member.
    pub best_epochs: Vec<usize>,
    /// Every member's epochs, one member after the other.
    pub epochs: Vec<EpochLog>,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// Each stage's time and peak memory, in run order.
    #[serde(default)]
    pub stages: Vec<StageRecord>,
    /// Where the run met a bound and did less than asked (fewer validation
    /// users, the EASE over fewer items), in words.
    #[serde(default)]
    pub limits: Vec<String>,
}

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BundleManifest {
    pub format: u32,
    /// Shown in responses, `/ready` and `shoprank_model_info`, e.g.
    /// `2011-11-01-s7-x3-e6_1_3` (history end, seed, members, selected epochs).
    pub version: String,
    pub head: HeadSpec,
    pub training: Option<TrainingRecord>,
    /// Inner-validation metrics of the selected weights.
    pub validation: Option<RankingMetrics>,
    /// The map from the head's logit to a purchase probability at a shop's
    /// real base rate (see `model::calibration`). A bundle without one
    /// scores at its training mix's odds: it ranks the same, and `/ready`
    /// says its scores are uncalibrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid bundle manifest: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{path}: bundle format {found}; this build reads format {BUNDLE_FORMAT}: retrain with `shoprank train`")]
    Format { path: PathBuf, found: u32 },
    #[error("{path}: the bundle has no version")]
    NoVersion { path: PathBuf },
    #[error(
        "the bundle {path} was trained on encoder `{bundle_encoder}` ({bundle_dim}-d) but the loaded encoder is \
         `{encoder}` ({dim}-d): choose the encoder preset the bundle was trained with (encoder.preset, which also \
         sets bundle.path), or set encoder.source (and encoder.lowercase, when the name ends in `+lowercase`) to \
         match it, or retrain"
    )]
    EncoderMismatch { path: PathBuf, bundle_encoder: String, bundle_dim: usize, encoder: String, dim: usize },
    #[error("{path}: {source}")]
    Head { path: PathBuf, source: HeadError },
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error("{path}: {source}")]
    Calibration { path: PathBuf, source: InvalidCalibration },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "the bundle written for {path} does not load back, so it was not saved (a bug: please report it): {source}"
    )]
    Unloadable { path: PathBuf, source: Box<BundleError> },
}

/// A loaded, checked bundle.
pub struct Bundle {
    manifest: BundleManifest,
    head: Arc<ScoringHead>,
    /// The statistics the features are built from: the file's, or those
    /// brought forward from them (see [`Bundle::with_live_stats`]).
    stats: Arc<HistoryStats>,
    /// The statistics as the file holds them, at the history's end.
    base_stats: Arc<HistoryStats>,
    dir: PathBuf,
}

impl Bundle {
    /// Loads the bundle in `dir` for the encoder that will embed its inputs;
    /// its head serves in `precision` (the encoder's: see `ScoringHead::load`).
    pub fn load(dir: &Path, encoder: &EncoderIdentity, precision: Arithmetic) -> Result<Self, BundleError> {
        let manifest = read_manifest(dir)?;
        let path = dir.join(MANIFEST_FILE);
        let trained_on = &manifest.head.encoder;
        if trained_on != encoder {
            return Err(BundleError::EncoderMismatch {
                path,
                bundle_encoder: trained_on.name.clone(),
                bundle_dim: trained_on.dim,
                encoder: encoder.name.clone(),
                dim: encoder.dim,
            });
        }
        let weights = dir.join(WEIGHTS_FILE);
        let head = ScoringHead::load(&weights, manifest.head.clone(), precision)
            .map_err(|source| BundleError::Head { path: weights, source })?;
        let head = match &manifest.calibration {
            Some(calibration) => head.with_logit_map(calibration.logit_map()),
            None => head,
        };
        let stats = Arc::new(HistoryStats::load(&dir.join(STATS_FILE))?);
        Ok(Self { manifest, head: Arc::new(head), base_stats: stats.clone(), stats, dir: dir.to_path_buf() })
    }

    /// Writes a bundle as the directory `dir`. The files are written into a
    /// staging directory beside it and loaded back from there, as a server
    /// would load them; only a bundle that loads then replaces `dir`, by
    /// renames, so a reader finds the old bundle or the new one whole, never
    /// a mix of their files (between the two renames it finds none and its
    /// load fails), and a bundle that would not load never replaces one.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // training's
    pub(crate) fn save(
        dir: &Path,
        manifest: &BundleManifest,
        weights: &VarMap,
        stats: &HistoryStats,
    ) -> Result<(), BundleError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BundleError::Write { path, source }
        };
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".into());
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Unique per process and moment: containers often all run as PID 1.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let staging = parent.join(format!(".{name}.staging-{}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let weights_path = staging.join(WEIGHTS_FILE);
        weights.save(&weights_path).map_err(|e| BundleError::Head { path: weights_path.clone(), source: e.into() })?;
        stats.save(&staging.join(STATS_FILE))?;
        let text = serde_json::to_string_pretty(manifest).expect("a manifest serialises") + "\n";
        std::fs::write(staging.join(MANIFEST_FILE), text).map_err(io(&staging.join(MANIFEST_FILE)))?;
        // safetensors writes through a temporary file, created 0600: give the
        // weights the manifest's permissions (the umask's), so a server
        // running as another user (the Docker image's) can read them.
        let permissions = std::fs::metadata(staging.join(MANIFEST_FILE)).map_err(io(&staging))?.permissions();
        std::fs::set_permissions(&weights_path, permissions).map_err(io(&weights_path))?;
        if let Err(error) = Self::load(&staging, &manifest.head.encoder, Arithmetic::F32) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(BundleError::Unloadable { path: dir.to_path_buf(), source: Box::new(error) });
        }
        if dir.exists() {
            let retired = parent.join(format!(".{name}.retired-{}-{nanos}", std::process::id()));
            let _ = std::fs::remove_dir_all(&retired);
            std::fs::rename(dir, &retired).map_err(io(dir))?;
            std::fs::rename(&staging, dir).map_err(io(dir))?;
            std::fs::remove_dir_all(&retired).map_err(io(&retired))
        } else {
            std::fs::rename(&staging, dir).map_err(io(dir))
        }
    }

    /// The bundle's calibration, if it has one (see `model::calibration`).
    pub(crate) fn calibration(&self) -> Option<&Calibration> {
        self.manifest.calibration.as_ref()
    }

    pub(crate) fn manifest(&self) -> &BundleManifest {
        &self.manifest
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    pub fn head(&self) -> &ScoringHead {
        &self.head
    }

    pub fn stats(&self) -> &HistoryStats {
        &self.stats
    }

    /// The statistics as the bundle's file holds them (see `stats`).
    pub(crate) fn base_stats(&self) -> &Arc<HistoryStats> {
        &self.base_stats
    }

    /// The same bundle (head, manifest, base statistics) serving `stats`,
    /// the base brought forward by `model::live_stats`. The head's weights
    /// are shared, not copied.
    pub(crate) fn with_live_stats(&self, stats: HistoryStats) -> Self {
        Self {
            manifest: self.manifest.clone(),
            head: self.head.clone(),
            stats: Arc::new(stats),
            base_stats: self.base_stats.clone(),
            dir: self.dir.clone(),
        }
    }

    /// The directory it was loaded from.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Reads and checks `dir/bundle.json`.
pub(crate) fn read_manifest(dir: &Path) -> Result<BundleManifest, BundleError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Read { path: path.clone(), source })?;
    // The format is checked before the whole manifest, so an older bundle
    // gets "retrain" rather than a field-level parse error.
    #[derive(Deserialize)]
    struct FormatOnly {
        format: u32,
    }
    let format = serde_json::from_str::<FormatOnly>(&text)
        .map_err(|source| BundleError::Parse { path: path.clone(), source })?
        .format;
    if format != BUNDLE_FORMAT {
        return Err(BundleError::Format { path, found: format });
    }
    let manifest: BundleManifest =
        serde_json::from_str(&text).map_err(|source| BundleError::Parse { path: path.clone(), source })?;
    if manifest.version.trim().is_empty() {
        return Err(BundleError::NoVersion { path });
    }
    manifest.head.validate().map_err(|source| BundleError::Head { path: path.clone(), source })?;
    if let Some(calibration) = &manifest.calibration {
        calibration.validate().map_err(|source| BundleError::Calibration { path, source })?;
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests;
