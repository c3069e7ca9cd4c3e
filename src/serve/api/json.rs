//! A JSON extractor whose every failure is an [`ApiError`] naming the
//! problem and, for data errors, the field path (`candidates[3].price`).
//!
//! It accepts any content type: `curl -d @file.json` sends
//! `application/x-www-form-urlencoded`, and refusing that would only annoy.
//!
//! Objects must be objects: serde's derived structs also accept a JSON
//! array of their fields in order, so `["red mug", …]` would pass for a
//! request. The body, and every nested object the request types mark with
//! [`object`] or [`objects`], is read as a map only.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::error::{ApiError, ErrorKind};
use super::middleware::BodyDeadline;

pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Admitted requests carry the instant their body must be in by.
        let deadline = request.extensions().get::<BodyDeadline>().copied();
        let read = Bytes::from_request(request, state);
        let read = match deadline {
            Some(BodyDeadline { at, timeout }) => {
                tokio::time::timeout_at(at.into(), read).await.map_err(|_| ApiError::body_timeout(timeout.as_secs()))?
            }
            None => read.await,
        };
        let bytes = read.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::body_too_large()
            } else {
                ApiError::new(ErrorKind::MalformedJson, rejection.body_text())
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses a body, telling syntax errors (400) from data errors (422).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map(|Object(value)| value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        if message.starts_with("number out of range") {
            return ApiError::new(ErrorKind::NonFiniteNumber, format!("{path}: number is not finite ({message})"));
        }
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::new(ErrorKind::InvalidField, if path == "." { message } else { format!("{path}: {message}") })
            }
            _ => ApiError::new(ErrorKind::MalformedJson, format!("body is not valid JSON: {message}")),
        }
    })?;
    deserializer.end().map_err(|e| {
        ApiError::new(ErrorKind::MalformedJson, format!("trailing characters after the JSON body: {e}"))
    })?;
    Ok(value)
}

/// A `T` read from a JSON object only (see the module docs).
pub(crate) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

/// For `#[serde(deserialize_with)]`: a nested struct, from an object only.
pub(crate) fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    Object::deserialize(deserializer).map(|Object(value)| value)
}

/// For `#[serde(deserialize_with)]`: a list of structs, each from an object.
pub(crate) fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    let list: Vec<Object<T>> = Vec::deserialize(deserializer)?;
    Ok(list.into_iter().map(|Object(value)| value).collect())
}

/// As [`objects`], for an optional list (`null` or absent: `None`).
pub(crate) fn optional_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Vec<T>>, D::Error> {
    let list: Option<Vec<Object<T>>> = Option::deserialize(deserializer)?;
    Ok(list.map(|list| list.into_iter().map(|Object(value)| value).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(deserialize_with = "object")]
        inner: Inner,
        #[serde(default, deserialize_with = "objects")]
        list: Vec<Inner>,
    }

    #[test]
    fn objects_are_read_from_objects_only() {
        let ok: Outer = parse(br#"{"inner": {"a": 1}, "list": [{"a": 2}]}"#).unwrap();
        assert_eq!(ok, Outer { inner: Inner { a: 1 }, list: vec![Inner { a: 2 }] });
        for (body, path) in [
            (&br#"[{"a": 1}, []]"#[..], "."),
            (br#"{"inner": [1]}"#, "inner"),
            (br#"{"inner": {"a": 1}, "list": [[2]]}"#, "list[0]"),
        ] {
            let error = parse::<Outer>(body).unwrap_err();
            assert_eq!(error.kind, ErrorKind::InvalidField, "{error:?}");
            assert!(error.message.contains("expected a JSON object"), "{error:?}");
            assert!(path == "." || error.message.starts_with(path), "{error:?}");
        }
        let unknown = parse::<Outer>(br#"{"inner": {"a": 1, "b": 2}}"#).unwrap_err();
        assert!(unknown.message.starts_with("inner.b") || unknown.message.contains("unknown field `b`"), "{unknown:?}");
    }
}
