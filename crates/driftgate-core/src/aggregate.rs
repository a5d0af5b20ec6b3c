//! Aggregation of repeated identical findings, so that a loop in a container does not flood
//! the node: the first finding for a (container, path, SHA-256, category, action) in a window
//! is recorded in full; repeats within the window only count (the hot path skips reading
//! `/proc` and the sinks skip writing); when the window ends one aggregate record with
//! `count`, `first_seen` and `last_seen` is written. Every exec is accounted for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::engine::{Action, Category};
use crate::finding::Finding;

/// (container generation, path bytes, sha256, category, action)
pub type AggKey = (u64, Vec<u8>, Option<[u8; 32]>, Category, Action);

/// An aggregate to record, with what the caller kept with its window.
pub type Aggregate<H> = (Finding, Option<H>);

struct State<H> {
    opened: Instant,
    /// The full finding of the window, filled in right after the window opens (see
    /// [`Aggregator::open`]).
    first: Option<Finding>,
    container: Option<H>,
    repeats: u64,
    first_repeat: Option<String>,
    last_repeat: Option<String>,
}

pub struct Aggregator<H> {
    window: Duration,
    /// Open windows at most: a container that executes many distinct files cannot grow this
    /// without bound (each window keeps its full finding). Beyond it the oldest is closed.
    max_open: usize,
    map: Mutex<HashMap<AggKey, State<H>>>,
    /// A new finding id, for each aggregate record.
    new_id: fn() -> String,
}

impl<H> Aggregator<H> {
    /// `window` zero disables aggregation. `new_id` names each aggregate record.
    pub fn new(window: Duration, max_open: usize, new_id: fn() -> String) -> Self {
        Self { window, max_open: max_open.max(1), map: Mutex::new(HashMap::new()), new_id }
    }

    /// Counts a repeat if a window is open for `key`. Returns false when the caller must
    /// build and record a full finding (then [`Aggregator::open`]).
    pub fn repeat(&self, key: &AggKey, now_rfc3339: impl FnOnce() -> String) -> bool {
        if self.window.is_zero() {
            return false;
        }
        let Ok(mut m) = self.map.lock() else { return false };
        match m.get_mut(key) {
            Some(st) if st.opened.elapsed() < self.window => {
                let now = now_rfc3339();
                st.repeats += 1;
                if st.first_repeat.is_none() {
                    st.first_repeat = Some(now.clone());
                }
                st.last_repeat = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Opens a window for a full finding, before its exec is answered: the next identical exec
    /// can arrive as soon as this one is allowed (or denied), before the finding is built, and
    /// must count as a repeat. Returns the aggregates to record: of a previous window for the
    /// same key, and of the oldest window when too many are open, if they had repeats.
    /// [`Aggregator::set_first`] then fills in the finding.
    pub fn open(&self, key: AggKey) -> Vec<Aggregate<H>> {
        if self.window.is_zero() {
            return Vec::new();
        }
        let Ok(mut m) = self.map.lock() else { return Vec::new() };
        let mut out = Vec::new();
        if m.len() >= self.max_open && !m.contains_key(&key) {
            // Close the expired windows, then the oldest if that was not enough.
            let expired: Vec<AggKey> = m
                .iter()
                .filter(|(_, st)| st.opened.elapsed() >= self.window)
                .map(|(k, _)| k.clone())
                .collect();
            out.extend(
                expired.into_iter().filter_map(|k| m.remove(&k)).filter_map(|st| aggregate(st, self.new_id)),
            );
            if m.len() >= self.max_open {
                if let Some(oldest) = m.iter().min_by_key(|(_, st)| st.opened).map(|(k, _)| k.clone()) {
                    out.extend(m.remove(&oldest).and_then(|st| aggregate(st, self.new_id)));
                }
            }
        }
        let prev = m.insert(
            key,
            State {
                opened: Instant::now(),
                first: None,
                container: None,
                repeats: 0,
                first_repeat: None,
                last_repeat: None,
            },
        );
        out.extend(prev.and_then(|st| aggregate(st, self.new_id)));
        out
    }

    /// The full finding (and its container) of the window `open` opened for `key`.
    pub fn set_first(&self, key: &AggKey, first: &Finding, container: Option<H>) {
        let Ok(mut m) = self.map.lock() else { return };
        if let Some(st) = m.get_mut(key) {
            if st.first.is_none() {
                st.first = Some(first.clone());
                st.container = container;
            }
        }
    }

    /// `open` and `set_first` in one (tests).
    #[cfg(test)]
    pub fn opened(&self, key: AggKey, first: &Finding, container: Option<H>) -> Vec<Aggregate<H>> {
        let prev = self.open(key.clone());
        self.set_first(&key, first, container);
        prev
    }

    /// Closes windows older than the window length (all of them with `all`), returning the
    /// aggregates to record.
    pub fn flush(&self, all: bool) -> Vec<Aggregate<H>> {
        let Ok(mut m) = self.map.lock() else { return Vec::new() };
        let expired: Vec<AggKey> = m
            .iter()
            .filter(|(_, st)| all || st.opened.elapsed() >= self.window)
            .map(|(k, _)| k.clone())
            .collect();
        expired.into_iter().filter_map(|k| m.remove(&k)).filter_map(|st| aggregate(st, self.new_id)).collect()
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

fn aggregate<H>(st: State<H>, new_id: fn() -> String) -> Option<Aggregate<H>> {
    if st.repeats == 0 {
        return None;
    }
    let Some(mut f) = st.first else {
        // The window's own finding was never built (the daemon is stopping mid-decision).
        tracing::warn!(repeats = st.repeats, "repeats of a finding that was not recorded");
        return None;
    };
    f.id = new_id();
    f.count = st.repeats;
    f.first_seen = st.first_repeat;
    f.last_seen = st.last_repeat.clone();
    f.time = st.last_repeat.unwrap_or(f.time);
    Some((f, st.container))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding() -> Finding {
        Finding::example("first")
    }

    fn aggregator(window: Duration, max_open: usize) -> Aggregator<()> {
        Aggregator::new(window, max_open, || "aggregate".into())
    }

    fn key(path: &str) -> AggKey {
        (1, path.as_bytes().to_vec(), Some([7; 32]), Category::AddedBinaryExecuted, Action::Audited)
    }

    #[test]
    fn repeats_in_a_window_become_one_aggregate_and_every_exec_is_counted() {
        let a = aggregator(Duration::from_secs(3600), 1000);
        assert!(!a.repeat(&key("/x"), || "t".into()), "nothing open yet");
        assert!(a.opened(key("/x"), &finding(), None).is_empty());
        for i in 0..99 {
            assert!(a.repeat(&key("/x"), || format!("t{i}")));
        }
        assert!(!a.repeat(&key("/y"), || "t".into()), "another path is not a repeat");
        assert!(a.flush(false).is_empty(), "window still open");
        let agg: Vec<Finding> = a.flush(true).into_iter().map(|(f, _)| f).collect();
        assert_eq!(agg.len(), 1);
        assert_eq!(agg[0].count, 99);
        assert_eq!(agg[0].first_seen.as_deref(), Some("t0"));
        assert_eq!(agg[0].last_seen.as_deref(), Some("t98"));
        assert_ne!(agg[0].id, "first");
    }

    #[test]
    fn a_zero_window_disables_aggregation() {
        let a = aggregator(Duration::ZERO, 1000);
        assert!(a.opened(key("/x"), &finding(), None).is_empty());
        assert!(!a.repeat(&key("/x"), || "t".into()));
    }

    #[test]
    fn a_repeat_between_opening_and_the_finding_being_built_is_counted() {
        let a = aggregator(Duration::from_secs(3600), 1000);
        assert!(a.open(key("/x")).is_empty());
        // The exec was answered; the next one is decided before the finding is built.
        assert!(a.repeat(&key("/x"), || "t1".into()));
        a.set_first(&key("/x"), &finding(), None);
        let agg: Vec<Finding> = a.flush(true).into_iter().map(|(f, _)| f).collect();
        assert_eq!(agg.len(), 1);
        assert_eq!(agg[0].count, 1);
        assert_eq!(agg[0].first_seen.as_deref(), Some("t1"));
    }

    #[test]
    fn open_windows_are_bounded_and_the_oldest_is_recorded_when_one_more_opens() {
        let a = aggregator(Duration::from_secs(3600), 3);
        for p in ["/a", "/b", "/c"] {
            assert!(a.opened(key(p), &finding(), None).is_empty());
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(a.repeat(&key("/a"), || "ta".into()), "/a has a repeat");
        let closed = a.opened(key("/d"), &finding(), None);
        assert_eq!(closed.len(), 1, "the oldest window (/a) was closed and its repeat recorded");
        assert_eq!(closed[0].0.count, 1);
        assert!(!a.repeat(&key("/a"), || "t".into()), "/a is no longer open");
        assert!(a.repeat(&key("/d"), || "t".into()));
        assert!(a.opened(key("/e"), &finding(), None).is_empty(), "/b closes silently: no repeats");
        assert_eq!(a.map.lock().unwrap().len(), 3);
    }

    #[test]
    fn expired_windows_are_flushed_and_reopened() {
        let a = aggregator(Duration::from_millis(1), 1000);
        a.opened(key("/x"), &finding(), None);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!a.repeat(&key("/x"), || "t".into()), "expired window: record in full again");
        assert!(a.flush(false).is_empty(), "no repeats, nothing to record");
    }
}
