//! The first-exec race, measured with real runtimes (needs root and the runtimes installed,
//! which `scripts/test-deps.sh` does):
//!
//!     cargo bench --bench first_exec_race -- [--runtime containerd|docker|podman|all] [--count N]
//!     cargo bench --bench first_exec_race -- --volumes [--runtime ...] [--count N]
//!     cargo bench --bench first_exec_race -- --late-mounts [--count N]
//!     cargo bench --bench first_exec_race -- --mount-then-exec [--count N]
//!
//! A new container is marked from a mount event, racing the runtime's own start-up. Each of N
//! containers runs `/opt/true` as its entrypoint, its only exec: if the daemon logs no first
//! exec for a container, its first exec beat the mark. For the caught ones it prints the time
//! from the noticed mount to the mark and to the first exec, and the margin between the two.
//!
//! `--volumes`: the container's other mounts are marked when its first exec from the rootfs
//! reveals its mount namespace (held until they are), or by a scan after the rootfs mount. The
//! one case that races is an entrypoint that is itself on a volume: each of N containers runs
//! `/vol/true` (a bind-mounted host directory) as its only exec, in audit mode; a finding for
//! it means its mount was marked in time.
//!
//! `--late-mounts`: a container that mounts a tmpfs after it started (a privileged one) has it
//! marked from the namespace's mount event; prints the time from the event to the mark.
//!
//! `--mount-then-exec`: the hole fanotify alone leaves (where the kernel has no BPF LSM): in an
//! enforced container, each of N tries mounts a fresh tmpfs, copies a binary there and runs it
//! at once; prints how many ran before the mount was marked (with the kernel layer: none).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::runtimes::*;
use common::*;

fn field(line: &str, key: &str) -> Option<u64> {
    let i = line.find(&format!("{key}="))? + key.len() + 1;
    line[i..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[(((p / 100.0) * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn report(runtime: &str, count: usize, d: &Daemon) {
    std::thread::sleep(Duration::from_millis(500));
    let lines: Vec<String> =
        d.log_text().lines().filter(|l| l.contains("first exec in container")).map(str::to_owned).collect();
    let mut mark: Vec<u64> = lines.iter().filter_map(|l| field(l, "mount_to_mark_us")).collect();
    let mut first: Vec<u64> = lines.iter().filter_map(|l| field(l, "mount_to_first_exec_us")).collect();
    let mut margin: Vec<u64> = lines
        .iter()
        .filter_map(|l| {
            Some(field(l, "mount_to_first_exec_us")?.saturating_sub(field(l, "mount_to_mark_us")?))
        })
        .collect();
    println!(
        "{runtime:<11} caught {:>3}/{count}  mount->mark p50 {:>6} us p99 {:>6} us max {:>6} us  \
         mount->first exec p50 {:>7} us min {:>7} us  margin min {:>7} us p50 {:>7} us",
        lines.len(),
        pct(&mut mark, 50.0),
        pct(&mut mark, 99.0),
        pct(&mut mark, 100.0),
        pct(&mut first, 50.0),
        pct(&mut first, 0.0),
        pct(&mut margin, 0.0),
        pct(&mut margin, 50.0),
    );
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: first_exec_race needs root");
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    let runtime = arg("--runtime").unwrap_or_else(|| "all".into());
    let count: usize = arg("--count").and_then(|c| c.parse().ok()).unwrap_or(50);
    let want = |r: &str| runtime == "all" || runtime == r;
    let dir = tempfile::Builder::new().prefix("dgrace-").tempdir_in("/tmp").unwrap();
    if args.iter().any(|a| a == "--late-mounts") {
        late_mounts(count);
        return;
    }
    if args.iter().any(|a| a == "--mount-then-exec") {
        mount_then_exec(count);
        return;
    }
    if args.iter().any(|a| a == "--volumes") {
        volume_entrypoints(dir.path(), count, &want);
        return;
    }
    println!("first-exec race, {count} container starts per runtime (entrypoint /opt/true, its only exec)");

    if want("containerd") && tools_present(&["containerd", "ctr", "runc", "umoci"]) {
        let c = Containerd::start(&dir.path().join("containerd"));
        c.build_image("localhost/dgtest");
        let d = Daemon::start(
            &dir.path().join("d1"),
            DaemonOpts {
                mode: "audit",
                containerd_state: Some(c.state()),
                containerd_address: Some(c.sock()),
                ..Default::default()
            },
        );
        for i in 0..count {
            let id = format!("race-{i}");
            let out = c.ctr(&["run", "--rm", "localhost/dgtest:latest", &id, "/opt/true"]);
            assert!(out.status.success(), "{out:?}");
        }
        report("containerd", count, &d);
    }
    let needs_docker = want("docker") && tools_present(&["containerd", "dockerd", "docker"]);
    if needs_docker {
        let c = Containerd::start(&dir.path().join("containerd-docker"));
        let dk = Dockerd::start(&dir.path().join("docker"), &c);
        dk.import_test_image();
        let d = Daemon::start(
            &dir.path().join("d2"),
            DaemonOpts { mode: "audit", docker_root: Some(dk.data_root()), ..Default::default() },
        );
        for _ in 0..count {
            let out = dk.docker(&["run", "--rm", "dgtest:latest", "/opt/true"]);
            assert!(out.status.success(), "{out:?}");
        }
        report("docker", count, &d);
    }
    if want("podman") && tools_present(&["podman"]) {
        let p = Podman::with_test_image(&dir.path().join("podman"));
        let d = Daemon::start(
            &dir.path().join("d3"),
            DaemonOpts { mode: "audit", podman: Some((p.root(), p.runroot())), ..Default::default() },
        );
        for _ in 0..count {
            let out = p.podman(&["run", "--rm", "localhost/dgtest:latest", "/opt/true"]);
            assert!(out.status.success(), "{out:?}");
        }
        report("podman", count, &d);
    }
}

/// Containers whose only exec is a binary on a volume.
fn volume_entrypoints(dir: &std::path::Path, count: usize, want: &dyn Fn(&str) -> bool) {
    println!(
        "volume entrypoints, {count} container starts per runtime (entrypoint /vol/true, its only exec)"
    );
    let vol = dir.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::copy(BUSYBOX, vol.join("true")).unwrap();
    let caught = |d: &Daemon| {
        std::thread::sleep(Duration::from_millis(500));
        read_findings(&d.spool)
            .iter()
            .filter(|f| f["file"]["path"] == "/vol/true")
            .map(|f| f["count"].as_u64().unwrap_or(1))
            .sum::<u64>()
    };
    let v = format!("{}:/vol", vol.display());
    let agg = "[findings]\naggregate_window_secs = 0\n";
    if want("containerd") && tools_present(&["containerd", "ctr", "runc", "umoci"]) {
        let c = Containerd::start(&dir.join("containerd"));
        c.build_image("localhost/dgtest");
        let d = Daemon::start(
            &dir.join("d1"),
            DaemonOpts {
                mode: "audit",
                containerd_state: Some(c.state()),
                containerd_address: Some(c.sock()),
                extra_tables: agg,
                ..Default::default()
            },
        );
        let m = format!("type=bind,src={},dst=/vol,options=rbind:ro", vol.display());
        for i in 0..count {
            let out = c.ctr(&[
                "run",
                "--rm",
                "--mount",
                &m,
                "localhost/dgtest:latest",
                &format!("vol-{i}"),
                "/vol/true",
            ]);
            assert!(out.status.success(), "{out:?}");
        }
        println!("containerd  volume entrypoint caught {:>3}/{count}", caught(&d));
    }
    if want("docker") && tools_present(&["containerd", "dockerd", "docker"]) {
        let c = Containerd::start(&dir.join("containerd-docker"));
        let dk = Dockerd::start(&dir.join("docker"), &c);
        dk.import_test_image();
        let d = Daemon::start(
            &dir.join("d2"),
            DaemonOpts {
                mode: "audit",
                docker_root: Some(dk.data_root()),
                extra_tables: agg,
                ..Default::default()
            },
        );
        for _ in 0..count {
            let out = dk.docker(&["run", "--rm", "-v", &v, "dgtest:latest", "/vol/true"]);
            assert!(out.status.success(), "{out:?}");
        }
        println!("docker      volume entrypoint caught {:>3}/{count}", caught(&d));
    }
    if want("podman") && tools_present(&["podman"]) {
        let p = Podman::with_test_image(&dir.join("podman"));
        let d = Daemon::start(
            &dir.join("d3"),
            DaemonOpts {
                mode: "audit",
                podman: Some((p.root(), p.runroot())),
                extra_tables: agg,
                ..Default::default()
            },
        );
        for _ in 0..count {
            let out = p.podman(&["run", "--rm", "-v", &v, "localhost/dgtest:latest", "/vol/true"]);
            assert!(out.status.success(), "{out:?}");
        }
        println!("podman      volume entrypoint caught {:>3}/{count}", caught(&d));
    }
}

/// A container that mounts `count` tmpfs after it started, one every 50 ms.
fn late_mounts(count: usize) {
    let s = Scratch::new();
    let d = daemon(&s, "audit");
    let mut script = String::new();
    for i in 0..count {
        script.push_str(&format!("mkdir /late{i}; mount -t tmpfs late /late{i}; sleep 0.05\n"));
    }
    script.push_str("echo done=0\n");
    let out = s.run_in_container(&script, Duration::from_secs(300));
    assert_eq!(results(&out).get("done"), Some(&0), "{out:?}");
    std::thread::sleep(Duration::from_millis(500));
    let log = d.log_text();
    let mut us: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("container mounts made after start marked"))
        .filter_map(|l| field(l, "event_to_mark_us"))
        .collect();
    let marked: u64 = log
        .lines()
        .filter(|l| l.contains("container mounts made after start marked"))
        .filter_map(|l| field(l, "mounts"))
        .sum();
    println!(
        "late mounts: {marked}/{count} marked from mount events; mount event -> marked p50 {} us p99 {} us max {} us",
        pct(&mut us, 50.0),
        pct(&mut us, 99.0),
        pct(&mut us, 100.0)
    );
}

fn mount_then_exec(count: usize) {
    let s = Scratch::new();
    let d = daemon(&s, "enforce");
    let mut script = String::new();
    for i in 0..count {
        script.push_str(&format!(
            "mkdir /fx{i}; mount -t tmpfs fx /fx{i}; cp /bin/busybox /fx{i}/t; /fx{i}/t true; echo try{i}=$?\n"
        ));
    }
    let out = s.run_in_container(&script, Duration::from_secs(300));
    let r = results(&out);
    let ran = (0..count).filter(|i| r.get(&format!("try{i}")) == Some(&0)).count();
    let refused = (0..count).filter(|i| r.get(&format!("try{i}")) == Some(&126)).count();
    assert_eq!(ran + refused, count, "{out:?}\n{}", d.log_text());
    let kernel = d.status()["kernel"]["state"].as_str().unwrap_or("?").to_owned();
    println!("mount then exec at once, enforce: {ran}/{count} ran before the mount was marked, {refused} refused (kernel layer: {kernel})");
}
