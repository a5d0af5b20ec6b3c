//! What the kernel layer's programs cost, as the kernel counts it: with `kernel.bpf_stats_enabled`
//! on, each BPF program's runs and the time spent in them, read from a running daemon's status
//! (`kernel.programs`). The counting itself costs two clock reads per run, so the figures (and
//! the exec latency of the configurations measured meanwhile) are a little above the layer's
//! own cost.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// One configuration's runs of one program, summed over rounds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProgramCost {
    pub config: String,
    pub program: String,
    pub runs: u64,
    pub run_ns: u64,
}

impl ProgramCost {
    pub fn ns_per_run(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.run_ns as f64 / self.runs as f64
        }
    }
}

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns the kernel's BPF run statistics on while it lives (back to what they were after).
pub struct StatsOn(Option<String>);

impl StatsOn {
    pub fn enable() -> StatsOn {
        let before = std::fs::read_to_string(STATS).ok();
        if before.is_some() {
            let _ = std::fs::write(STATS, "1");
        }
        StatsOn(before)
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            let _ = std::fs::write(STATS, b.trim());
        }
    }
}

/// The programs' (name, runs, run_ns) of the daemon at `socket`; empty when its layer is off.
pub fn program_runs(driftgate: &Path, socket: &Path) -> Vec<(String, u64, u64)> {
    let Ok(out) = Command::new(driftgate).args(["status", "--json", "--socket"]).arg(socket).output() else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return Vec::new() };
    v["kernel"]["programs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default().to_owned(),
                        p["runs"].as_u64().unwrap_or(0),
                        p["run_ns"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Adds a daemon's figures to the configuration's totals.
pub fn add(totals: &mut Vec<ProgramCost>, config: &str, runs: Vec<(String, u64, u64)>) {
    for (program, n, ns) in runs {
        match totals.iter_mut().find(|t| t.config == config && t.program == program) {
            Some(t) => {
                t.runs += n;
                t.run_ns += ns;
            }
            None => totals.push(ProgramCost { config: config.to_owned(), program, runs: n, run_ns: ns }),
        }
    }
}

/// The table's lines (none when no configuration ran the layer).
pub fn render(costs: &[ProgramCost]) -> String {
    let mut s = String::new();
    if costs.iter().all(|c| c.runs == 0) {
        return s;
    }
    s.push_str(&format!(
        "{:<40} {:<12} {:>10} {:>12}\n",
        "kernel layer (bpf_stats)", "program", "runs", "ns_per_run"
    ));
    for c in costs.iter().filter(|c| c.runs > 0) {
        s.push_str(&format!("{:<40} {:<12} {:>10} {:>12.1}\n", c.config, c.program, c.runs, c.ns_per_run()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_per_configuration_and_program() {
        let mut t = Vec::new();
        add(&mut t, "a", vec![("dg_exec".into(), 10, 1000)]);
        add(&mut t, "a", vec![("dg_exec".into(), 10, 3000), ("dg_mmap".into(), 5, 50)]);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].ns_per_run(), 200.0);
        assert!(render(&t).contains("dg_mmap"));
        assert_eq!(render(&[]), "");
    }
}
