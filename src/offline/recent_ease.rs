//! Recent-purchase EASE: item-to-item weights that predict what a customer
//! bought in the last `RECENT_DAYS` of history from everything they bought.
//!
//! It is EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data",
//! WWW 2019) with one change: the target is the recent purchase matrix `R`,
//! not the history matrix `X` itself,
//!
//! `B = argmin ‖R − X·B‖² + λ‖B‖²` subject to `diag(B) = 0`.
//!
//! The zero diagonal stops an item from predicting itself, so the weights say
//! which *other* items a history leads to. Because the target is recent, they
//! also favour what is selling now, which matters in a log with strong
//! seasons. On the inner split of EVAL_PROTOCOL v1 (history before
//! 2011-10-01, truth in October) this score alone reaches NDCG@10 0.119, with
//! each item's top `NEIGHBOURS_PER_ITEM` weights kept; item-knn reaches 0.079
//! and EASE with `X` as its own target 0.097 (λ and the target window were
//! chosen there; see `models/README.md`).
//!
//! Closed form: with `P = (XᵀX + λI)⁻¹` and `A = P·XᵀR`, the constraint adds
//! one Lagrange multiplier per column, `B = A − P·diag(A_jj / P_jj)`.

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

/// Ridge strength, chosen on the inner split among 200, 500, 1000 and 2000.
pub(crate) const LAMBDA: f64 = 1000.0;

/// The weight matrix, row-major `[n, n]`: row `a` holds how much having
/// bought `a` predicts each recent purchase `b`.
pub(crate) struct RecentEase {
    pub n: usize,
    pub weights: Vec<f32>,
}

impl RecentEase {
    /// `gram` is `XᵀX` (row-major `[n, n]`: customers who bought both items,
    /// buyers on the diagonal) and `history_to_recent` is `XᵀR` (customers who
    /// bought `a` at any time and `b` recently).
    pub(crate) fn fit(n: usize, gram: &[u32], history_to_recent: &[u32], lambda: f64) -> Self {
        assert_eq!(gram.len(), n * n, "gram is n×n");
        assert_eq!(history_to_recent.len(), n * n, "XᵀR is n×n");
        if n == 0 {
            return Self { n, weights: Vec::new() };
        }
        let regularised = Mat::<f64>::from_fn(n, n, |a, b| gram[a * n + b] as f64 + if a == b { lambda } else { 0.0 });
        // XᵀX + λI is symmetric positive definite for λ > 0: Cholesky cannot fail.
        let inverse = regularised.llt(Side::Lower).expect("XᵀX + λI is positive definite").inverse();
        let targets = Mat::<f64>::from_fn(n, n, |a, b| history_to_recent[a * n + b] as f64);
        let solved = &inverse * &targets;
        let multiplier: Vec<f64> = (0..n).map(|j| solved[(j, j)] / inverse[(j, j)]).collect();
        let mut weights = vec![0f32; n * n];
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    weights[a * n + b] = (solved[(a, b)] - inverse[(a, b)] * multiplier[b]) as f32;
                }
            }
        }
        Self { n, weights }
    }

    pub(crate) fn row(&self, a: usize) -> &[f32] {
        &self.weights[a * self.n..(a + 1) * self.n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closed form against the constrained problem solved by hand: with
    /// a zero diagonal, column `b` of `B` is the ridge regression of `R[:, b]`
    /// on every column of `X` except `b`.
    #[test]
    fn matches_a_ridge_regression_that_leaves_each_item_out() {
        // Four customers, three items.
        let x = [[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]];
        let r = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]];
        let n = 3;
        let lambda = 0.5;
        let mut gram = vec![0u32; 9];
        let mut xtr = vec![0u32; 9];
        for c in 0..4 {
            for a in 0..n {
                for b in 0..n {
                    gram[a * n + b] += (x[c][a] * x[c][b]) as u32;
                    xtr[a * n + b] += (x[c][a] * r[c][b]) as u32;
                }
            }
        }
        let ease = RecentEase::fit(n, &gram, &xtr, lambda);
        for b in 0..n {
            let others: Vec<usize> = (0..n).filter(|&a| a != b).collect();
            // Normal equations over the two other items: (X_oᵀX_o + λI) w = X_oᵀ r_b.
            let g = |i: usize, j: usize| gram[others[i] * n + others[j]] as f64 + if i == j { lambda } else { 0.0 };
            let t = |i: usize| xtr[others[i] * n + b] as f64;
            let det = g(0, 0) * g(1, 1) - g(0, 1) * g(1, 0);
            let w0 = (t(0) * g(1, 1) - g(0, 1) * t(1)) / det;
            let w1 = (g(0, 0) * t(1) - g(1, 0) * t(0)) / det;
            assert_eq!(ease.row(b)[b], 0.0);
            assert!(
                (ease.row(others[0])[b] as f64 - w0).abs() < 1e-6,
                "column {b}: {} vs {w0}",
                ease.row(others[0])[b]
            );
            assert!(
                (ease.row(others[1])[b] as f64 - w1).abs() < 1e-6,
                "column {b}: {} vs {w1}",
                ease.row(others[1])[b]
            );
        }
    }
}
