//! `POST /recommend`: the request validated into a query, ranked by the
//! bundle serving now (its CPU work on the blocking pool, the wait for the
//! encoder between its halves holding no thread), and answered with the
//! model that served it.

use std::time::Instant;

use axum::extract::State;
use axum::{Extension, Json};

use super::error::ApiError;
use super::json::ApiJson;
use super::middleware::Abandon;
use super::openapi::RecommendErrors;
use super::ranked::RankedItem;
use super::types::{FacetValue, ModelInfo, RecommendRequest, RecommendResponse};
use super::AppState;
use crate::model::bundle::Bundle;
use crate::serve::ranker::RankError;
use crate::serve::service::Service;

/// `POST /recommend`: ranks the request's candidates, or retrieves from the
/// catalog when it sends none.
#[utoipa::path(
    post,
    path = "/recommend",
    tag = "recommend",
    request_body = RecommendRequest,
    responses((status = 200, description = "The items, best first.", body = RecommendResponse), RecommendErrors)
)]
pub(super) async fn recommend(
    State(state): State<AppState>,
    Extension(abandon): Extension<Abandon>,
    ApiJson(request): ApiJson<RecommendRequest>,
) -> Result<Json<RecommendResponse>, ApiError> {
    let started = Instant::now();
    let user_id = request.user.id.clone();
    let query = request.validate(&state.shared.limits)?;
    let service = state.service()?;
    // The variant and its bundle are taken once: this request is scored by
    // that bundle and names it, whatever is installed while it runs.
    let (variant, bundle) = service.choose(user_id.as_deref());
    let variant = variant.name.clone();
    state.shared.metrics.variant_requests.with_label_values(&[&variant]).inc();
    let model = model_info(&service, &bundle);
    // The CPU work runs on the blocking pool, never on a runtime worker; the
    // wait for the encoder between its two halves holds no thread at all.
    let ticket = state.ticket(&abandon);
    let ranking = async {
        let ranker = service.clone();
        let (begun, job) = state
            .on_blocking_pool(&ticket, move |ticket| Ok(ranker.ranker().begin(query, ranker.catalog(), ticket)?))
            .await?;
        let embedded = job.wait(&ticket).await.map_err(RankError::from)?;
        state
            .on_blocking_pool(&ticket, move |ticket| {
                Ok(service.ranker().end(&bundle, begun, embedded, service.catalog(), ticket)?)
            })
            .await
    };
    let ranking = state.in_time(&ticket, ranking).await?;
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    let request_id = crate::serve::variants::request_id(&variant);
    tracing::debug!(user = user_id.as_deref().unwrap_or("-"), request_id, took_ms, "ranked");
    let items = ranking.items.into_iter().map(RankedItem::from).collect();
    let facets = ranking.facets.map(|facets| {
        facets.into_iter().map(|(name, values)| (name, values.into_iter().map(FacetValue::from).collect())).collect()
    });
    let corrected_query = ranking.corrected_query;
    Ok(Json(RecommendResponse { items, model, variant, request_id, took_ms, facets, corrected_query }))
}

/// What a response says served it: the encoder and the bundle's version.
pub(super) fn model_info(service: &Service, bundle: &Bundle) -> ModelInfo {
    let encoder = service.ranker().embedder().encoder();
    ModelInfo {
        encoder: encoder.name().to_string(),
        precision: encoder.precision().as_str().to_string(),
        head: bundle.version().to_string(),
    }
}
