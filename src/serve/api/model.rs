//! `GET /v1/model`: what the process serves, read-only — the encoder, the
//! current bundle with how it was trained (its training record) and how it
//! did on the inner validation split, and the A/B variants with the bundle
//! each serves. `/ready` says only which encoder and bundle are loaded; a
//! merchandiser's console (and anyone auditing a bundle) needs the record
//! too, without a shell on the server. The wire copies of the bundle's
//! manifest types are here, so the model layer keeps no serde names for the
//! API and no OpenAPI schemas.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::openapi::ReadyErrors;
use super::recommend::model_info;
use super::types::ModelInfo;
use super::AppState;
use crate::model::bundle::{EpochLog, RankingMetrics, StageRecord, TrainingRecord};
use crate::serve::variants::Served;

/// `GET /v1/model`.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct ModelResponse {
    /// The encoder, its precision and the current bundle's version.
    #[serde(flatten)]
    pub model: ModelInfo,
    /// The current bundle's inner-validation metrics (EVAL_PROTOCOL v1 §4)
    /// for its selected weights; absent if its manifest records none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// How the current bundle was trained; absent if its manifest records
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
    /// The A/B variants (one, `default`, without `ab.variants`), in
    /// configuration order.
    pub variants: Vec<VariantInfo>,
}

/// Ranking metrics, each a mean over the validation users.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct Validation {
    #[serde(rename = "ndcg@10")]
    pub ndcg10: f64,
    #[serde(rename = "recall@10")]
    pub recall10: f64,
    #[serde(rename = "hit@10")]
    pub hit10: f64,
    pub mrr: f64,
    pub auc: f64,
}

/// A bundle's training record, as its manifest holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct Training {
    /// The log trained on, as given on the command line.
    pub data: String,
    /// The importer's row counts (kept, skipped by reason).
    pub data_summary: String,
    /// UTC day of the run, `YYYY-MM-DD`.
    pub date: String,
    /// The command that trained it.
    pub command: String,
    /// The trainer's options, as it recorded them.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    /// Examples of the final fit.
    pub examples: usize,
    /// The selected epoch count of each ensemble member.
    pub best_epochs: Vec<usize>,
    /// Every member's epochs, one member after the other (each member's
    /// restart at epoch 1).
    pub epochs: Vec<Epoch>,
    /// Wall time of the whole run, in seconds.
    pub seconds: f64,
    /// Each stage's time and peak memory, in run order.
    pub stages: Vec<Stage>,
    /// Where the run met a bound and did less than asked, in words.
    pub limits: Vec<String>,
}

/// One epoch of one member's training.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct Epoch {
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Inner-validation NDCG@10 (absent during the refit on all data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_ndcg10: Option<f64>,
}

/// One stage of a training run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct Stage {
    pub name: String,
    pub seconds: f64,
    /// The process's peak resident memory during the stage (absent off Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
}

/// An A/B variant and what it serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct VariantInfo {
    /// The name `request_id`s and the metrics' `variant` label carry.
    pub name: String,
    /// The share of users assigned to it, in [0, 1].
    #[schema(minimum = 0, maximum = 1)]
    pub share: f64,
    /// The version of the bundle it serves now.
    pub bundle: String,
    /// Whether it follows the current bundle (reloads and rollbacks), or
    /// serves one version fixed at start-up.
    pub follows_current: bool,
}

/// `GET /v1/model`: the encoder, the current bundle's training record and
/// validation metrics, and the A/B variants.
#[utoipa::path(
    get,
    path = "/v1/model",
    tag = "operations",
    responses((status = 200, description = "What this process serves.", body = ModelResponse), ReadyErrors)
)]
pub(super) async fn get_model(State(state): State<AppState>) -> Result<Json<ModelResponse>, ApiError> {
    let service = state.service()?;
    let bundle = service.bundle();
    let manifest = bundle.manifest();
    let variants = service
        .variants()
        .shares()
        .map(|(variant, share)| {
            let (bundle, follows_current) = match &variant.served {
                Served::Current => (bundle.version().to_string(), true),
                Served::Fixed(fixed) => (fixed.version().to_string(), false),
            };
            VariantInfo { name: variant.name.clone(), share, bundle, follows_current }
        })
        .collect();
    Ok(Json(ModelResponse {
        model: model_info(&service, &bundle),
        validation: manifest.validation.map(Validation::from),
        training: manifest.training.clone().map(Training::from),
        variants,
    }))
}

impl From<RankingMetrics> for Validation {
    fn from(metrics: RankingMetrics) -> Self {
        let RankingMetrics { ndcg10, recall10, hit10, mrr, auc } = metrics;
        Self { ndcg10, recall10, hit10, mrr, auc }
    }
}

impl From<TrainingRecord> for Training {
    fn from(record: TrainingRecord) -> Self {
        let TrainingRecord {
            data,
            data_summary,
            date,
            command,
            options,
            examples,
            best_epochs,
            epochs,
            seconds,
            stages,
            limits,
        } = record;
        Self {
            data,
            data_summary,
            date,
            command,
            options,
            examples,
            best_epochs,
            epochs: epochs.into_iter().map(Epoch::from).collect(),
            seconds,
            stages: stages.into_iter().map(Stage::from).collect(),
            limits,
        }
    }
}

impl From<EpochLog> for Epoch {
    fn from(log: EpochLog) -> Self {
        let EpochLog { epoch, loss, val_ndcg10 } = log;
        Self { epoch, loss, val_ndcg10 }
    }
}

impl From<StageRecord> for Stage {
    fn from(stage: StageRecord) -> Self {
        let StageRecord { name, seconds, peak_rss_mib } = stage;
        Self { name, seconds, peak_rss_mib }
    }
}
