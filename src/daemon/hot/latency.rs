//! A lock-free latency histogram for decisions: log-spaced buckets (four per power of two)
//! from 1 us to about 17 s, so status and metrics can report percentiles without storing
//! samples.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB: u32 = 4;
const BUCKETS: usize = 24 * SUB as usize + 1;

pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").field("count", &self.count()).finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum_us: AtomicU64::new(0) }
    }
}

/// Upper bound (us) of bucket `i`.
pub fn bucket_upper_us(i: usize) -> f64 {
    2f64.powf(i as f64 / SUB as f64)
}

fn bucket_of(us: f64) -> usize {
    if us <= 1.0 {
        return 0;
    }
    ((us.log2() * SUB as f64).ceil() as usize).min(BUCKETS - 1)
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    /// (upper bound us, cumulative count) per bucket, for Prometheus.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        (0..BUCKETS)
            .map(|i| {
                acc += self.counts[i].load(Ordering::Relaxed);
                (bucket_upper_us(i), acc)
            })
            .collect()
    }

    /// The bucket bound (us) under which `p` percent of decisions fell.
    pub fn percentile_us(&self, p: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        self.cumulative().into_iter().find(|(_, c)| *c >= want).map(|(u, _)| u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_land_in_the_right_bucket() {
        let h = Histogram::default();
        for _ in 0..90 {
            h.record(Duration::from_micros(10));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(5));
        }
        assert_eq!(h.count(), 100);
        let p50 = h.percentile_us(50.0).unwrap();
        assert!((10.0..=12.0).contains(&p50), "{p50}");
        let p99 = h.percentile_us(99.0).unwrap();
        assert!((5000.0..=6000.0).contains(&p99), "{p99}");
        assert!(Histogram::default().percentile_us(50.0).is_none());
        h.record(Duration::from_secs(100));
        assert_eq!(h.cumulative().last().unwrap().1, 101, "overflow goes to the last bucket");
    }
}
