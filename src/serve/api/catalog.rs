//! The catalog's items: `PUT /v1/catalog/items` (a batch upserted),
//! `GET /v1/catalog/items` (a page, in id order, for browsing),
//! `GET /v1/catalog/items/{id}` and `DELETE /v1/catalog/items/{id}`. Each
//! runs on the blocking pool; a write answers once the store has the change.

use std::collections::BinaryHeap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};

use super::catalog_types::{CatalogItemOut, CatalogPage, DeleteResponse, PageQuery, UpsertRequest, UpsertResponse};
use super::error::{ApiError, ErrorKind};
use super::json::ApiJson;
use super::middleware::Abandon;
use super::openapi::{ItemErrors, PageErrors, UpsertErrors};
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

/// `GET /v1/catalog/items`: a page of items in id order, for browsing (the
/// console's catalog). Reads the in-memory index only, never the store.
#[utoipa::path(
    get,
    path = "/v1/catalog/items",
    tag = "catalog",
    params(PageQuery),
    responses((status = 200, description = "One page of the catalog.", body = CatalogPage), PageErrors)
)]
pub(super) async fn list_items(
    State(state): State<AppState>,
    Extension(abandon): Extension<Abandon>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<CatalogPage>, ApiError> {
    let page = PageQuery::validate(query)?;
    let service = state.service()?;
    // One pass over every id, under the index's read lock: off the runtime's workers.
    state
        .blocking(&abandon, move |_| {
            let catalog = service.catalog().ok_or_else(ApiError::no_catalog)?;
            let (catalog_items, embedded) = catalog.index().counts();
            let view = catalog.index().read();
            let (ids, more) = first_ids_after(view.ids(), page.after.as_deref(), page.limit);
            let next_after = more.then(|| ids.last().map(|id| id.to_string())).flatten();
            let items = ids
                .into_iter()
                .filter_map(|id| view.get(id))
                .map(|(item, vector)| CatalogItemOut { item: item.clone().into(), embedded: vector.is_some() })
                .collect();
            Ok(Json(CatalogPage {
                items,
                next_after,
                catalog_items,
                pending_embeddings: catalog_items.saturating_sub(embedded),
            }))
        })
        .await
}

/// The `limit` smallest ids above `after` (byte order), sorted, and whether
/// any other id follows them. A bounded max-heap over one pass, so a page
/// costs O(n log limit) for n ids and never sorts the whole catalog.
fn first_ids_after<'a>(ids: impl Iterator<Item = &'a str>, after: Option<&str>, limit: usize) -> (Vec<&'a str>, bool) {
    // limit + 1 kept: the one past the page says whether more follow.
    let keep = limit + 1;
    let mut heap = BinaryHeap::with_capacity(keep);
    for id in ids.filter(|id| after.is_none_or(|after| *id > after)) {
        if heap.len() < keep {
            heap.push(id);
        } else if heap.peek().is_some_and(|largest| id < *largest) {
            heap.pop();
            heap.push(id);
        }
    }
    let more = heap.len() > limit;
    let mut page = heap.into_sorted_vec();
    page.truncate(limit);
    (page, more)
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

#[cfg(test)]
mod tests {
    use super::first_ids_after;

    #[test]
    fn pages_walk_every_id_once_in_byte_order() {
        let ids = ["b", "a", "d", "c", "e", "B", "aa"];
        let mut after: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let (page, more) = first_ids_after(ids.iter().copied(), after.as_deref(), 2);
            assert!(page.len() <= 2);
            seen.extend(page.iter().map(|id| id.to_string()));
            if !more {
                break;
            }
            after = page.last().map(|id| id.to_string());
        }
        let mut expected: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_last_full_page_says_nothing_follows() {
        let (page, more) = first_ids_after(["x", "y"].into_iter(), None, 2);
        assert_eq!((page, more), (vec!["x", "y"], false));
        let (page, more) = first_ids_after(["x", "y"].into_iter(), Some("y"), 5);
        assert_eq!((page, more), (Vec::<&str>::new(), false));
    }
}
