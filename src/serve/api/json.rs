//! A JSON extractor whose every failure is an [`ApiError`] naming the
//! problem and, for data errors, the field path (`candidates[3].price`).
//!
//! It accepts any content type: `curl -d @file.json` sends
//! `application/x-www-form-urlencoded`, and refusing that would only annoy.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::body_too_large()
            } else {
                ApiError::malformed_json(rejection.body_text())
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses a body, telling syntax errors (400) from data errors (422).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        if message.starts_with("number out of range") {
            return ApiError::invalid("non_finite_number", format!("{path}: number is not finite ({message})"));
        }
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::invalid_field(if path == "." { message } else { format!("{path}: {message}") })
            }
            _ => ApiError::malformed_json(format!("body is not valid JSON: {message}")),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::malformed_json(format!("trailing characters after the JSON body: {e}")))?;
    Ok(value)
}
