//! The catalog's items: `PUT /v1/catalog/items` (a batch upserted),
//! `GET /v1/catalog/items/{id}` and `DELETE /v1/catalog/items/{id}`. Each
//! runs on the blocking pool and answers once the store has the change.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::catalog_types::{CatalogItemOut, DeleteResponse, UpsertRequest, UpsertResponse};
use super::error::{ApiError, ErrorKind};
use super::json::ApiJson;
use super::middleware::Abandon;
use super::openapi::{ItemErrors, UpsertErrors};
use super::AppState;
use crate::serve::catalog::CatalogWriteError;

/// `PUT /v1/catalog/items`: upserts a batch, durably, before answering.
#[utoipa::path(
    put,
    path = "/v1/catalog/items",
    tag = "catalog",
    request_body = UpsertRequest,
    responses((status = 200, description = "The items are stored.", body = UpsertResponse), UpsertErrors)
)]
pub(super) async fn upsert_items(
    State(state): State<AppState>,
    Extension(abandon): Extension<Abandon>,
    ApiJson(request): ApiJson<UpsertRequest>,
) -> Result<Json<UpsertResponse>, ApiError> {
    let limits = state.shared.catalog_limits;
    let items = request.validate(limits.max_upsert_items)?;
    let service = state.service()?;
    state
        .blocking(&abandon, move |_| {
            let catalog = service.catalog().ok_or_else(ApiError::no_catalog)?;
            catalog.upsert(&items, limits.max_items).map_err(|e| match e {
                full @ CatalogWriteError::Full { .. } => ApiError::new(ErrorKind::CatalogFull, full.to_string()),
                CatalogWriteError::Store(e) => ApiError::store_unavailable(&e),
            })?;
            let (items_now, embedded) = catalog.index().counts();
            Ok(Json(UpsertResponse {
                upserted: items.len(),
                catalog_items: items_now,
                pending_embeddings: items_now - embedded,
            }))
        })
        .await
}

/// `GET /v1/catalog/items/{id}`.
#[utoipa::path(
    get,
    path = "/v1/catalog/items/{id}",
    tag = "catalog",
    params(("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The item as stored.", body = CatalogItemOut), ItemErrors)
)]
pub(super) async fn get_item(
    State(state): State<AppState>,
    Extension(abandon): Extension<Abandon>,
    Path(id): Path<String>,
) -> Result<Json<CatalogItemOut>, ApiError> {
    let service = state.service()?;
    // The index's lock may wait for a scan: off the runtime's workers.
    state
        .blocking(&abandon, move |_| {
            let catalog = service.catalog().ok_or_else(ApiError::no_catalog)?;
            let view = catalog.index().read();
            let (item, vector) = view.get(&id).ok_or_else(|| ApiError::item_not_found(&id))?;
            Ok(Json(CatalogItemOut { item: item.clone().into(), embedded: vector.is_some() }))
        })
        .await
}

/// `DELETE /v1/catalog/items/{id}`: durable before answering.
#[utoipa::path(
    delete,
    path = "/v1/catalog/items/{id}",
    tag = "catalog",
    params(("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The item is deleted.", body = DeleteResponse), ItemErrors)
)]
pub(super) async fn delete_item(
    State(state): State<AppState>,
    Extension(abandon): Extension<Abandon>,
    Path(id): Path<String>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let service = state.service()?;
    state
        .blocking(&abandon, move |_| {
            let catalog = service.catalog().ok_or_else(ApiError::no_catalog)?;
            match catalog.delete(&id) {
                Ok(true) => Ok(Json(DeleteResponse { deleted: id })),
                Ok(false) => Err(ApiError::item_not_found(&id)),
                Err(e) => Err(ApiError::store_unavailable(&e)),
            }
        })
        .await
}
