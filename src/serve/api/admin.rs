//! The admin routes: `POST /admin/reload` and `POST /admin/rollback`. They
//! need `Authorization: Bearer <admin.token>`; the token is compared in
//! constant time (`subtle`) and never logged. Without a configured token
//! they answer 403: an admin route must never be open by accident.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorKind};
use super::json;
use super::openapi::AdminErrors;
use super::AppState;
use crate::serve::service::{Reloaded, ServiceError};

/// The configured token; `None` turns the admin routes off.
#[derive(Clone)]
pub(crate) struct AdminToken(Option<Vec<u8>>);

impl AdminToken {
    pub(crate) fn new(token: &str) -> Self {
        Self((!token.is_empty()).then(|| token.as_bytes().to_vec()))
    }

    /// Ok if `headers` carry the token. The comparison's time depends on
    /// the token's length only, not on where a guess first differs.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.0 else {
            return Err(ApiError::admin_disabled());
        };
        let given =
            headers.get(header::AUTHORIZATION).and_then(|value| bearer_token(value.as_bytes())).unwrap_or_default();
        if bool::from(given.ct_eq(expected.as_slice())) {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

/// The credentials of a `Bearer` authorization: the scheme's name is
/// case-insensitive (RFC 7235 §2.1), and one or more spaces follow it.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    Some(rest.trim_ascii_start())
}

/// `POST /admin/reload`: which bundle to load.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReloadRequest {
    /// A version in the bundle directory; absent: what its `CURRENT` names
    /// (or the single bundle directory, re-read).
    pub version: Option<String>,
}

/// What a reload or rollback did.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct ReloadResponse {
    /// `installed`, or `unchanged` when that bundle already serves.
    pub outcome: String,
    /// The version serving before.
    pub from: String,
    /// The version serving now.
    pub to: String,
}

impl From<Reloaded> for ReloadResponse {
    fn from(reloaded: Reloaded) -> Self {
        match reloaded {
            Reloaded::Installed { from, to } => Self { outcome: "installed".into(), from, to },
            Reloaded::Unchanged { version } => Self { outcome: "unchanged".into(), from: version.clone(), to: version },
        }
    }
}

/// A refused bundle is the caller's to fix (422, saying why); the old
/// bundle keeps serving either way.
pub(crate) fn refused(error: ServiceError) -> ApiError {
    use crate::model::versions::VersionsError;
    match error {
        ServiceError::Versions(unknown @ VersionsError::Unknown { .. }) => {
            ApiError::new(ErrorKind::UnknownVersion, unknown.to_string())
        }
        ServiceError::NoEarlierBundle => ApiError::new(ErrorKind::NothingToRollBack, error.to_string()),
        other => {
            tracing::warn!(error = %other, "bundle refused; the serving bundle is unchanged");
            ApiError::new(ErrorKind::BundleRefused, format!("{other}; the serving bundle is unchanged"))
        }
    }
}

/// The admin routes' guard: the bearer token, or 401/403 before the body.
pub(super) async fn admin_only(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match state.shared.admin.check(&headers) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// `POST /admin/reload`: loads, warms up and installs a bundle; the old
/// one serves until the swap, and keeps serving if the new one is refused.
#[utoipa::path(
    post,
    path = "/admin/reload",
    tag = "admin",
    request_body(content = Option<ReloadRequest>, description = "Optional: `{\"version\": ...}`."),
    responses((status = 200, description = "The bundle serving now.", body = ReloadResponse), AdminErrors),
    security(("bearer" = []))
)]
pub(super) async fn reload(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<ReloadResponse>, ApiError> {
    let request: ReloadRequest =
        if body.iter().all(u8::is_ascii_whitespace) { ReloadRequest::default() } else { json::parse(&body)? };
    let service = state.service()?;
    let reloaded = tokio::task::spawn_blocking(move || service.reload(request.version.as_deref()))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(reloaded.map_err(refused)?.into()))
}

/// `POST /admin/rollback`: back to the bundle served before this one.
#[utoipa::path(
    post,
    path = "/admin/rollback",
    tag = "admin",
    responses((status = 200, description = "The bundle serving now.", body = ReloadResponse), AdminErrors),
    security(("bearer" = []))
)]
pub(super) async fn rollback(State(state): State<AppState>) -> Result<Json<ReloadResponse>, ApiError> {
    let service = state.service()?;
    // It may wait for a reload in progress: off the runtime's workers.
    let rolled_back =
        tokio::task::spawn_blocking(move || service.rollback()).await.map_err(|e| ApiError::internal(&e))?;
    Ok(Json(rolled_back.map_err(refused)?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        headers
    }

    #[test]
    fn only_the_configured_token_passes() {
        let token = AdminToken::new("s3cret");
        assert!(token.check(&bearer("s3cret")).is_ok());
        for wrong in ["s3cre", "s3cret ", "S3CRET", ""] {
            assert_eq!(token.check(&bearer(wrong)).unwrap_err().kind, ErrorKind::Unauthorized, "{wrong:?}");
        }
        assert_eq!(token.check(&HeaderMap::new()).unwrap_err().kind, ErrorKind::Unauthorized);
        assert_eq!(AdminToken::new("").check(&bearer("")).unwrap_err().kind, ErrorKind::AdminDisabled);
    }

    /// RFC 7235: the scheme's name is case-insensitive; spaces may repeat.
    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        let token = AdminToken::new("s3cret");
        for value in ["bearer s3cret", "BEARER s3cret", "Bearer   s3cret"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert!(token.check(&headers).is_ok(), "{value:?}");
        }
        for value in ["Bearers3cret", "Basic s3cret", "Bear s3cret"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert!(token.check(&headers).is_err(), "{value:?}");
        }
    }
}
