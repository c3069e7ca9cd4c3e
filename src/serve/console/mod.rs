//! The console: a page for merchandisers and operators, served by shoprank
//! itself at `GET /console`, that shows what the service does — a search
//! box and a shopper panel with the ranked items' scores and reasons, the
//! catalog, the model and its training record, the A/B variants' live
//! metrics, and reload and rollback behind the admin token.
//!
//! Plain HTML, CSS and JavaScript modules, written by hand and compiled into
//! the binary (`include_str!`), so installing or building shoprank needs no
//! Node step and the page always matches the server it came from. The page
//! is a client of the documented API and of nothing else: every request it
//! makes is a route of `/openapi.json` (a test reads the JavaScript for
//! them). It puts every text into the page as text, never as markup (item
//! texts are the storefront's data), and keeps the admin token in a
//! JavaScript variable only, never in storage or a cookie.
//!
//! - [`assets`]: the files, their paths and content types.
//! - [`headers`]: each answer's headers: the content type and a strict
//!   Content-Security-Policy.
//!
//! This module names nothing of `serve::api` (the layering check); the API
//! mounts [`routes`] beside its own, outside admission: a page must load
//! while the API is saturated, to show why.

mod assets;
mod headers;

use axum::routing::get;
use axum::Router;

/// `GET /console` and one route per asset, for any router state (the
/// console has none).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    assets::ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { headers::answer(asset) }))
    })
}
