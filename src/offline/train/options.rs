//! `shoprank train`'s options, checked once before any work starts, so a
//! bad value is a clear error instead of a panic an hour into a run.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub t_test: i64,
    pub t_val: i64,
    /// Training windows before `t_val`.
    pub windows: usize,
    pub window_days: i64,
    /// Negatives sampled per positive.
    pub negatives: usize,
    /// Share of examples whose item is shown as a new product (statistics
    /// hidden), so the head learns to score items the log does not know.
    pub cold_fraction: f64,
    /// Share of users who also get a search session (a pseudo-query from an
    /// item they bought), so the head learns what a query match is worth.
    pub query_fraction: f64,
    /// Share of the search sessions whose query has one word mistyped (a
    /// letter dropped or two swapped), so the head learns typo matches.
    #[serde(default)]
    pub typo_fraction: f64,
    /// Also draw negatives among the items most strongly linked to the history.
    pub hard_negatives: bool,
    /// Share of the (not hard) negatives drawn by popularity; the rest are uniform.
    pub popular_share: f64,
    pub hidden: Vec<usize>,
    pub max_epochs: usize,
    pub patience: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub dropout: f32,
    pub seed: u64,
    /// MLPs trained from different seeds whose logits the head averages.
    pub members: usize,
    pub refit: bool,
    /// Share of the validation window's users held out of the refit, so the
    /// calibration map is fitted on the weights that ship, scored on users
    /// they never trained on (without a refit every validation user serves).
    pub calibration_share: f64,
    /// Use at most this many users per window (quick runs and tests).
    pub max_users: Option<usize>,
    /// Most (validation user × catalog item) pairs model selection ranks
    /// after each epoch; above it, a seeded sample of the validation users.
    /// Each pair keeps its 22 numeric features (92 bytes), so this bounds
    /// each validator's memory (16M pairs: about 1.5 GB); with a refit the
    /// shoppers held out for calibration get a second one, as large at most.
    pub max_validation_pairs: usize,
    /// Most training examples (windows and refit together, about); above
    /// it, a seeded sample of each window's users gives them. Epoch time
    /// grows with the examples: this bounds a run's time on a large log.
    pub max_examples: usize,
}

/// An option out of its range: names the option and what it accepts.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("--{option}: {problem}")]
pub struct InvalidOption {
    pub option: &'static str,
    pub problem: String,
}

impl TrainOptions {
    /// Checks every option's range and the relations between them.
    pub(crate) fn validate(&self) -> Result<(), InvalidOption> {
        let fail = |option: &'static str, problem: String| Err(InvalidOption { option, problem });
        // `hidden` and `members` are the head's shape: `HeadSpec::new` checks them.
        for (option, value) in [
            ("windows", self.windows),
            ("negatives", self.negatives),
            ("max-epochs", self.max_epochs),
            ("batch-size", self.batch_size),
            ("max-validation-pairs", self.max_validation_pairs),
            ("max-examples", self.max_examples),
        ] {
            if value == 0 {
                return fail(option, "must be at least 1".into());
            }
        }
        if self.window_days < 1 {
            return fail("window-days", format!("{} is not a positive number of days", self.window_days));
        }
        for (option, share) in [
            ("cold-fraction", self.cold_fraction),
            ("popular-share", self.popular_share),
            ("query-fraction", self.query_fraction),
            ("typo-fraction", self.typo_fraction),
            ("calibration-share", self.calibration_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return fail(option, format!("{share} is not a share in [0, 1]"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return fail("dropout", format!("{} is not a probability in [0, 1)", self.dropout));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return fail("learning-rate", format!("{} is not a positive number", self.learning_rate));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return fail("weight-decay", format!("{} is not a number >= 0", self.weight_decay));
        }
        if self.max_users == Some(0) {
            return fail("max-users", "must be at least 1".into());
        }
        if self.t_val >= self.t_test {
            return fail("val-start", "the inner validation split must start before the test period".into());
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The command's defaults (see `offline::cli`), for tests.
    pub(crate) fn defaults() -> TrainOptions {
        TrainOptions {
            t_test: 1_320_105_600,
            t_val: 1_317_427_200,
            windows: 3,
            window_days: 30,
            negatives: 8,
            cold_fraction: 0.1,
            query_fraction: 0.3,
            typo_fraction: 0.1,
            hard_negatives: false,
            popular_share: 0.0,
            hidden: vec![128, 32],
            max_epochs: 20,
            patience: 3,
            batch_size: 256,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            dropout: 0.2,
            seed: 7,
            members: 3,
            refit: true,
            calibration_share: 0.25,
            max_users: None,
            max_validation_pairs: 16_000_000,
            max_examples: 1_200_000,
        }
    }

    #[test]
    fn the_defaults_are_valid_and_each_bad_value_is_named() {
        assert_eq!(defaults().validate(), Ok(()));
        type Spoil = fn(&mut TrainOptions);
        let cases: [(&str, Spoil); 10] = [
            ("query-fraction", |o| o.query_fraction = -0.1),
            ("typo-fraction", |o| o.typo_fraction = 1.1),
            ("calibration-share", |o| o.calibration_share = 1.5),
            ("batch-size", |o| o.batch_size = 0),
            ("cold-fraction", |o| o.cold_fraction = 2.0),
            ("dropout", |o| o.dropout = 1.0),
            ("learning-rate", |o| o.learning_rate = f64::NAN),
            ("window-days", |o| o.window_days = 0),
            ("max-users", |o| o.max_users = Some(0)),
            ("val-start", |o| o.t_val = o.t_test),
        ];
        for (option, spoil) in cases {
            let mut options = defaults();
            spoil(&mut options);
            assert_eq!(options.validate().unwrap_err().option, option);
        }
    }
}
