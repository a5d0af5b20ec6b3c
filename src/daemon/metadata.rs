//! The metadata thread: fills in each new container's metadata from its runtime, off the hot
//! path and off discovery (a runtime that is slow or down delays only this thread; its API
//! calls have deadlines). Incomplete metadata is retried with growing intervals for a while.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::container::runtime::Api;
use crate::container::Container;
use driftgate_core::config::SharedConfig;

const MAX_ATTEMPTS: u32 = 12;

/// After each lookup the container goes on to `index` (the indexer matches layers by the
/// image the metadata names).
pub fn spawn(
    cfg: SharedConfig,
    rx: Receiver<Arc<Container>>,
    index: Option<crossbeam_channel::Sender<super::indexer::Msg>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("driftgate-meta".into()).spawn(move || {
        let resolver = Api::new();
        let mut pending: Vec<(Arc<Container>, u32, Instant)> = Vec::new();
        loop {
            let wait = pending
                .iter()
                .map(|(_, _, at)| at.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(Duration::from_secs(3600));
            // A container sent again (a finding needs its metadata) is looked up at once.
            let mut add = |c: Arc<Container>| match pending.iter_mut().find(|(p, _, _)| Arc::ptr_eq(p, &c)) {
                Some(entry) => entry.2 = Instant::now(),
                None => pending.push((c, 0, Instant::now())),
            };
            match rx.recv_timeout(wait) {
                Ok(c) => add(c),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(c) = rx.try_recv() {
                add(c);
            }
            let now = Instant::now();
            pending.retain_mut(|(c, attempts, at)| {
                if *at > now {
                    return true;
                }
                let m = resolver.resolve(&cfg.load(), &c.identity).merged_with(&c.meta.load());
                let complete = m.complete;
                tracing::debug!(container = %c.identity.id, ?m, "container metadata");
                c.meta.store(Arc::new(m));
                c.meta_version.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                if let Some(tx) = &index {
                    let _ = tx.send(super::indexer::Msg::Container(Arc::clone(c)));
                }
                *attempts += 1;
                if complete || *attempts >= MAX_ATTEMPTS {
                    if !complete {
                        tracing::info!(container = %c.id(), runtime = c.runtime(), "container metadata incomplete");
                    }
                    return false;
                }
                *at = now + Duration::from_millis(200) * (*attempts).pow(2);
                true
            });
        }
    })
}
