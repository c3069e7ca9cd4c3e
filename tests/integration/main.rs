//! Integration tests, one binary with a module per topic (compiled and
//! linked once). They use the real weights of both encoders
//! (all-MiniLM-L6-v2 and the Chinese m3e-small): `scripts/test` fetches them
//! first (`scripts/fetch-model all`).

mod api;
mod batching;
mod catalog;
mod chinese;
mod cli;
mod common;
mod conformance;
mod console;
mod deadline;
mod encoder;
mod erasure;
mod explanations;
mod feedback;
mod live_stats;
mod openapi;
mod real_data;
mod resilience;
mod scores;
mod search;
mod snapshot;
mod store;
