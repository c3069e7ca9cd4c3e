//! How well the head's scores match what shoppers did, as probabilities:
//! over every (test user, candidate) pair the protocol ranks, and over the
//! pairs each user's top 10 holds, where a storefront acts on them.
//!
//! - **ECE** (expected calibration error) over equal-mass bins: the pairs
//!   sorted by score and cut into bins of equal count; the pair-weighted
//!   mean of |mean predicted − observed rate| per bin. Equal mass, because
//!   at a base rate under 1% equal-width bins would put almost every pair in
//!   the first bin (Nixon et al., "Measuring Calibration in Deep Learning",
//!   CVPR Workshops 2019).
//! - **Brier score** and **log loss** at the real base rate (every candidate
//!   a user did not buy is a negative).
//! - **Top 10**: the mean predicted probability of the items ranked in each
//!   user's top 10 against the share of them bought, overall and in
//!   equal-mass bins of those scores. A constant predictor at the base rate
//!   has an ECE near 0 and is useless; this is the part that says whether
//!   "above 5%" means above 5%.

use serde::{Deserialize, Serialize};

/// Equal-mass bins of the all-pairs reliability table.
pub(crate) const ALL_PAIRS_BINS: usize = 20;
/// Equal-mass bins of the top-10 reliability table.
pub(crate) const TOP_BINS: usize = 5;

/// One bin of a reliability table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReliabilityBin {
    pub pairs: usize,
    pub mean_predicted: f64,
    pub observed: f64,
}

impl ReliabilityBin {
    /// `(mean predicted − observed) / observed`; `None` when nothing was bought.
    pub(crate) fn relative_error(&self) -> Option<f64> {
        (self.observed > 0.0).then(|| (self.mean_predicted - self.observed) / self.observed)
    }
}

/// Calibration of one method's scores on a test period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CalibrationReport {
    pub pairs: usize,
    pub positives: usize,
    pub base_rate: f64,
    pub mean_predicted: f64,
    pub ece: f64,
    pub brier: f64,
    pub log_loss: f64,
    /// All pairs, [`ALL_PAIRS_BINS`] equal-mass bins, lowest scores first.
    pub bins: Vec<ReliabilityBin>,
    /// The pairs of every user's top 10 together.
    pub top10: ReliabilityBin,
    /// The top-10 pairs in [`TOP_BINS`] equal-mass bins, lowest scores first.
    pub top10_bins: Vec<ReliabilityBin>,
}

/// Gathers (score, bought) pairs user by user.
#[derive(Default)]
pub(crate) struct CalibrationPairs {
    all: Vec<(f32, bool)>,
    top: Vec<(f32, bool)>,
}

impl CalibrationPairs {
    /// One user's pairs: every candidate's score and whether it was bought,
    /// and the same for the candidates of that user's top 10.
    pub(crate) fn add_user(
        &mut self,
        scored: impl Iterator<Item = (f32, bool)>,
        top10: impl Iterator<Item = (f32, bool)>,
    ) {
        self.all.extend(scored);
        self.top.extend(top10);
    }

    /// The report; `None` without pairs.
    pub(crate) fn report(mut self) -> Option<CalibrationReport> {
        if self.all.is_empty() {
            return None;
        }
        let pairs = self.all.len();
        let positives = self.all.iter().filter(|(_, y)| *y).count();
        let (mut brier, mut log_loss, mut predicted) = (0f64, 0f64, 0f64);
        for &(p, y) in &self.all {
            let (p, y) = (f64::from(p), if y { 1.0 } else { 0.0 });
            predicted += p;
            brier += (p - y) * (p - y);
            let clipped = p.clamp(1e-7, 1.0 - 1e-7);
            log_loss -= y * clipped.ln() + (1.0 - y) * (1.0 - clipped).ln();
        }
        let bins = equal_mass_bins(&mut self.all, ALL_PAIRS_BINS);
        let ece =
            bins.iter().map(|b| b.pairs as f64 * (b.mean_predicted - b.observed).abs()).sum::<f64>() / pairs as f64;
        let top10 = summary(&self.top);
        let top10_bins = equal_mass_bins(&mut self.top, TOP_BINS);
        Some(CalibrationReport {
            pairs,
            positives,
            base_rate: positives as f64 / pairs as f64,
            mean_predicted: predicted / pairs as f64,
            ece,
            brier: brier / pairs as f64,
            log_loss: log_loss / pairs as f64,
            bins,
            top10,
            top10_bins,
        })
    }
}

/// Sorts `pairs` by score and cuts them into `bins` bins of equal count
/// (the last ones one pair shorter when the count does not divide).
fn equal_mass_bins(pairs: &mut [(f32, bool)], bins: usize) -> Vec<ReliabilityBin> {
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = pairs.len();
    (0..bins.min(n))
        .map(|bin| {
            let (start, end) = (bin * n / bins.min(n), (bin + 1) * n / bins.min(n));
            summary(&pairs[start..end])
        })
        .collect()
}

fn summary(pairs: &[(f32, bool)]) -> ReliabilityBin {
    let count = pairs.len().max(1) as f64;
    ReliabilityBin {
        pairs: pairs.len(),
        mean_predicted: pairs.iter().map(|(p, _)| f64::from(*p)).sum::<f64>() / count,
        observed: pairs.iter().filter(|(_, y)| *y).count() as f64 / count,
    }
}

/// The report as lines of text, for `eval`'s output.
pub(crate) fn format_calibration(report: &CalibrationReport) -> String {
    let mut out = format!(
        "calibration over {} pairs ({} bought, base rate {:.5}): mean predicted {:.5}, ECE {:.5} ({} equal-mass bins), \
         Brier {:.5}, log loss {:.5}\n",
        report.pairs,
        report.positives,
        report.base_rate,
        report.mean_predicted,
        report.ece,
        ALL_PAIRS_BINS,
        report.brier,
        report.log_loss
    );
    let line = |name: &str, bin: &ReliabilityBin| {
        let relative = bin.relative_error().map_or("n/a".to_string(), |e| format!("{:+.1}%", e * 100.0));
        format!(
            "  {name:<12} {:>7} pairs  predicted {:.4}  observed {:.4}  ({relative})\n",
            bin.pairs, bin.mean_predicted, bin.observed
        )
    };
    out.push_str(&line("top 10", &report.top10));
    for (i, bin) in report.top10_bins.iter().enumerate() {
        out.push_str(&line(&format!("top-10 bin {}", i + 1), bin));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calibrated_predictor_scores_near_zero_and_an_overconfident_one_does_not() {
        // Scores 0.1 and 0.3, each bought at exactly that rate.
        let mut calibrated = CalibrationPairs::default();
        let mut overconfident = CalibrationPairs::default();
        for (p, bought_of_10) in [(0.1f32, 1), (0.3, 3)] {
            for _ in 0..100 {
                let pairs: Vec<(f32, bool)> = (0..10).map(|k| (p, k < bought_of_10)).collect();
                calibrated.add_user(pairs.iter().copied(), pairs.iter().copied());
                overconfident
                    .add_user(pairs.iter().map(|&(p, y)| (p * 2.0, y)), pairs.iter().map(|&(p, y)| (p * 2.0, y)));
            }
        }
        let good = calibrated.report().unwrap();
        assert!(good.ece < 1e-6, "{}", good.ece);
        assert!((good.base_rate - 0.2).abs() < 1e-9);
        assert!((good.top10.mean_predicted - good.top10.observed).abs() < 1e-6);
        assert_eq!(good.top10_bins.len(), TOP_BINS);
        let bad = overconfident.report().unwrap();
        assert!((bad.ece - 0.2).abs() < 1e-6, "{}", bad.ece);
        assert!(bad.brier > good.brier && bad.log_loss > good.log_loss);
        assert!((bad.top10.relative_error().unwrap() - 1.0).abs() < 1e-6, "twice the rate: +100%");
    }

    #[test]
    fn bins_have_equal_mass_and_ascend() {
        let mut pairs: Vec<(f32, bool)> = (0..103).map(|i| ((i * 37 % 103) as f32, i % 7 == 0)).collect();
        let bins = equal_mass_bins(&mut pairs, 5);
        assert_eq!(bins.iter().map(|b| b.pairs).sum::<usize>(), 103);
        assert!(bins.iter().all(|b| b.pairs == 20 || b.pairs == 21));
        assert!(bins.windows(2).all(|w| w[0].mean_predicted < w[1].mean_predicted));
        assert!(CalibrationPairs::default().report().is_none());
    }
}
