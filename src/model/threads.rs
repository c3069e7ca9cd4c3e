//! The one compute thread pool: rayon's global pool, which the encoder's
//! kernels, the serving head (a request's first layer, shared with one of
//! its threads; large candidate sets' later layers) and Candle's ops
//! (training, evaluation's features) all use.

/// Sizes the pool to `threads` workers, or when 0 to `RAYON_NUM_THREADS`
/// if set, else one per CPU, and returns the count.
///
/// It also sets `RAYON_NUM_THREADS`, which Candle reads before every matrix
/// product: unset, Candle counts the physical cores from `/proc/cpuinfo` on
/// each one (measured at 4% of a `/recommend` with 100 candidates).
///
/// Call it once, at start-up, before any other thread runs: it changes the
/// process environment, and the pool can be built only once.
pub fn configure_threads(threads: usize) -> Result<usize, rayon::ThreadPoolBuildError> {
    // 0: what the operator's RAYON_NUM_THREADS says, else one per CPU.
    let from_environment = || std::env::var("RAYON_NUM_THREADS").ok()?.parse().ok().filter(|&n: &usize| n > 0);
    let threads = match threads {
        0 => from_environment().unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        n => n,
    };
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    Ok(threads)
}
