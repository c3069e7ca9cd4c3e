//! Calibration: what a score means as a probability.
//!
//! The head is trained on one positive per eight uniform negatives, so its
//! raw output is a probability under that mix, not under a shop's: a
//! catalog of 3,600 items and a shopper who buys 20 new ones in a month put
//! the real rate near 0.6%. A storefront that thresholds the score, or
//! multiplies it by a price, needs the real rate.
//!
//! [`Calibration`] maps the head's mean logit `z` to a probability by
//! isotonic regression (Zadrozny & Elkan, KDD 2002): the validation pairs
//! sorted by logit, pooled into blocks whose purchase rates increase (pool
//! adjacent violators), and the map interpolated linearly, in logit space,
//! between the blocks' mean logits and rates, so it rises strictly and
//! never ties two different logits. Beyond the first and last block it goes
//! on at the slope of a Platt fit (`σ(slope·z + intercept)`, Platt 1999),
//! fitted on the same pairs. Isotonic rather than Platt alone: with millions
//! of pairs, a two-parameter sigmoid fits the bulk near the base rate and
//! misses the top, where a storefront acts (Niculescu-Mizil & Caruana, ICML
//! 2005, found isotonic the better of the two once data is plentiful).
//!
//! `train` fits the map on the inner-validation window at the real base
//! rate, every catalog item a validation shopper did not buy counting as a
//! negative. The shoppers are a share kept out of the refit and their pairs
//! are scored by the refitted weights that ship, so the map corrects the
//! very weights it is applied to, on shoppers they never trained on (a map
//! fitted on the pre-refit weights understated the refit head's top 10 by
//! 15.5%; see `offline::train`). It ships in the bundle's manifest and the
//! head applies it. The
//! map is strictly increasing (checked at load), so it never changes an
//! order: NDCG and every other ranking metric are the same with it.
//!
//! Isotonic regression is written here: the crates that have it are either
//! under the LGPL (`pav_regression`) or a beta pulling in a whole
//! scikit-learn port (`sklears-isotonic`), for some thirty lines.

use serde::{Deserialize, Serialize};

/// The smallest isotonic block, as a share of the pairs (see
/// [`Calibration::fit_isotonic`]): at most 2,000 knots. Fitting is
/// training's, so it is built with the `offline` layer only.
#[cfg(any(test, feature = "offline"))]
pub(crate) const MIN_BLOCK_SHARE: f64 = 1.0 / 2_000.0;
/// The smallest isotonic block in pairs, whatever the share.
#[cfg(any(test, feature = "offline"))]
pub(crate) const MIN_BLOCK_PAIRS: f64 = 100.0;

/// A fitted logit map and what it was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Calibration {
    /// The Platt fit `σ(slope·z + intercept)` on the same pairs, `z` the
    /// members' mean logit: the map beyond the knots (and all of it when
    /// there are none).
    pub slope: f64,
    pub intercept: f64,
    /// `[mean logit, purchase rate]` of each isotonic block, both strictly
    /// increasing; the map interpolates between them in logit space.
    #[serde(default)]
    pub knots: Vec<[f32; 2]>,
    /// The event the calibrated score is the probability of, in words.
    pub event: String,
    /// The window the event's horizon comes from, in days.
    pub horizon_days: u32,
    /// The pairs the map was fitted on.
    pub fitted_on: CalibrationData,
}

/// The held-out pairs a map was fitted on: their window, size and base rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CalibrationData {
    /// `YYYY-MM-DD..YYYY-MM-DD`, the end exclusive.
    pub window: String,
    pub users: usize,
    pub pairs: usize,
    pub positives: usize,
    /// The users were kept out of the refit, and their pairs were scored by
    /// the shipped (refit) weights; `false` (and in bundles written before
    /// the field): scored by the selected pre-refit weights.
    #[serde(default)]
    pub held_out: bool,
}

impl CalibrationData {
    pub(crate) fn base_rate(&self) -> f64 {
        self.positives as f64 / self.pairs.max(1) as f64
    }
}

/// Why a manifest's calibration cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("calibration: {0}")]
pub struct InvalidCalibration(String);

impl Calibration {
    /// The event a map fitted on a `horizon_days` window predicts.
    #[cfg(any(test, feature = "offline"))]
    pub(crate) fn event_for(horizon_days: u32) -> String {
        format!(
            "the shopper buys this item, one they have not bought before, within the next {horizon_days} days \
             (among shoppers who buy something new in that time)"
        )
    }

    /// Fits `σ(a·z + b)` to `(logit, bought)` pairs by Newton's method on
    /// the log loss (two parameters, so each step solves a 2×2 system).
    /// `None` when the pairs cannot identify a map: no positive or no
    /// negative, or logits that do not vary.
    #[cfg(any(test, feature = "offline"))]
    pub(crate) fn fit(pairs: &[(f32, bool)]) -> Option<(f64, f64)> {
        let positives = pairs.iter().filter(|(_, y)| *y).count();
        if positives == 0 || positives == pairs.len() {
            return None;
        }
        // Fitted on logits less their mean, then shifted back: a head
        // trained briefly on a small log scores every pair within a hair of
        // one logit, and the uncentred 2×2 system then loses its
        // determinant to cancellation (Σw·z² · Σw ≈ (Σw·z)²).
        let centre = pairs.iter().map(|&(z, _)| z as f64).sum::<f64>() / pairs.len() as f64;
        let (mut a, mut b) = (1.0f64, 0.0f64);
        // Start at the base rate, so the first steps are small.
        let rate = positives as f64 / pairs.len() as f64;
        b += (rate / (1.0 - rate)).ln();
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0f64, 0f64, 0f64, 0f64, 0f64);
            for &(z, y) in pairs {
                let z = z as f64 - centre;
                let p = sigmoid(a * z + b);
                let residual = p - if y { 1.0 } else { 0.0 };
                let w = (p * (1.0 - p)).max(1e-12);
                ga += residual * z;
                gb += residual;
                haa += w * z * z;
                hab += w * z;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-12 {
                return None;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            a -= da;
            b -= db;
            if da.abs() < 1e-9 && db.abs() < 1e-9 {
                break;
            }
        }
        let b = b - a * centre;
        (a.is_finite() && b.is_finite() && a > 0.0).then_some((a, b))
    }

    /// The isotonic knots of `(logit, bought)` pairs: pool adjacent
    /// violators over the pairs sorted by logit, then one knot per block
    /// (its mean logit, its purchase rate). Rates are kept within
    /// `[1e-6, 1 − 1e-6]` so their logits are finite; a block whose rate
    /// would then not rise above its neighbour's is pooled into it. Blocks
    /// are then joined with their neighbours up to [`MIN_BLOCK_SHARE`] of
    /// the pairs (at least [`MIN_BLOCK_PAIRS`]): PAV leaves tiny blocks at
    /// the top (three pairs, all bought: a rate of 1) that would make the
    /// best-scored items' probabilities noise. Joining neighbours keeps the
    /// rates rising (a joined rate lies between the two).
    #[cfg(any(test, feature = "offline"))]
    pub(crate) fn fit_isotonic(pairs: &mut [(f32, bool)]) -> Vec<[f32; 2]> {
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        // (sum of logits, positives, count) per block.
        let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
        let rate = |b: &(f64, f64, f64)| (b.1 / b.2).clamp(1e-6, 1.0 - 1e-6);
        for &(z, bought) in pairs.iter() {
            blocks.push((f64::from(z), if bought { 1.0 } else { 0.0 }, 1.0));
            while blocks.len() > 1 {
                let (last, before) = (blocks[blocks.len() - 1], blocks[blocks.len() - 2]);
                // Pool while the rate does not rise, or the logits do not.
                let flat_logit = last.0 / last.2 <= before.0 / before.2;
                if rate(&before) < rate(&last) && !flat_logit {
                    break;
                }
                blocks.pop();
                let merged = blocks.last_mut().expect("two blocks");
                *merged = (merged.0 + last.0, merged.1 + last.1, merged.2 + last.2);
            }
        }
        let least = (pairs.len() as f64 * MIN_BLOCK_SHARE).max(MIN_BLOCK_PAIRS);
        let mut joined: Vec<(f64, f64, f64)> = Vec::new();
        let mut open: Option<(f64, f64, f64)> = None;
        for block in blocks {
            let grown = match open.take() {
                Some(o) => (o.0 + block.0, o.1 + block.1, o.2 + block.2),
                None => block,
            };
            if grown.2 >= least {
                joined.push(grown);
            } else {
                open = Some(grown);
            }
        }
        if let Some(rest) = open {
            match joined.last_mut() {
                Some(last) => *last = (last.0 + rest.0, last.1 + rest.1, last.2 + rest.2),
                None => joined.push(rest),
            }
        }
        joined.iter().map(|b| [(b.0 / b.2) as f32, rate(b) as f32]).collect()
    }

    /// Refuses a map that would not be a strictly increasing probability.
    pub(crate) fn validate(&self) -> Result<(), InvalidCalibration> {
        if !(self.slope.is_finite() && self.slope > 0.0) {
            return Err(InvalidCalibration(format!(
                "slope {} must be finite and > 0 (the map must keep the order)",
                self.slope
            )));
        }
        if !self.intercept.is_finite() {
            return Err(InvalidCalibration(format!("intercept {} is not finite", self.intercept)));
        }
        if let Some(bad) = self.knots.iter().position(|[z, p]| !(z.is_finite() && *p > 0.0 && *p < 1.0)) {
            return Err(InvalidCalibration(format!(
                "knot {bad} {:?} must hold a finite logit and a rate in (0, 1)",
                self.knots[bad]
            )));
        }
        if let Some(bad) = self.knots.windows(2).position(|w| !(w[0][0] < w[1][0] && w[0][1] < w[1][1])) {
            return Err(InvalidCalibration(format!(
                "knots {bad} and {} do not both rise ({:?}, {:?}): the map must keep the order",
                bad + 1,
                self.knots[bad],
                self.knots[bad + 1]
            )));
        }
        let data = &self.fitted_on;
        if data.positives > data.pairs {
            return Err(InvalidCalibration(format!(
                "fitted_on has {} positives among {} pairs",
                data.positives, data.pairs
            )));
        }
        Ok(())
    }

    /// The map in the form the head applies (see [`LogitMap`]).
    pub(crate) fn logit_map(&self) -> LogitMap {
        let knots = self.knots.iter().map(|&[z, p]| (z, (p / (1.0 - p)).ln())).collect();
        LogitMap { slope: self.slope as f32, intercept: self.intercept as f32, knots }
    }
}

/// The calibration as the head applies it: knots as `(logit, calibrated
/// logit)`, linear between them and at the Platt slope beyond; with no
/// knots, `σ(slope·z + intercept)`; the identity is the plain sigmoid.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogitMap {
    slope: f32,
    intercept: f32,
    knots: Vec<(f32, f32)>,
}

impl LogitMap {
    /// The uncalibrated head: `σ(z)`.
    pub(crate) fn identity() -> Self {
        Self { slope: 1.0, intercept: 0.0, knots: Vec::new() }
    }

    /// The probability of a mean logit.
    pub(crate) fn probability(&self, logit: f32) -> f32 {
        1.0 / (1.0 + (-self.calibrated_logit(logit)).exp())
    }

    fn calibrated_logit(&self, z: f32) -> f32 {
        let knots = &self.knots;
        let (Some(first), Some(last)) = (knots.first(), knots.last()) else {
            return self.slope * z + self.intercept;
        };
        if z <= first.0 {
            return first.1 + self.slope * (z - first.0);
        }
        if z >= last.0 {
            return last.1 + self.slope * (z - last.0);
        }
        // The first knot above z; the one before it is at or below.
        let upper = knots.partition_point(|k| k.0 <= z);
        let (a, b) = (knots[upper - 1], knots[upper]);
        a.1 + (b.1 - a.1) * (z - a.0) / (b.0 - a.0)
    }
}

#[cfg(any(test, feature = "offline"))]
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs whose true probability is σ(2z − 3), drawn deterministically.
    fn pairs_from(slope: f64, intercept: f64) -> Vec<(f32, bool)> {
        let mut out = Vec::new();
        for i in 0..2_000 {
            let z = -3.0 + 6.0 * i as f64 / 2_000.0;
            let p = sigmoid(slope * z + intercept);
            // 100 pairs at each logit, the share p of them positive.
            let positives = (p * 100.0).round() as usize;
            out.extend((0..100).map(|k| (z as f32, k < positives)));
        }
        out
    }

    #[test]
    fn fitting_recovers_the_map_that_made_the_labels() {
        let (a, b) = Calibration::fit(&pairs_from(2.0, -3.0)).expect("identifiable");
        assert!((a - 2.0).abs() < 0.05, "slope {a}");
        assert!((b + 3.0).abs() < 0.05, "intercept {b}");
    }

    #[test]
    fn logits_within_a_hair_of_each_other_still_identify_a_map() {
        // A briefly trained head on a small log: every logit within 0.001
        // of -3.3, purchases rising from 2% to 8% across them.
        let mut pairs = Vec::new();
        for i in 0..200 {
            let z = -3.3 + 0.001 * i as f64 / 200.0;
            let positives = 2 + 6 * i / 200;
            pairs.extend((0..100).map(|k| (z as f32, k < positives)));
        }
        let (a, b) = Calibration::fit(&pairs).expect("identifiable");
        assert!(a > 0.0, "slope {a}");
        let mean = pairs.iter().map(|&(z, _)| sigmoid(a * z as f64 + b)).sum::<f64>() / pairs.len() as f64;
        let rate = pairs.iter().filter(|(_, y)| *y).count() as f64 / pairs.len() as f64;
        assert!((mean - rate).abs() < 1e-3, "mean predicted {mean} against rate {rate}");
    }

    #[test]
    fn labels_of_one_kind_identify_no_map() {
        assert_eq!(Calibration::fit(&[(0.1, false), (0.5, false)]), None);
        assert_eq!(Calibration::fit(&[(0.1, true)]), None);
        assert_eq!(Calibration::fit(&[]), None);
    }

    #[test]
    fn a_map_that_would_reverse_or_break_the_order_is_refused() {
        let data = CalibrationData { window: "w".into(), users: 1, pairs: 10, positives: 1, held_out: false };
        let map = |slope: f64, intercept: f64| Calibration {
            slope,
            intercept,
            knots: vec![[-3.0, 0.01], [1.0, 0.2]],
            event: Calibration::event_for(30),
            horizon_days: 30,
            fitted_on: data.clone(),
        };
        assert!(map(0.8, -4.0).validate().is_ok());
        assert!(map(0.0, -4.0).validate().is_err());
        assert!(map(-1.0, -4.0).validate().is_err());
        assert!(map(f64::NAN, -4.0).validate().is_err());
        assert!(map(1.0, f64::INFINITY).validate().is_err());
        let mut flat = map(0.8, -4.0);
        flat.knots = vec![[-3.0, 0.01], [1.0, 0.01]];
        assert!(flat.validate().unwrap_err().to_string().contains("do not both rise"));
        flat.knots = vec![[-3.0, 0.0]];
        assert!(flat.validate().is_err(), "a rate of 0 has no logit");
    }

    #[test]
    fn isotonic_knots_rise_and_follow_the_observed_rates() {
        let mut pairs = pairs_from(2.0, -3.0);
        // A violation in the middle: these should pool with their neighbours.
        pairs.extend((0..50).map(|_| (0.0f32, true)));
        let knots = Calibration::fit_isotonic(&mut pairs);
        assert!(knots.len() > 10, "{}", knots.len());
        assert!(knots.windows(2).all(|w| w[0][0] < w[1][0] && w[0][1] < w[1][1]), "{knots:?}");
        // Near z = 1 the true rate is σ(-1) ≈ 0.27.
        let near = knots.iter().min_by(|a, b| (a[0] - 1.0).abs().total_cmp(&(b[0] - 1.0).abs())).unwrap();
        assert!((near[1] - 0.269).abs() < 0.05, "{near:?}");
    }

    #[test]
    fn the_map_keeps_the_order_interpolates_and_the_identity_is_the_plain_sigmoid() {
        let calibration = Calibration {
            slope: 0.7,
            intercept: -4.5,
            knots: vec![[-2.0, 0.01], [0.0, 0.05], [2.0, 0.3]],
            event: Calibration::event_for(30),
            horizon_days: 30,
            fitted_on: CalibrationData { window: "w".into(), users: 1, pairs: 10, positives: 1, held_out: false },
        };
        let map = calibration.logit_map();
        let logits = [-6.0f32, -2.0, -1.0, 0.0, 0.3, 2.0, 9.0];
        let probabilities: Vec<f32> = logits.iter().map(|&z| map.probability(z)).collect();
        assert!(probabilities.windows(2).all(|w| w[0] < w[1]), "{probabilities:?}");
        assert!((map.probability(0.0) - 0.05).abs() < 1e-6, "on a knot");
        let halfway = 1.0 / (1.0 + (-(0.5 * ((0.01f32 / 0.99).ln() + (0.05f32 / 0.95).ln()))).exp());
        assert!((map.probability(-1.0) - halfway).abs() < 1e-6, "linear in logit space between knots");
        let platt = LogitMap { knots: Vec::new(), ..map.clone() };
        assert!((platt.probability(1.0) - 1.0 / (1.0 + (-(0.7f32 - 4.5)).exp())).abs() < 1e-6);
        assert!((LogitMap::identity().probability(0.0) - 0.5).abs() < 1e-7);
    }
}
