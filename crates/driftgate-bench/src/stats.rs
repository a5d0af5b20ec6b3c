//! Percentiles and ratios of latency samples.

use serde::Serialize;

/// Summary of one configuration across rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub name: String,
    pub samples: usize,
    pub rounds: usize,
    pub mean_us: f64,
    /// Median of the rounds' p50s (robust to one noisy round).
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Spread of the rounds' p50s: max / min.
    pub round_spread: f64,
    pub ratio_p50: Option<f64>,
    pub ratio_p99: Option<f64>,
    /// The configuration the ratios are taken against.
    pub baseline: Option<String>,
    /// p50 minus the baseline's p50.
    pub added_p50_us: Option<f64>,
    /// For first-exec configurations: time to SHA-256 the file's bytes in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256_us: Option<f64>,
    /// For first-exec configurations: the target for `added_p50_us`, 1.2 x (hash + floor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_added_p50_us: Option<f64>,
}

/// Nearest-rank percentile of sorted data.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999 despite binary floating point.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(v, 50.0)
}

/// Summarises per-round samples (microseconds).
pub fn summarize(name: &str, rounds: &[Vec<f64>]) -> Summary {
    let mut all: Vec<f64> = rounds.iter().flatten().copied().collect();
    all.sort_by(|a, b| a.total_cmp(b));
    let mut round_p50: Vec<f64> = rounds
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| {
            let mut r = r.clone();
            median(&mut r)
        })
        .collect();
    let spread =
        match (round_p50.iter().copied().reduce(f64::min), round_p50.iter().copied().reduce(f64::max)) {
            (Some(lo), Some(hi)) if lo > 0.0 => hi / lo,
            _ => f64::NAN,
        };
    Summary {
        name: name.to_owned(),
        samples: all.len(),
        rounds: round_p50.len(),
        mean_us: all.iter().sum::<f64>() / all.len().max(1) as f64,
        p50_us: median(&mut round_p50),
        p90_us: percentile(&all, 90.0),
        p99_us: percentile(&all, 99.0),
        p999_us: percentile(&all, 99.9),
        round_spread: spread,
        ratio_p50: None,
        ratio_p99: None,
        baseline: None,
        added_p50_us: None,
        sha256_us: None,
        target_added_p50_us: None,
    }
}

/// Fills ratios against `base`.
pub fn relate(s: &mut Summary, base: &Summary) {
    s.ratio_p50 = Some(s.p50_us / base.p50_us);
    s.ratio_p99 = Some(s.p99_us / base.p99_us);
    s.added_p50_us = Some(s.p50_us - base.p50_us);
    s.baseline = Some(base.name.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_ratios() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 500.0);
        assert_eq!(percentile(&v, 99.0), 990.0);
        assert_eq!(percentile(&v, 99.9), 999.0);
        assert_eq!(percentile(&v, 100.0), 1000.0);
        let base = summarize("none", &[vec![100.0; 10], vec![110.0; 10]]);
        assert_eq!(base.p50_us, 100.0, "median of round p50s, lower middle");
        assert!((base.round_spread - 1.1).abs() < 1e-9);
        let mut s = summarize("x", &[vec![120.0; 10], vec![120.0; 10]]);
        relate(&mut s, &base);
        assert_eq!(s.ratio_p50, Some(1.2));
        assert_eq!(s.added_p50_us, Some(20.0));
    }
}
