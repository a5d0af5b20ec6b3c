//! Micro-benchmarks of the hot path's pieces: `cargo bench --bench hot_path`.
//! (IoC and manifest lookups arrive with the manifest index and IoC set.)

use std::os::fd::AsFd;
use std::path::PathBuf;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use driftgate::container::layers::Layers;
use driftgate::daemon::hot::cache::BoundedMap;
use driftgate::daemon::hot::{candidate_paths, identity_candidates};
use driftgate_core::engine::{judge, Describe, Evidence, Executed, Facts, ImageAtPath, Mode, Settings};
use driftgate_core::policy::{Policy, RawRule, Rule, RuleAction, Subject};
use driftgate_sys::fs::fstat_fd;

fn bench(c: &mut Criterion) {
    // The daemon's decision (`engine::judge`): with no rules (the default: no subject is
    // built), and with three rules the exec is matched against.
    struct Exec;
    impl Describe for Exec {
        fn describe<R>(&self, f: impl FnOnce(&Subject<'_>) -> R) -> R {
            f(&Subject { runtime: "containerd", path: "/tmp/x", mount: Some("/"), ..Default::default() })
        }
    }
    let facts = |evidence| Facts { evidence, executed: Executed::Binary, ioc: false, image_copy: false };
    let settings = Settings { mode: Mode::Enforce, block_iocs: false };
    let none = Policy::default();
    c.bench_function("judge/added_no_rules", |b| {
        b.iter(|| judge(black_box(&facts(Evidence::UpperFile(ImageAtPath::Absent))), &none, &Exec, settings))
    });
    let rule = |action, f: &dyn Fn(&mut RawRule)| {
        let mut r = RawRule { action: Some(action), ..Default::default() };
        f(&mut r);
        Rule::compile(0, &r).unwrap()
    };
    let three = Policy {
        rules: vec![
            rule(RuleAction::Allow, &|r| r.paths = vec!["/opt/jit/*".into()]),
            rule(RuleAction::Enforce, &|r| r.namespaces = vec!["prod-*".into()]),
            rule(RuleAction::Audit, &|r| r.images = vec!["registry.example/*".into()]),
        ],
        ..Default::default()
    };
    c.bench_function("judge/added_three_rules", |b| {
        b.iter(|| judge(black_box(&facts(Evidence::UpperFile(ImageAtPath::Absent))), &three, &Exec, settings))
    });

    // Hash-cache hit: the lookup a re-executed file costs.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let file = std::fs::File::open(&f).unwrap();
    let id = driftgate_sys::fs::file_id(&fstat_fd(file.as_fd()).unwrap());
    let mut cache = BoundedMap::new(65536);
    for i in 0..50_000u64 {
        let mut k = id;
        k.ino = i + 1_000_000;
        cache.insert((1u64, k), [0u8; 32]);
    }
    cache.insert((1, id), [7u8; 32]);
    c.bench_function("hash_cache/hit", |b| b.iter(|| black_box(cache.get(black_box(&(1, id))))));

    // The name of the file being executed, read back from its event fd (every slow-path exec).
    let f = std::fs::File::open("/proc/self/exe").unwrap();
    c.bench_function("paths/fd_path", |b| {
        b.iter(|| black_box(driftgate_sys::fs::fd_path(std::os::fd::AsFd::as_fd(&f)).unwrap()))
    });
    c.bench_function("time/rfc3339_now", |b| b.iter(|| black_box(driftgate_core::util::now_rfc3339())));

    let root = b"/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs";
    c.bench_function("paths/candidates", |b| {
        b.iter(|| candidate_paths(black_box(b"/usr/local/bin/app"), black_box(&root[..])))
    });
    c.bench_function("paths/identity_candidates_deleted", |b| {
        b.iter(|| identity_candidates(black_box(b"/usr/local/bin/app (deleted)"), black_box(&root[..])))
    });

    // Layer lookups on real directories: three lower layers, the file in the bottom one.
    let layers_dir = tempfile::tempdir().unwrap();
    let mut lowers: Vec<PathBuf> = Vec::new();
    for i in 0..3 {
        let l = layers_dir.path().join(format!("l{i}"));
        std::fs::create_dir_all(l.join("usr/local/bin")).unwrap();
        lowers.push(l);
    }
    let target = lowers[2].join("usr/local/bin/app");
    std::fs::write(&target, vec![0u8; 4096]).unwrap();
    let upper = layers_dir.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    let layers = Layers::open(Some(&upper), &lowers).unwrap();
    let tf = std::fs::File::open(&target).unwrap();
    let tid = driftgate_sys::fs::file_id(&fstat_fd(tf.as_fd()).unwrap());
    c.bench_function("layers/lower_identity_proof", |b| {
        b.iter(|| assert!(layers.lower_identical(black_box(b"/usr/local/bin/app"), &tid).is_some()))
    });
    c.bench_function("layers/union_lookup_3_layers", |b| {
        b.iter(|| black_box(layers.image_lookup(black_box(b"/usr/local/bin/app"))))
    });
    c.bench_function("layers/upper_absent", |b| {
        b.iter(|| black_box(layers.upper_file(black_box(b"/usr/local/bin/app"))))
    });
    // One confined lookup (a layer file, 4 components) by openat2, and by the component walk
    // that replaces it where a seccomp filter refuses openat2 (RestrictSUIDSGID=yes).
    let l0 = std::fs::File::open(&lowers[2]).unwrap();
    c.bench_function("paths/open_beneath_openat2", |b| {
        b.iter(|| {
            black_box(driftgate_sys::fs::open_beneath(l0.as_fd(), black_box(b"/usr/local/bin/app")).unwrap())
        })
    });
    let rules = driftgate_sys::walk::Rules {
        confine: driftgate_sys::walk::Confine::Beneath,
        no_symlinks: true,
        nofollow_final: true,
        no_xdev: true,
    };
    c.bench_function("paths/open_beneath_walk", |b| {
        b.iter(|| {
            black_box(driftgate_sys::walk::open(l0.as_fd(), black_box(b"usr/local/bin/app"), rules).unwrap())
        })
    });

    // IoC lookup in a set of 1M hashes.
    let entries: Vec<([u8; 32], Option<String>)> = (0u32..1_000_000)
        .map(|i| {
            use sha2::Digest;
            (sha2::Sha256::digest(i.to_le_bytes()).into(), None)
        })
        .collect();
    let probe = entries[123_456].0;
    let set = driftgate_core::index::ioc::IocSet::build(vec![("bench".into(), entries)]);
    c.bench_function("ioc/lookup_1m_hit", |b| b.iter(|| set.contains(black_box(&probe))));
    c.bench_function("ioc/lookup_1m_miss", |b| b.iter(|| set.contains(black_box(&[0x42u8; 32]))));

    // Image-file hash from a layer manifest of 20,000 executables (the fast path's BUILTIN
    // check on a first exec), and the union of three such layers.
    let mut manifest = driftgate_core::index::manifest::Manifest::new("bench");
    for i in 0..20_000u32 {
        let e = driftgate_core::index::manifest::Entry {
            sha256: [(i % 251) as u8; 32],
            size: 1000,
            mode: 0o755,
            mtime: 0,
            node: Some(driftgate_core::index::manifest::NodeVersion {
                ino: i as u64,
                mtime_ns: 5,
                ctime_ns: 7,
            }),
        };
        manifest.insert(format!("/usr/lib/pkg{}/bin{i}", i % 64).into_bytes(), e);
    }
    let mid = driftgate_sys::fs::FileId { dev: 1, ino: 12_345, size: 1000, mtime_ns: 5, ctime_ns: 7 };
    let path = format!("/usr/lib/pkg{}/bin12345", 12_345 % 64).into_bytes();
    c.bench_function("index/manifest_hash_20k", |b| {
        b.iter(|| assert!(manifest.hash_for(black_box(&path), black_box(&mid)).is_some()))
    });
    c.bench_function("index/union_3x20k", |b| {
        b.iter(|| black_box(driftgate_core::index::union::union(&[&manifest, &manifest, &manifest]).len()))
    });

    let data = vec![0x5au8; 1 << 20];
    c.bench_function("sha256/1MiB", |b| {
        b.iter(|| {
            use sha2::Digest;
            black_box(sha2::Sha256::digest(black_box(&data)))
        })
    });
}

criterion_group! {
    name = hot_path;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(hot_path);
