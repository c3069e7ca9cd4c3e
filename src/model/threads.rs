//! The one compute thread pool: rayon's global pool, which the encoder's
//! kernels and Candle's (the scoring head's) both use.

/// Sizes the pool to `threads` workers, or one per CPU when 0, and returns
/// the count.
///
/// It also sets `RAYON_NUM_THREADS`, which Candle reads before every matrix
/// product: unset, Candle counts the physical cores from `/proc/cpuinfo` on
/// each one (measured at 4% of a `/recommend` with 100 candidates).
///
/// Call it once, at start-up, before any other thread runs: it changes the
/// process environment, and the pool can be built only once.
pub fn configure_threads(threads: usize) -> Result<usize, rayon::ThreadPoolBuildError> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    Ok(threads)
}
