//! The console's answers: the asset's content type, and headers that keep
//! a page showing the storefront's texts safe even if one slipped through
//! as markup — a Content-Security-Policy that runs only the console's own
//! scripts and styles (no inline script, no `eval`, no other origin, no
//! framing), and no referrer. `X-Content-Type-Options: nosniff` is added to
//! every answer by the API's middleware.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY};
use axum::response::{IntoResponse, Response};

use super::assets::Asset;

/// Only the console's own files, and requests to its own origin (the API).
pub(crate) const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The asset, with its headers. `no-cache`: the browser revalidates, so a
/// new binary's page is never mixed with an old one's scripts.
pub(crate) fn answer(asset: &'static Asset) -> Response {
    (
        [
            (CONTENT_TYPE, asset.content_type),
            (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
            (REFERRER_POLICY, "no-referrer"),
            (CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}
