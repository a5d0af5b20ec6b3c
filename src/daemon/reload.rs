//! Reloading: the configuration on SIGHUP, the IoC set when a source changes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::daemon::hot::{self, Shared};
use crate::daemon::{indexer, namespaces, wake};
use driftgate_core::config::{Config, SharedConfig};
use driftgate_sys::sentinel::Sentinel;

/// What a configuration reload updates.
pub struct Reloader {
    pub config_path: Option<std::path::PathBuf>,
    pub cfg: SharedConfig,
    pub shared: Arc<Shared>,
    pub sentinel: Option<Arc<Sentinel>>,
    pub index_tx: crossbeam_channel::Sender<indexer::Msg>,
    pub rescan: Arc<std::os::fd::OwnedFd>,
    pub reloads: Arc<AtomicU64>,
    pub errors: Arc<AtomicU64>,
    /// One reload at a time (SIGHUP on the event loop, `driftgate reload` on the status thread).
    pub lock: std::sync::Mutex<()>,
}

impl Reloader {
    /// Reads the configuration file again and applies it; a bad file is logged, the running
    /// configuration kept, and the error returned (`driftgate reload`, systemd's `ExecReload=`,
    /// shows it and fails). Reading the file is quick: decisions for queued events wait only
    /// for this one parse, and none is dropped.
    pub fn reload(&self) -> Result<(), String> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        let res = match Config::load(self.config_path.as_deref()) {
            Ok(new) => {
                self.apply(new);
                Ok(())
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "reload failed; keeping the running configuration");
                Err(e.to_string())
            }
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        res
    }

    fn apply(&self, new: Config) {
        let shared = &self.shared;
        let old = self.cfg.load_full();
        if new.mode != old.mode {
            tracing::warn!(from = old.mode.as_str(), to = new.mode.as_str(), "mode changed by reload");
        }
        shared.mode.set(new.mode);
        for (section, changed) in
            [("[export]", new.export != old.export), ("[evidence]", new.evidence != old.evidence)]
        {
            if changed {
                tracing::warn!(section, "changed by reload; it takes effect at the next start (restart the daemon): until then the running one stays");
            }
        }
        shared.health.set_enforcing(enforcing(&new));
        shared.namespaces.set_enabled(new.mounts_enabled);
        shared.libraries.enabled.store(new.libraries_enabled, Ordering::Relaxed);
        if new.libraries_enabled && !shared.libraries.marked {
            tracing::warn!("libraries.enabled = true takes effect at the next start: the marks were placed without open events");
        }
        shared.namespaces.set_memfd_rule(memfd_rule(&new, shared.libraries.marked));
        // The kernel layer's policy of every container, at once (scans also apply it).
        let rule = memfd_rule(&new, shared.libraries.marked);
        shared.namespaces.kernel().repolicy(|c| rule.kernel_policy(c));
        shared.indirect_cfg.store(Arc::new(hot::IndirectConfig::from_config(&new)));
        shared.hash_limits.store(Arc::new(hot::HashLimits::from_config(&new)));
        shared.max_arg_bytes.store(new.max_arg_bytes, Ordering::Relaxed);
        shared.redact.store(std::sync::Arc::new(new.redact.clone()));
        shared.holder.set_hold(new.writer_hold);
        if let Some(s) = &self.sentinel {
            s.set_stall(new.stall_timeout);
        }
        if (new.container_burst, new.container_per_sec) != (old.container_burst, old.container_per_sec) {
            if let Ok(mut l) = shared.record_limiter.lock() {
                *l = driftgate_core::ratelimit::RateLimiter::new(new.container_burst, new.container_per_sec);
            }
        }
        // Which image files are loaders or interpreters may have changed.
        shared.knowledge.fetch_add(1, Ordering::Relaxed);
        shared.block_iocs.store(new.ioc_block, Ordering::Relaxed);
        shared.policy.store(Arc::new(new.policy.clone()));
        if let Some(set) = load_iocs(&new.ioc_paths, shared.iocs.load().len()) {
            shared.set_iocs(set);
        }
        self.cfg.store(Arc::new(new));
        let _ = self.index_tx.send(indexer::Msg::Reload);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        wake::kick(&self.rescan);
        tracing::info!("configuration reloaded");
    }
}

/// Whether drift is refused anywhere under `c` (the global mode, or a rule): a check that
/// cannot run is then an error, not a warning.
pub(super) fn enforcing(c: &Config) -> bool {
    c.mode == driftgate_core::engine::Mode::Enforce
        || c.policy.rules.iter().any(|r| r.action == Some(driftgate_core::model::RuleAction::Enforce))
}

/// What decides `vm.memfd_noexec` and the kernel layer's policy of each container; `marked`:
/// the marks have open events (`[libraries]` at start), so mappings can be decided.
pub(super) fn memfd_rule(c: &Config, marked: bool) -> namespaces::MemfdRule {
    namespaces::MemfdRule {
        setting: c.memfd_noexec,
        mode: c.mode,
        policy: Arc::new(c.policy.clone()),
        libraries: c.libraries_enabled && marked,
    }
}

/// Loads the IoC sources, logging what each gave. `None` means "keep the previous set": every
/// source failed while a previous set had entries.
pub(super) fn load_iocs(
    paths: &[std::path::PathBuf],
    previous: usize,
) -> Option<driftgate_core::index::ioc::IocSet> {
    if paths.is_empty() {
        return Some(Default::default());
    }
    let start = Instant::now();
    let (set, reports, errors) = driftgate_core::index::ioc::IocSet::load(paths);
    for r in &reports {
        if r.invalid > 0 {
            let first: Vec<String> =
                r.examples.iter().map(|b| format!("line {}: {}", b.line, b.reason)).collect();
            tracing::warn!(source = %r.source, valid = r.valid, invalid = r.invalid, first = ?first, "IoC source has invalid lines");
        }
    }
    for e in &errors {
        tracing::error!(error = %e, "IoC source not loaded");
    }
    if set.is_empty() && !errors.is_empty() && previous > 0 {
        tracing::error!(previous, "no IoC source could be loaded; keeping the previous set");
        return None;
    }
    tracing::info!(entries = set.len(), ms = start.elapsed().as_millis() as u64, "IoC set loaded");
    Some(set)
}

/// Reloads the IoC set when a source file changes (checked every two seconds by size and
/// modification time, which also notices files added to a source directory).
pub(super) fn spawn_ioc_watch(
    cfg: SharedConfig,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    fn fingerprint(paths: &[std::path::PathBuf]) -> Vec<(std::path::PathBuf, u64, Option<SystemTime>)> {
        paths
            .iter()
            .flat_map(|p| driftgate_core::index::ioc::expand(p).unwrap_or_default())
            .map(|f| {
                let m = std::fs::metadata(&f).ok();
                let len = m.as_ref().map_or(0, |m| m.len());
                let mtime = m.and_then(|m| m.modified().ok());
                (f, len, mtime)
            })
            .collect()
    }
    std::thread::Builder::new().name("driftgate-ioc-watch".into()).spawn(move || {
        let mut last = fingerprint(&cfg.load().ioc_paths);
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let paths = cfg.load().ioc_paths.clone();
            let now = fingerprint(&paths);
            if now != last {
                last = now;
                tracing::info!("an IoC source changed; reloading the IoC set");
                if let Some(set) = load_iocs(&paths, shared.iocs.load().len()) {
                    shared.set_iocs(set);
                }
            }
        }
    })
}

/// What the configuration file is now: the file its path resolves to (a ConfigMap update
/// points `..data` at a new directory), its size and modification time.
type ConfigPrint = Option<(std::path::PathBuf, u64, Option<SystemTime>)>;

fn config_print(path: &std::path::Path) -> ConfigPrint {
    let real = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&real).ok()?;
    Some((real, m.len(), m.modified().ok()))
}

/// Whether the configuration at `path` is to be watched: `daemon.watch_config`, or unset, when
/// it is mounted from a Kubernetes ConfigMap (a `..data` link beside it).
pub(super) fn watches_config(path: &std::path::Path, setting: Option<bool>) -> bool {
    setting.unwrap_or_else(|| path.parent().is_some_and(|d| d.join("..data").is_symlink()))
}

/// Reloads the configuration when its file changes (see [`watches_config`]): checked every
/// 500 ms, applied once it has stayed the same for one more check (a half-written file is not
/// read), through the same path as SIGHUP: validated first, the running configuration kept on
/// error, both counted (`driftgate_reloads_total{result}`).
pub(super) fn spawn_config_watch(
    reloader: Arc<Reloader>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    let Some(path) = reloader.config_path.clone() else { return Ok(None) };
    if !watches_config(&path, reloader.cfg.load().watch_config) {
        return Ok(None);
    }
    tracing::info!(path = %path.display(), "reloading when the configuration file changes");
    let t = std::thread::Builder::new().name("driftgate-config-watch".into()).spawn(move || {
        let mut applied = config_print(&path);
        let mut seen = applied.clone();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let now = config_print(&path);
            if now != seen {
                seen = now; // changed: wait for it to settle
                continue;
            }
            if now.is_some() && now != applied {
                applied = now;
                tracing::info!(path = %path.display(), "the configuration file changed; reloading");
                let _ = reloader.reload();
            }
        }
    })?;
    Ok(Some(t))
}
