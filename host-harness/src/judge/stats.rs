//! Means with 95% confidence intervals (normal approximation, `1.96 sd / sqrt(n)`).

use serde::{Deserialize, Serialize};

/// A mean with its 95% confidence half-width over `n` samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Sample mean.
    pub mean: f64,
    /// Half-width of the 95% interval of the mean.
    pub ci95: f64,
    /// Samples.
    pub n: usize,
}

impl Stat {
    /// Mean and 95% half-width of `values` (NaN for no values; half-width 0 for one).
    pub fn of(values: impl Iterator<Item = f64> + Clone) -> Stat {
        let (mut n, mut sum) = (0usize, 0.0f64);
        for v in values.clone() {
            n += 1;
            sum += v;
        }
        if n == 0 {
            return Stat { mean: f64::NAN, ci95: f64::NAN, n };
        }
        let mean = sum / n as f64;
        let var = if n > 1 { values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Stat { mean, ci95: 1.96 * (var / n as f64).sqrt(), n }
    }

    /// No measurement: NaN mean and interval, no samples (what a report written before a metric existed reads as).
    pub fn missing() -> Stat {
        Stat { mean: f64::NAN, ci95: f64::NAN, n: 0 }
    }

    /// The lower end of the interval.
    pub fn lo(&self) -> f64 {
        self.mean - self.ci95
    }

    /// The upper end of the interval.
    pub fn hi(&self) -> f64 {
        self.mean + self.ci95
    }

    /// `mean ± ci95` with four decimals.
    pub fn show(&self) -> String {
        format!("{:.4} ± {:.4}", self.mean, self.ci95)
    }
}
