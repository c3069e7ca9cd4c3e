//! What the embed module's unit tests share: forward passes that record or
//! fail on purpose, small batching settings, and token ids as texts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::BatchingSettings;
use crate::model::encoder::{EncoderError, TokenizedText};

use super::BatchForward;

/// Records each batch's first token ids, and takes `delay` per batch.
pub(super) struct Recording {
    pub(super) batches: Mutex<Vec<Vec<u32>>>,
    delay: Duration,
}

impl Recording {
    pub(super) fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self { batches: Mutex::default(), delay })
    }
}

impl BatchForward for Recording {
    fn forward(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EncoderError> {
        std::thread::sleep(self.delay);
        self.batches.lock().unwrap().push(batch.iter().map(|t| t.ids[1]).collect());
        Ok(batch.iter().map(|t| vec![t.ids[1] as f32]).collect())
    }
}

pub(super) fn settings() -> BatchingSettings {
    BatchingSettings {
        max_batch_tokens: 512,
        max_batch_texts: 1,
        max_queued_texts: 100,
        max_request_tokens: 1000,
        max_queue_wait_ms: 60_000,
        background_batch_texts: 1,
        background_every_batches: 4,
    }
}

pub(super) fn text(id: u32) -> TokenizedText {
    TokenizedText { ids: vec![101, id, 102] }
}

pub(super) fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
