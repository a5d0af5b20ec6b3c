//! The layer indexer: gives each watched container the manifests of its lower layers, off the
//! hot path.
//!
//! A coordinator thread attaches manifests to containers: an on-node manifest of the layer
//! directory (from this run, or persisted under `<state_dir>/index/`), else an imported one
//! matched by the diffID the runtime records. Layers without a verified on-node manifest go to
//! the hashing workers (`[index] threads`, one by default, at low CPU priority), each layer
//! once however many containers share it. A persisted manifest is used at once (its entries
//! only count for the exact inode versions they were taken from) and re-checked by a walk
//! that re-hashes only files that changed; a layer found changed is logged and re-indexed.
//! Nothing here ever delays an exec: until a layer has a manifest, the hot path decides its
//! files by provenance and hashing as before.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use crossbeam_channel::{select, Receiver, Sender};

use crate::container::diffids::DiffIdResolver;
use crate::container::Container;
use driftgate_core::config::{Config, SharedConfig};
use driftgate_core::index::manifest::Manifest;
use driftgate_core::index::union::{ContainerIndex, LayerRef};
use driftgate_image::layerdir::{changes, index_layer_dir, LayerError, WalkStats};
use driftgate_image::store::{load_imports, Imported, NodeStore};

#[derive(Debug, Default)]
pub struct IndexStats {
    /// Layer directories with an on-node manifest (loaded or built).
    pub node_layers: AtomicU64,
    /// Imported manifests available (by diffID), and how many layers of watched containers
    /// use one.
    pub imported_available: AtomicU64,
    pub imported_matched: AtomicU64,
    /// Layers waiting for or being indexed.
    pub pending: AtomicU64,
    pub indexed_bytes: AtomicU64,
    pub indexed_files: AtomicU64,
    /// Layers found changed on disk since they were indexed.
    pub changed: AtomicU64,
    pub failures: AtomicU64,
}

pub enum Msg {
    /// A container to attach manifests to (new, or its metadata changed).
    Container(Arc<Container>),
    /// Re-read `[index] import_dirs` (reload).
    Reload,
}

struct Job {
    dir: PathBuf,
    previous: Option<Arc<Manifest>>,
}

type JobResult = (PathBuf, Option<Arc<Manifest>>, Result<(Manifest, WalkStats), LayerError>);

pub fn spawn(
    cfg: SharedConfig,
    knowledge: Arc<AtomicU64>,
    stats: Arc<IndexStats>,
    rx: Receiver<Msg>,
) -> std::io::Result<JoinHandle<()>> {
    let c0 = cfg.load_full();
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let (res_tx, res_rx) = crossbeam_channel::unbounded::<JobResult>();
    for i in 0..c0.index.threads {
        let (job_rx, res_tx, stats) = (job_rx.clone(), res_tx.clone(), Arc::clone(&stats));
        std::thread::Builder::new().name(format!("driftgate-index-{i}")).spawn(move || {
            // Background work: never compete with the hot path or the containers.
            driftgate_sys::process::lower_this_thread_priority(19);
            for job in job_rx {
                let started = std::time::Instant::now();
                let res = index_layer_dir(&job.dir, job.previous.as_deref(), &mut |n| {
                    stats.indexed_bytes.fetch_add(n, Ordering::Relaxed);
                });
                if let Ok((m, s)) = &res {
                    if s.skipped > 0 {
                        tracing::warn!(
                            layer = %job.dir.display(),
                            skipped = s.skipped,
                            first = s.first_skipped.as_deref().unwrap_or(""),
                            "layer entries could not be indexed (their files are hashed at exec time)"
                        );
                    }
                    tracing::info!(
                        layer = %job.dir.display(),
                        files = m.files.len(),
                        hashed = s.hashed_files,
                        reused = s.reused,
                        mb = s.hashed_bytes as f64 / 1e6,
                        ms = started.elapsed().as_millis() as u64,
                        "layer indexed"
                    );
                }
                if res_tx.send((job.dir, job.previous, res)).is_err() {
                    return;
                }
            }
        })?;
    }
    std::thread::Builder::new().name("driftgate-index".into()).spawn(move || {
        // Held so the result channel stays open when there are no workers (indexing disabled).
        let _res_tx = res_tx;
        let mut co = Coordinator {
            store: NodeStore::new(&c0.state_dir),
            node: HashMap::new(),
            settled: HashSet::new(),
            queued: HashSet::new(),
            imported: Imported::default(),
            resolver: DiffIdResolver::default(),
            containers: Vec::new(),
            job_tx,
            knowledge,
            stats,
        };
        co.reload_imports(&c0);
        // Manifests of layers deleted since (images removed) are not kept forever.
        let pruned = co.store.prune();
        if pruned > 0 {
            tracing::info!(pruned, "stored manifests of removed layers deleted");
        }
        loop {
            select! {
                recv(rx) -> msg => match msg {
                    Ok(Msg::Container(c)) => co.attach(&cfg.load(), &c),
                    Ok(Msg::Reload) => {
                        let cfg = cfg.load_full();
                        co.reload_imports(&cfg);
                        co.reattach_all(&cfg, None);
                    }
                    Err(_) => return,
                },
                recv(res_rx) -> res => match res {
                    Ok(r) => co.done(&cfg.load_full(), r),
                    Err(_) => return,
                },
            }
        }
    })
}

/// `.../overlay2/<id>-init/diff`.
struct Coordinator {
    store: NodeStore,
    /// On-node manifests by (canonical) layer directory.
    node: HashMap<PathBuf, Arc<Manifest>>,
    /// Layer directories walked in this run (built or re-checked), or that failed.
    settled: HashSet<PathBuf>,
    queued: HashSet<PathBuf>,
    imported: Imported,
    resolver: DiffIdResolver,
    /// Watched containers, with their lower directories (canonical).
    containers: Vec<(Weak<Container>, Vec<PathBuf>)>,
    job_tx: Sender<Job>,
    knowledge: Arc<AtomicU64>,
    stats: Arc<IndexStats>,
}

impl Coordinator {
    fn reload_imports(&mut self, cfg: &Config) {
        let (imp, errors) = load_imports(&cfg.index.import_dirs);
        for e in &errors {
            tracing::warn!(error = %e, "index import skipped");
        }
        if !cfg.index.import_dirs.is_empty() {
            tracing::info!(layers = imp.by_diff_id.len(), files = imp.files, "imported layer manifests");
        }
        self.stats.imported_available.store(imp.by_diff_id.len() as u64, Ordering::Relaxed);
        self.imported = imp;
    }

    fn attach(&mut self, cfg: &Config, c: &Arc<Container>) {
        let dirs = match self.containers.iter().find(|(w, _)| w.as_ptr() == Arc::as_ptr(c)) {
            Some((_, dirs)) => dirs.clone(),
            None => {
                // Runtimes name layers through symlinks (containers/storage's `overlay/l/XXXX`);
                // the layer is its real directory.
                let dirs: Vec<PathBuf> = c
                    .layers
                    .lower_paths
                    .iter()
                    .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
                    .collect();
                self.forget_gone();
                self.containers.push((Arc::downgrade(c), dirs.clone()));
                dirs
            }
        };
        // The diffIDs of its lower layers (top first), where its runtime records them.
        let runtime = crate::container::runtime::named(c.identity.runtime);
        let diff_ids = match runtime {
            Some(r) => {
                let digest = c.meta.load().image_digest.clone();
                r.diff_ids(&mut self.resolver, cfg, &c.identity, digest.as_deref(), &dirs)
            }
            None => vec![None; dirs.len()],
        };
        let mut layers = Vec::with_capacity(dirs.len());
        let mut matched = 0;
        let mut image_layers = 0;
        for (dir, diff_id) in dirs.iter().zip(diff_ids) {
            if runtime.is_some_and(|r| !r.is_image_layer(dir)) {
                // Docker's `<id>-init` layer holds what Docker writes for the container
                // (/etc/hosts, /.dockerenv...): not image content, never a manifest.
                layers.push(None);
                continue;
            }
            image_layers += 1;
            let imported =
                diff_id.as_ref().and_then(|d| self.imported.by_diff_id.get(d)).map(|x| Arc::clone(&x.0));
            if imported.is_none() {
                self.ensure_node(cfg, dir);
            }
            let lref = match (self.node.get(dir), imported) {
                (Some(m), _) => Some(LayerRef { manifest: Arc::clone(m), diff_id, imported: false }),
                (None, Some(m)) => {
                    matched += 1;
                    Some(LayerRef { manifest: m, diff_id, imported: true })
                }
                (None, None) => None,
            };
            layers.push(lref);
        }
        let idx = ContainerIndex { layers, image_layers };
        tracing::debug!(container = %c.identity.id, known = idx.known(), layers = dirs.len(), imported = matched, "layer manifests attached");
        if c.index.load().same_as(&idx) {
            return;
        }
        c.index.store(Arc::new(idx));
        // Execs cached as image files before this was known are looked at again (only when
        // something changed: metadata lookups repeat, and each bump costs every container's
        // image files one identity proof).
        self.knowledge.fetch_add(1, Ordering::Relaxed);
        self.count_matched();
    }

    /// Drops gone containers, and the in-memory manifests no watched container uses (they stay
    /// on disk, and are re-checked if a container with that layer appears again).
    fn forget_gone(&mut self) {
        self.containers.retain(|(w, _)| w.strong_count() > 0);
        let used: HashSet<&PathBuf> = self.containers.iter().flat_map(|(_, d)| d.iter()).collect();
        self.node.retain(|d, _| used.contains(d) || self.queued.contains(d));
        self.settled.retain(|d| used.contains(d) || self.queued.contains(d));
        self.stats.node_layers.store(self.node.len() as u64, Ordering::Relaxed);
    }

    fn count_matched(&self) {
        let n: usize = self
            .containers
            .iter()
            .filter_map(|(w, _)| w.upgrade())
            .map(|c| c.index.load().layers.iter().flatten().filter(|l| l.imported).count())
            .sum();
        self.stats.imported_matched.store(n as u64, Ordering::Relaxed);
    }

    /// Makes sure `dir` has, or will have, an on-node manifest checked in this run.
    fn ensure_node(&mut self, cfg: &Config, dir: &Path) {
        // `[index] enabled` is read at each use, so a reload can switch it.
        if !cfg.index.enabled {
            return;
        }
        if self.settled.contains(dir) || self.queued.contains(dir) {
            return;
        }
        if !self.node.contains_key(dir) {
            let id = nix::sys::stat::stat(dir).ok().map(|s| (s.st_dev, s.st_ino));
            match id.map(|id| self.store.load(dir, id)) {
                Some(Ok(Some(m))) => {
                    self.node.insert(dir.to_path_buf(), Arc::new(m));
                    self.stats.node_layers.store(self.node.len() as u64, Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    tracing::warn!(layer = %dir.display(), error = %e, "stored layer manifest unreadable; indexing again")
                }
                _ => {}
            }
        }
        let previous = self.node.get(dir).cloned();
        self.queued.insert(dir.to_path_buf());
        self.stats.pending.store(self.queued.len() as u64, Ordering::Relaxed);
        let _ = self.job_tx.send(Job { dir: dir.to_path_buf(), previous });
    }

    fn done(&mut self, cfg: &Config, (dir, previous, res): JobResult) {
        self.queued.remove(&dir);
        self.settled.insert(dir.clone());
        self.stats.pending.store(self.queued.len() as u64, Ordering::Relaxed);
        match res {
            Ok((m, _)) => {
                if let Some(prev) = &previous {
                    let ch = changes(prev, &m);
                    if !ch.is_empty() {
                        self.stats.changed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            layer = %dir.display(),
                            changes = ch.len(),
                            first = %ch.iter().take(5).cloned().collect::<Vec<_>>().join("; "),
                            "image layer changed on disk since it was indexed; re-indexed"
                        );
                    }
                }
                self.stats.indexed_files.fetch_add(m.files.len() as u64, Ordering::Relaxed);
                if let Err(e) = self.store.save(&m) {
                    tracing::warn!(layer = %dir.display(), error = %e, "could not store layer manifest");
                }
                self.node.insert(dir.clone(), Arc::new(m));
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(layer = %dir.display(), error = %e, "could not index layer");
            }
        }
        // (Counts node layers again, after dropping those no container uses.)
        self.reattach_all(cfg, Some(&dir));
    }

    /// Attaches again every live container (with `dir` among its layers, if given).
    fn reattach_all(&mut self, cfg: &Config, dir: Option<&Path>) {
        self.forget_gone();
        let live: Vec<Arc<Container>> = self
            .containers
            .iter()
            .filter(|(_, dirs)| dir.is_none_or(|d| dirs.iter().any(|x| x == d)))
            .filter_map(|(w, _)| w.upgrade())
            .collect();
        for c in live {
            self.attach(cfg, &c);
        }
    }
}
