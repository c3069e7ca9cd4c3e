//! `DELETE /v1/users/{id}`: a shopper's erasure (GDPR art. 17, PIPL art.
//! 47), behind the admin token. Every stored event of the user is deleted
//! in one transaction, committed (durable) before the answer; the erasure
//! goes through the event writer's queue, so events of the user accepted
//! before it are committed first and erased with the rest (see
//! `serve::event_writer`).
//!
//! The answer is 200 whether or not the store held anything of the user:
//! the status never tells whether a shopper existed, and a repeated erasure
//! is a no-op (`deleted_events: 0`). The count, for the operator's record of
//! the request, is only in the body of an authenticated answer; the log
//! line and the metrics carry counts, never the id.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorKind};
use super::events::MAX_ID_BYTES;
use super::openapi::EraseErrors;
use super::AppState;

/// What an erasure did.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct EraseResponse {
    /// Stored events of the user this request deleted: 0 when there were
    /// none (an id the store never saw, or a second erasure).
    pub deleted_events: u64,
}

/// `DELETE /v1/users/{id}`: deletes every stored event of the shopper,
/// durably, before answering.
#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "The shopper's id, exactly as the events' `user_id` gave it.")),
    responses(
        (status = 200, description = "The shopper's stored events are deleted (none, if there were none).",
         body = EraseResponse),
        EraseErrors
    ),
    security(("bearer" = []))
)]
pub(super) async fn erase_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EraseResponse>, ApiError> {
    // What `POST /v1/events` accepts as a user id: nothing else is stored.
    if id.trim().is_empty() || id.len() > MAX_ID_BYTES || id.contains(char::is_control) {
        return Err(ApiError::new(
            ErrorKind::InvalidUserId,
            format!("id: must be 1 to {MAX_ID_BYTES} bytes, not blank, without control characters"),
        ));
    }
    // The encoder is not needed: an erasure works while it is down.
    let service = state.service_if_loaded().ok_or_else(ApiError::not_ready)?;
    let writer = service.events().ok_or_else(|| ApiError::internal(&"this service keeps no store"))?;
    // The erasure runs once queued, whether or not this request still waits.
    let erased = writer.erase(id).map_err(|e| ApiError::store_unavailable(&e))?;
    let erased = erased.await.map_err(|_| ApiError::store_unavailable(&"the event writer stopped"))?;
    let deleted_events = erased.map_err(|e| ApiError::store_unavailable(&e))?;
    Ok(Json(EraseResponse { deleted_events }))
}
