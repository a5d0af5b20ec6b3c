//! The hashing workers' queue: fair between containers. Jobs are taken round-robin, one per
//! container with jobs waiting, so a container that floods the slow path (many fresh or
//! large files) delays only its own execs, not another container's first exec.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};

/// A FIFO per key, served round-robin.
pub struct FairQueue<T> {
    inner: Mutex<Inner<T>>,
    cv: Condvar,
}

struct Inner<T> {
    queues: HashMap<u64, VecDeque<T>>,
    order: VecDeque<u64>,
    len: usize,
    closed: bool,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> FairQueue<T> {
    pub fn new() -> FairQueue<T> {
        FairQueue {
            inner: Mutex::new(Inner {
                queues: HashMap::new(),
                order: VecDeque::new(),
                len: 0,
                closed: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// Queues `item` under `key`; hands it back when the queue is closed.
    pub fn push(&self, key: u64, item: T) -> Result<(), T> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.closed {
            return Err(item);
        }
        let q = g.queues.entry(key).or_default();
        let was_empty = q.is_empty();
        q.push_back(item);
        if was_empty {
            g.order.push_back(key);
        }
        g.len += 1;
        drop(g);
        self.cv.notify_one();
        Ok(())
    }

    /// The next item, the next key's turn; waits while empty; `None` once closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(key) = g.order.pop_front() {
                let Some(q) = g.queues.get_mut(&key) else { continue };
                let item = q.pop_front();
                if q.is_empty() {
                    g.queues.remove(&key);
                } else {
                    g.order.push_back(key);
                }
                if item.is_some() {
                    g.len -= 1;
                    return item;
                }
                continue;
            }
            if g.closed {
                return None;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Stops taking items and takes out everything still queued; waiting `pop`s return `None`.
    pub fn close(&self) -> Vec<T> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.closed = true;
        let mut out = Vec::with_capacity(g.len);
        let order: Vec<u64> = g.order.drain(..).collect();
        for key in order {
            if let Some(q) = g.queues.remove(&key) {
                out.extend(q);
            }
        }
        g.len = 0;
        drop(g);
        self.cv.notify_all();
        out
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.len).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_served_in_turn_and_each_in_order() {
        let q = FairQueue::new();
        for i in 0..5 {
            q.push(1, format!("flood{i}")).unwrap();
        }
        q.push(2, "other".to_string()).unwrap();
        q.push(3, "third".to_string()).unwrap();
        let got: Vec<String> = (0..7).map(|_| q.pop().unwrap()).collect();
        assert_eq!(got, ["flood0", "other", "third", "flood1", "flood2", "flood3", "flood4"]);
        assert!(q.is_empty());
    }

    #[test]
    fn close_returns_what_is_left_and_wakes_waiters() {
        let q = std::sync::Arc::new(FairQueue::new());
        let q2 = std::sync::Arc::clone(&q);
        let waiter = std::thread::spawn(move || q2.pop());
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.push(7, 1).unwrap();
        assert_eq!(waiter.join().unwrap(), Some(1));
        q.push(7, 2).unwrap();
        q.push(8, 3).unwrap();
        let mut left = q.close();
        left.sort();
        assert_eq!(left, [2, 3]);
        assert_eq!(q.pop(), None);
        assert_eq!(q.push(1, 4), Err(4), "closed");
    }
}
