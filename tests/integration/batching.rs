//! Dynamic batching and the embedding cache with the real encoder.

use std::sync::Arc;

use shoprank::{Batcher, BatchingSettings, EmbedError, Embedder, Metrics, Ticket};

use crate::common;

fn settings(max_queued_texts: usize) -> BatchingSettings {
    BatchingSettings {
        max_batch_tokens: 512,
        max_batch_texts: 16,
        max_queued_texts,
        max_request_tokens: 4096,
        max_queue_wait_ms: 60_000,
        background_batch_texts: 4,
        background_every_batches: 4,
    }
}

#[test]
fn concurrent_batched_calls_return_exactly_the_unbatched_vectors() {
    let encoder = common::encoder();
    let texts: Vec<String> = (0..40)
        .map(|i| format!("product {i}: {}", "hand-made ceramic mug with a glazed finish ".repeat(i % 7 + 1)))
        .collect();
    let expected: Vec<Vec<f32>> = texts.iter().map(|t| encoder.embed(&[t.as_str()], 1).unwrap().remove(0)).collect();

    let metrics = Metrics::new();
    let batcher = Arc::new(Batcher::start(encoder.clone(), settings(1000), metrics.clone()));
    std::thread::scope(|scope| {
        for chunk in texts.chunks(5).zip(expected.chunks(5)) {
            let (batcher, encoder) = (batcher.clone(), encoder.clone());
            scope.spawn(move || {
                let tokenized = chunk.0.iter().map(|t| encoder.tokenize(t).unwrap()).collect();
                let got = batcher.embed(tokenized, &Ticket::detached()).unwrap();
                for (g, e) in got.iter().zip(chunk.1) {
                    let diff = g.iter().zip(e).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                    assert!(diff <= 1e-5, "batched vector differs by {diff}");
                }
            });
        }
    });
    // Eight requests of five texts were served by fewer forward passes than texts.
    let passes = metrics.encoder_forward.get_sample_count();
    assert!(passes < 40, "{passes} forward passes for 40 texts");
}

#[test]
fn a_full_queue_is_refused_not_grown() {
    let batcher = Batcher::start(common::encoder(), settings(4), Metrics::new());
    let encoder = common::encoder();
    let texts = (0..5).map(|i| encoder.tokenize(&format!("text {i}")).unwrap()).collect();
    match batcher.embed(texts, &Ticket::detached()) {
        Err(EmbedError::QueueFull { limit: 4, .. }) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
}

#[test]
fn the_cache_serves_repeats_and_never_mixes_texts() {
    let metrics = Metrics::new();
    let embedder = Embedder::new(common::encoder(), settings(1000), 1 << 20, metrics.clone());
    let first = embedder.embed(&["red mug", "blue mug", "red mug"], &Ticket::detached()).unwrap();
    assert_eq!(first[0], first[2], "the same text twice gives one vector");
    assert_ne!(first[0], first[1]);
    assert_eq!(metrics.encoder_batch_texts.get_sample_sum(), 2.0, "a repeated text is encoded once");
    let again = embedder.embed(&["blue mug", "red mug"], &Ticket::detached()).unwrap();
    assert_eq!((again[0].clone(), again[1].clone()), (first[1].clone(), first[0].clone()));
    assert_eq!(metrics.cache_hits.get(), 2);
}
