//! Per-key rate limiting of what a container can make the daemon write to the journal or
//! stderr (findings, errors about a container): a token bucket per key, and a count of what
//! was held back, reported when the key may write again. The spool is never rate-limited.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    burst: f64,
    per_sec: f64,
    buckets: HashMap<String, Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    suppressed: u64,
}

/// What the caller may do with one line for a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; before it, say that `suppressed` earlier lines were held back (if > 0).
    Write { suppressed: u64 },
    /// Hold it back (counted).
    Suppress,
}

impl RateLimiter {
    pub fn new(burst: u32, per_sec: f64) -> Self {
        Self { burst: burst as f64, per_sec, buckets: HashMap::new() }
    }

    pub fn check(&mut self, key: &str, now: Instant) -> Verdict {
        if self.buckets.len() > 10_000 {
            // Forget idle keys (full buckets) so a churn of containers cannot grow this.
            let (burst, per_sec) = (self.burst, self.per_sec);
            self.buckets.retain(|_, b| {
                b.suppressed > 0 || b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst
            });
        }
        let b = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            suppressed: 0,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Verdict::Write { suppressed: std::mem::take(&mut b.suppressed) }
        } else {
            b.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// Keys with held-back lines whose bucket has refilled: (key, count). Their counts reset.
    pub fn due_reports(&mut self, now: Instant) -> Vec<(String, u64)> {
        let per_sec = self.per_sec;
        self.buckets
            .iter_mut()
            .filter(|(_, b)| {
                b.suppressed > 0 && b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec >= 1.0
            })
            .map(|(k, b)| (k.clone(), std::mem::take(&mut b.suppressed)))
            .collect()
    }
}

pub const DEFAULT_BURST: u32 = 20;
pub const DEFAULT_PER_SEC: f64 = 1.0;
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_steady_rate_with_a_count_of_what_was_held_back() {
        let mut r = RateLimiter::new(3, 1.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(r.check("c1", t0), Verdict::Write { suppressed: 0 });
        }
        for _ in 0..5 {
            assert_eq!(r.check("c1", t0), Verdict::Suppress);
        }
        assert_eq!(r.check("c2", t0), Verdict::Write { suppressed: 0 }, "other containers are not affected");
        assert!(r.due_reports(t0).is_empty());
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(r.check("c1", t1), Verdict::Write { suppressed: 5 });
        for _ in 0..2 {
            r.check("c1", t1);
        }
        assert_eq!(r.due_reports(t1 + Duration::from_secs(2)), vec![("c1".to_owned(), 2)]);
        assert!(r.due_reports(t1 + Duration::from_secs(3)).is_empty());
    }
}
