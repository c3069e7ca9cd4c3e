//! `POST /recommend`: the request validated into a query, ranked by the
//! bundle serving now (its CPU work on the blocking pool, the wait for the
//! encoder between its halves holding no thread), and answered with the
//! model that served it. The wait for the encoder ends at the request's
//! deadline (`deadline_ms`); past it, or when the encoder refuses the texts
//! outright, the request is answered without them (`Ranker::degraded`),
//! marked `degraded` (with no items when nothing can be ranked that way).

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::{Extension, Json};

use super::error::ApiError;
use super::json::ApiJson;
use super::middleware::Abandon;
use super::openapi::RecommendErrors;
use super::ranked::RankedItem;
use super::types::{DegradedReason, FacetValue, ModelInfo, RecommendRequest, RecommendResponse};
use super::AppState;
use crate::model::bundle::Bundle;
use crate::serve::embed::{EmbedError, Ticket};
use crate::serve::ranker::{RankError, Ranking};
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
    let deadline = request.deadline(&state.shared.limits, state.shared.request_timeout)?;
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
    // The encoder's part of the work has until the deadline; abandoning it
    // there withdraws the request's queued texts, not the request.
    // It stops a little before the deadline, so that a degraded answer
    // (milliseconds of CPU) is out by then.
    let wait_until = started + deadline - (deadline / 10).min(DEGRADED_ANSWER_TIME);
    let embedding = ticket.part_until(wait_until);
    let ranking = async {
        let ranker = service.clone();
        let (begun, job) = state
            .on_blocking_pool(&embedding, move |embedding| {
                Ok(ranker.ranker().begin(query, ranker.catalog(), embedding)?)
            })
            .await?;
        let refused = match job {
            Ok(job) => match tokio::time::timeout_at(wait_until.into(), job.wait(&embedding)).await {
                Ok(embedded) => {
                    let embedded = embedded.map_err(RankError::from)?;
                    let service = service.clone();
                    let ranking = state
                        .on_blocking_pool(&ticket, move |ticket| {
                            Ok(service.ranker().end(&bundle, begun, embedded, service.catalog(), ticket)?)
                        })
                        .await?;
                    return Ok((ranking, None));
                }
                Err(_) => {
                    // The wait was dropped (its pending texts with it); the
                    // ticket stops whatever else the encoder holds of it.
                    embedding.abandon();
                    Refused::Deadline
                }
            },
            Err(error @ (EmbedError::Backlog { .. } | EmbedError::QueueFull { .. })) => Refused::Encoder(error),
            Err(error) => return Err(RankError::from(error).into()),
        };
        let reason = refused.reason();
        let degraded =
            move |ticket: &Ticket| Ok(service.ranker().degraded(&bundle, begun, service.catalog(), ticket)?);
        // Refused at admission: the excess of an overload, on its own lane
        // so that it cannot take the cores from the encoder (`overload_lane`).
        let ranking = match refused {
            Refused::Deadline => state.on_blocking_pool(&ticket, degraded).await?,
            Refused::Encoder(_) => state.on_overload_lane(&ticket, wait_until, degraded).await?,
        };
        // Nothing rankable without the encoder (no candidate passes the
        // filter, or the catalog retrieves nothing): an empty answer,
        // degraded, within the deadline the caller chose, not a 5xx.
        let ranking = ranking.unwrap_or(Ranking { items: Vec::new(), facets: None, corrected_query: None });
        state.shared.metrics.degraded_answers.with_label_values(&[reason.as_str()]).inc();
        Ok((ranking, Some(reason)))
    };
    let (ranking, degraded_reason) = state.in_time(&ticket, ranking).await?;
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    let request_id = crate::serve::variants::request_id(&variant);
    let degraded = degraded_reason.map(DegradedReason::as_str);
    tracing::debug!(user = user_id.as_deref().unwrap_or("-"), request_id, took_ms, degraded, "ranked");
    let items = ranking.items.into_iter().map(RankedItem::from).collect();
    let facets = ranking.facets.map(|facets| {
        facets.into_iter().map(|(name, values)| (name, values.into_iter().map(FacetValue::from).collect())).collect()
    });
    let corrected_query = ranking.corrected_query;
    Ok(Json(RecommendResponse {
        items,
        model,
        variant,
        request_id,
        took_ms,
        facets,
        corrected_query,
        degraded: degraded_reason.is_some(),
        degraded_reason,
    }))
}

/// What the encoder's part of a request leaves, before the deadline, for a
/// degraded answer (at most a tenth of the deadline). A degraded answer of
/// 100 candidates took 2 to 40 ms on 2 busy cores (the resilience suite).
const DEGRADED_ANSWER_TIME: Duration = Duration::from_millis(25);

/// Why the encoder did not embed a request's texts, when it did not.
enum Refused {
    /// Not within the request's deadline.
    Deadline,
    /// Refused at once: a backlog longer than the time left, or a full queue.
    Encoder(EmbedError),
}

impl Refused {
    fn reason(&self) -> DegradedReason {
        match self {
            Refused::Deadline | Refused::Encoder(EmbedError::Backlog { .. }) => DegradedReason::Deadline,
            Refused::Encoder(_) => DegradedReason::Overloaded,
        }
    }
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
