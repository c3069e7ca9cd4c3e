//! Memory bound of the embedding cache (issue: RSS ≤ 400 MB with 100,000 cached
//! item embeddings, no growth under a long run). Its own test binary, so the
//! process holds nothing but the encoder and the cache being measured.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use shoprank::{EmbeddingCache, Encoder, EncoderFiles, Metrics, Settings};

/// Resident set size of this process, from /proc (Linux).
fn rss_mib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

#[test]
fn a_full_cache_of_100k_embeddings_stays_under_400_mib_and_does_not_grow() {
    let Some(start) = rss_mib() else { return };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let settings = Settings::load(None).unwrap().rooted_at(&root);
    let files = EncoderFiles::from_dir(&root.join("models/all-MiniLM-L6-v2")).expect("run scripts/fetch-model");
    let encoder = Encoder::load(&files, &settings.encoder).unwrap();
    let dim = encoder.dim();
    encoder.embed(&["touch every weight once"], 1).unwrap();

    let entries = 100_000;
    // The byte budget of 100,000 entries (vector + the fixed 96 bytes).
    let budget = entries * (dim * 4 + 96);
    let cache = EmbeddingCache::new(budget, Metrics::new());
    let title = |i: usize| format!("product {i}: hand-painted ceramic mug with gift box, 350 ml");
    let vector = |i: usize| -> Arc<[f32]> { (0..dim).map(|d| ((i * 31 + d) % 97) as f32 / 97.0).collect() };
    for i in 0..entries {
        cache.insert(EmbeddingCache::key(&title(i)), vector(i));
    }
    let full = rss_mib().unwrap();
    // A long run: as many again new texts, each evicting the oldest entry.
    for i in entries..2 * entries {
        cache.insert(EmbeddingCache::key(&title(i)), vector(i));
    }
    let after = rss_mib().unwrap();
    // Texts are hashed, not kept: 200 unique 1.9 MB texts cost what short ones do.
    let huge = "ceramic mug ".repeat(1_900_000 / 12);
    for i in 0..200 {
        cache.insert(EmbeddingCache::key(&format!("{huge}{i}")), vector(i));
        assert!(cache.bytes() <= budget, "cache bytes {} over the budget {budget}", cache.bytes());
    }
    let after_huge = rss_mib().unwrap();
    let _ = writeln!(
        std::io::stderr(),
        "memory: start {start:.0} MiB, encoder + {entries} cached embeddings {full:.0} MiB, after {entries} more \
         (evicting) {after:.0} MiB, after 200 texts of 1.9 MB {after_huge:.0} MiB"
    );
    assert_eq!(cache.len(), entries, "the cache is bounded");
    assert!(full < 400.0, "RSS {full:.0} MiB with {entries} cached embeddings");
    assert!(after < full * 1.1, "RSS grew from {full:.0} to {after:.0} MiB while evicting");
    assert!(after_huge < full * 1.1, "RSS grew from {full:.0} to {after_huge:.0} MiB with huge texts");
}
