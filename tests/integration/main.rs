//! Integration tests, one binary with a module per topic (compiled and
//! linked once). They use the real all-MiniLM-L6-v2 weights: `make test`
//! fetches them first (scripts/fetch-model).

mod api;
mod batching;
mod catalog;
mod chinese;
mod cli;
mod common;
mod encoder;
mod feedback;
mod openapi;
mod real_data;
mod resilience;
mod search;
mod store;
