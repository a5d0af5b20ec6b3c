//! A bounded map for the hash cache. When full, the older half of the entries is dropped
//! (by insertion order): simple, O(1) amortised, and it keeps recently hashed files.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

pub struct BoundedMap<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    pub fn new(cap: usize) -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), cap: cap.max(2) }
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    pub fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
        }
        if self.map.len() > self.cap {
            for _ in 0..self.cap / 2 {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded_and_keeps_recent_entries() {
        let mut m = BoundedMap::new(10);
        for i in 0..100 {
            m.insert(i, i * 2);
        }
        assert!(m.len() <= 10);
        assert_eq!(m.get(&99), Some(&198));
        assert_eq!(m.get(&0), None);
    }
}
