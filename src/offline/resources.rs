//! Wall time and peak memory of the stages of an offline run, for its log
//! and its training record. Peak memory is the process's resident high-water
//! mark (`VmHWM`), reset at each stage's start where Linux allows it
//! (`/proc/self/clear_refs`), so each stage reports its own peak; elsewhere
//! it is absent.

use std::time::Instant;

use crate::model::bundle::StageRecord;

/// A stage being measured; [`Stage::finish`] records it.
pub(crate) struct Stage {
    name: String,
    started: Instant,
}

impl Stage {
    pub(crate) fn start(name: impl Into<String>) -> Self {
        // "5" resets the peak RSS counter (Linux >= 4.0); failure only means
        // the peak reported is the process's so far.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        Self { name: name.into(), started: Instant::now() }
    }

    pub(crate) fn finish(self) -> StageRecord {
        let record = StageRecord {
            name: self.name,
            seconds: self.started.elapsed().as_secs_f64(),
            peak_rss_mib: peak_rss_mib(),
        };
        tracing::info!(stage = record.name, seconds = record.seconds, peak_rss_mib = record.peak_rss_mib, "stage done");
        record
    }
}

/// The resident high-water mark in MiB, from `/proc/self/status`.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_reports_its_time_and_on_linux_its_peak_memory() {
        let stage = Stage::start("allocate");
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let record = stage.finish();
        assert_eq!(record.name, "allocate");
        assert!(record.seconds >= 0.0);
        if cfg!(target_os = "linux") {
            assert!(record.peak_rss_mib.unwrap() >= 64.0, "{record:?}");
        }
    }
}
