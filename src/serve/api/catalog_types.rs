//! The wire format of the catalog routes (`PUT /v1/catalog/items`, `GET`
//! and `DELETE /v1/catalog/items/{id}`) and its validation into stored
//! items. Every rule here is listed in the README's "Limits and errors". A
//! stored catalog item gets a wire copy here, converted at the edge, so the
//! store knows nothing of the wire format.

use std::collections::HashSet;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorKind};
use super::json;
use super::types::price;
use crate::store::catalog;

/// `PUT /v1/catalog/items`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertRequest {
    /// The items to insert or replace (by id), at most
    /// `catalog.max_upsert_items`.
    #[serde(deserialize_with = "json::objects")]
    pub items: Vec<CatalogItemIn>,
}

/// A catalog item as the storefront sends it; `title` is accepted for `text`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogItemIn {
    /// 1 to 256 bytes, not blank; unique within the request.
    pub id: String,
    /// The product's title or description: what is embedded.
    #[serde(alias = "title")]
    pub text: String,
    #[schema(minimum = 0)]
    pub price: Option<f64>,
    /// Default true.
    pub available: Option<bool>,
    /// Free JSON kept with the item and returned as given.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: serde_json::Value,
}

/// The answer to `PUT /v1/catalog/items`, once the items are stored.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct UpsertResponse {
    /// Items written by this request.
    pub upserted: usize,
    /// Items in the catalog now.
    pub catalog_items: usize,
    /// Items whose embedding is still being computed (retrieval cannot
    /// find them yet).
    pub pending_embeddings: usize,
}

/// The answer to `DELETE /v1/catalog/items/{id}`.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct DeleteResponse {
    /// The id of the item deleted.
    pub deleted: String,
}

/// Longest item id accepted, in bytes.
pub(crate) const MAX_ITEM_ID_BYTES: usize = 256;

impl UpsertRequest {
    /// Checks every item; the error names the first bad one.
    pub fn validate(self, max_items: usize) -> Result<Vec<catalog::CatalogItem>, ApiError> {
        if self.items.is_empty() {
            return Err(ApiError::new(ErrorKind::EmptyItems, "items: the list is empty"));
        }
        if self.items.len() > max_items {
            return Err(ApiError::new(
                ErrorKind::TooManyItems,
                format!("items: {} given; the limit is {max_items} (catalog.max_upsert_items)", self.items.len()),
            ));
        }
        let mut seen = HashSet::new();
        self.items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let bad = |problem: String| ApiError::new(ErrorKind::InvalidItem, format!("items[{i}].{problem}"));
                if item.id.trim().is_empty() || item.id.len() > MAX_ITEM_ID_BYTES || item.id.contains(char::is_control)
                {
                    return Err(bad(format!(
                        "id must be 1 to {MAX_ITEM_ID_BYTES} bytes, not blank, without control characters"
                    )));
                }
                if item.text.trim().is_empty() {
                    return Err(bad("text is empty".into()));
                }
                // PostgreSQL cannot store NUL in text; neither engine is given it.
                if item.text.contains('\0') {
                    return Err(bad("text contains a NUL character".into()));
                }
                if !seen.insert(item.id.clone()) {
                    return Err(bad(format!("id `{}` appears more than once", item.id)));
                }
                let price = price(ErrorKind::InvalidItem, &format!("items[{i}].price"), item.price)?;
                if !(item.attributes.is_object() || item.attributes.is_null()) {
                    return Err(bad("attributes must be a JSON object".into()));
                }
                Ok(catalog::CatalogItem {
                    id: item.id,
                    text: item.text,
                    price,
                    available: item.available.unwrap_or(true),
                    attributes: item.attributes,
                })
            })
            .collect()
    }
}

/// `GET /v1/catalog/items/{id}`: the item as stored, and whether its
/// embedding is ready (only then can retrieval find it).
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct CatalogItemOut {
    #[serde(flatten)]
    pub item: CatalogItem,
    /// Whether the item's embedding is computed.
    pub embedded: bool,
}

/// A product as the storefront sends it.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct CatalogItem {
    pub id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f32>,
    #[serde(default = "available_by_default")]
    pub available: bool,
    /// Free JSON the storefront wants kept with the item (returned as given).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
}

fn available_by_default() -> bool {
    true
}

impl From<catalog::CatalogItem> for CatalogItem {
    fn from(item: catalog::CatalogItem) -> Self {
        let catalog::CatalogItem { id, text, price, available, attributes } = item;
        Self { id, text, price, available, attributes }
    }
}

/// Most items one page of `GET /v1/catalog/items` holds.
pub(crate) const MAX_PAGE_ITEMS: u32 = 200;
/// Items on a page when the request names no `limit`.
pub(crate) const DEFAULT_PAGE_ITEMS: u32 = 50;

/// `GET /v1/catalog/items`'s query: a page of items in id order (byte
/// order), starting after `after`. Keyset paging, not offsets: a page
/// costs one pass over the ids however deep it is, and items written
/// between two pages neither repeat nor shift the next one.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Start after this id (byte order): the previous page's `next_after`.
    /// Absent: from the first item.
    pub after: Option<String>,
    /// Items on the page, 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// A validated [`PageQuery`].
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub after: Option<String>,
    pub limit: usize,
}

impl PageQuery {
    /// The page asked for; a parameter that does not parse, one not known,
    /// or a `limit` out of range is `invalid_page`.
    pub(crate) fn validate(query: Result<Query<Self>, QueryRejection>) -> Result<Page, ApiError> {
        let Query(query) = query.map_err(|rejection| ApiError::new(ErrorKind::InvalidPage, rejection.body_text()))?;
        let limit = query.limit.unwrap_or(DEFAULT_PAGE_ITEMS);
        if !(1..=MAX_PAGE_ITEMS).contains(&limit) {
            return Err(ApiError::new(
                ErrorKind::InvalidPage,
                format!("limit: {limit} given; it must be 1 to {MAX_PAGE_ITEMS}"),
            ));
        }
        Ok(Page { after: query.after, limit: limit as usize })
    }
}

/// `GET /v1/catalog/items`: one page of the catalog.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct CatalogPage {
    /// The items after `after`, in id order (byte order), at most `limit`.
    pub items: Vec<CatalogItemOut>,
    /// Present when more items follow: pass it as `after` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
    /// Items in the catalog now.
    pub catalog_items: usize,
    /// Items whose embedding is still being computed.
    pub pending_embeddings: usize,
}
