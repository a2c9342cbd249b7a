//! The closed-form optimum of one GD step (plain and preconditioned) on the tasks of [`TaskSampler`].

use super::TaskSampler;

/// The closed-form expected loss of one step from `W0 = 0`, plain and preconditioned, on a zero-mean distribution
/// ([`ClosedForm::of`]).
///
/// With independent zero-mean coordinates of variances `v_i` and fourth moments `m_i` (uniform: `m_i = 9 v_i^2 / 5`),
/// task weights of variance `s^2` and label noise `sigma^2`, write `g = 1/N sum_j y_j x_j` (the negative gradient at
/// 0). Its second moments are diagonal:
/// `G_i = E[g_i^2] = (N-1)/N s^2 v_i^2 + (s^2 (m_i + v_i (tr Sigma - v_i)) + sigma^2 v_i) / N`.
/// A preconditioned step predicts `y_hat = sum_i gamma_i g_i x_{q,i}`, with expected loss
/// `1/2 (s^2 tr Sigma + sigma^2) - sum_i gamma_i s^2 v_i^2 + 1/2 sum_i gamma_i^2 v_i G_i`, minimised by
/// `gamma_i = s^2 v_i / G_i`; plain GD is `gamma_i = eta`, minimised by
/// `eta* = s^2 sum_i v_i^2 / sum_i v_i G_i`. The off-diagonal moments vanish (odd in some coordinate), so the
/// best matrix `M` in `y_hat = g^T M x_q`, the whole one-layer class on these tasks, is the diagonal `gamma`: the
/// preconditioned step is the class optimum, and equals plain GD exactly when the coordinates are identically
/// distributed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClosedForm {
    /// Optimal rate of plain GD.
    pub eta: f64,
    /// Expected loss at the optimal rate.
    pub loss: f64,
    /// Expected loss of predicting 0.
    pub zero_loss: f64,
    /// The optimal diagonal preconditioner `gamma_i` (the rate per coordinate).
    pub preconditioner: Vec<f64>,
    /// Expected loss of the optimal preconditioned step (the one-layer class optimum).
    pub preconditioned_loss: f64,
}

impl ClosedForm {
    /// The closed form for the reference distribution with `d`, `n`, `input_range`.
    pub fn new(d: usize, n: usize, input_range: f64) -> Self {
        Self::of(&TaskSampler::new(d, n, input_range as f32)).unwrap_or_else(|| unreachable!("zero mean"))
    }

    /// The closed form for `sampler`, or `None` when its inputs have a non-zero mean (the moments above assume
    /// zero-mean coordinates; the fitted references cover that case).
    pub fn of(sampler: &TaskSampler) -> Option<Self> {
        if sampler.mean != 0.0 {
            return None;
        }
        let (d, n) = (sampler.d, sampler.n as f64);
        let s2 = (sampler.weight_scale as f64).powi(2);
        let noise2 = (sampler.noise as f64).powi(2);
        let v: Vec<f64> = (0..d).map(|i| sampler.variance(i)).collect();
        let trace: f64 = v.iter().sum();
        let g: Vec<f64> = v
            .iter()
            .map(|&vi| {
                let m4 = 9.0 * vi * vi / 5.0;
                (n - 1.0) / n * s2 * vi * vi + (s2 * (m4 + vi * (trace - vi)) + noise2 * vi) / n
            })
            .collect();
        let yy = s2 * trace + noise2;
        let ay: f64 = v.iter().map(|vi| s2 * vi * vi).sum();
        let aa: f64 = v.iter().zip(&g).map(|(vi, gi)| vi * gi).sum();
        let preconditioner: Vec<f64> = v.iter().zip(&g).map(|(vi, gi)| s2 * vi / gi).collect();
        let gain: f64 = v.iter().zip(&g).map(|(vi, gi)| (s2 * vi * vi).powi(2) / (vi * gi)).sum();
        Some(Self {
            eta: ay / aa,
            loss: 0.5 * (yy - ay * ay / aa),
            zero_loss: 0.5 * yy,
            preconditioner,
            preconditioned_loss: 0.5 * (yy - gain),
        })
    }
}
