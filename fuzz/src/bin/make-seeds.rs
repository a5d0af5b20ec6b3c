//! Writes each fuzz target's seed corpus into `corpus/<target>/`: the formats the test suite
//! uses (a Docker `docker save` archive and an OCI archive built the same way the index tests'
//! images are, a layer in each compression, the shipped configuration, runtime records as the
//! unit tests have them, this machine's own mountinfo and /proc entries).
use std::io::Write;
use std::path::Path;

use sha2::Digest;

fn put(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(b)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn tar_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Configuration.
    put("config", "shipped.toml", &std::fs::read(root.join("packaging/driftgate.toml")).unwrap());
    put("config", "rules.toml", b"mode = \"enforce\"\n[hashing]\nmax_file_bytes = 1048576\nmax_secs = 2\n[daemon]\nwriter_hold_ms = 50\nstall_timeout_secs = 10\n[findings]\nmax_arg_bytes = 100\ncontainer_per_sec = 0.5\n[[policy.rules]]\nname = \"tools\"\naction = \"allow\"\nmounts = [\"/vol\"]\npaths = [\"/opt/**\"]\n[spool]\nmax_age = \"30d\"\n");
    // IoC feeds.
    let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    put("ioc", "plain.txt", format!("# feed\n{h}\n{}  name\n", h.to_uppercase()).as_bytes());
    put("ioc", "export.csv", format!("sha256,name,first_seen\n{h},\"Mirai, v2\",2024-01-01\n").as_bytes());
    // A layer in each compression, and a manifest bundle built the way the daemon writes it.
    let layer = tar_of(&[
        ("bin/tool", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0", 0o755),
        ("./etc/script", b"#!/bin/sh\necho hi\n", 0o755),
        ("etc/.wh.gone", b"", 0o644),
        ("var/.wh..wh..opq", b"", 0o644),
    ]);
    put("layer_tar", "plain.tar", &layer);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).unwrap();
    put("layer_tar", "layer.tar.gz", &gz.finish().unwrap());
    put("layer_tar", "layer.tar.zst", &zstd::encode_all(&layer[..], 3).unwrap());
    let (m, diff) =
        driftgate_image::build::index_layer_tar(Box::new(std::io::Cursor::new(layer.clone())), "seed")
            .unwrap();
    let mut m = m;
    m.diff_id = Some(diff.clone());
    put("manifest", "bundle.jsonl", format!("# bundle\n{}\n", m.to_json_line()).as_bytes());
    // docker save: manifest.json, the config, the layer as <id>/layer.tar.
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
    );
    let cfg_name = format!("{}.json", &sha(config.as_bytes())[7..]);
    let manifest =
        format!(r#"[{{"Config":"{cfg_name}","RepoTags":["seed:latest"],"Layers":["abc/layer.tar"]}}]"#);
    put(
        "image_archive",
        "docker-save.tar",
        &tar_of(&[
            ("manifest.json", manifest.as_bytes(), 0o644),
            (&cfg_name, config.as_bytes(), 0o644),
            ("abc/layer.tar", &layer, 0o644),
        ]),
    );
    // OCI archive: oci-layout, index.json -> manifest -> config + layer blobs.
    let layer_d = sha(&layer);
    let cfg_d = sha(config.as_bytes());
    let oci_manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_d}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let man_d = sha(oci_manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{man_d}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"seed"}}}}]}}"#,
        oci_manifest.len()
    );
    let blob = |d: &str| format!("blobs/sha256/{}", &d[7..]);
    put(
        "image_archive",
        "oci.tar",
        &tar_of(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644),
            ("index.json", index.as_bytes(), 0o644),
            (&blob(&man_d), oci_manifest.as_bytes(), 0o644),
            (&blob(&cfg_d), config.as_bytes(), 0o644),
            (&blob(&layer_d), &layer, 0o644),
        ]),
    );
    put("runtime_state", "image-config.json", config.as_bytes());
    put("runtime_state", "oci-manifest.json", oci_manifest.as_bytes());
    put("runtime_state", "oci-index.json", index.as_bytes());
    put("runtime_state", "config.v2.json", br#"{"ID":"c0ffee","Name":"/web","Config":{"Image":"nginx:1.25","Labels":{"io.kubernetes.pod.name":"web-0","io.kubernetes.pod.namespace":"prod","io.kubernetes.container.name":"nginx"}},"Image":"sha256:abc"}"#);
    put("runtime_state", "containers.json", br#"[{"id":"c1","names":["web"],"image":"i1","layer":"l1","metadata":"{\"image-name\":\"docker.io/library/nginx:1.25\",\"name\":\"web\"}"}]"#);
    put(
        "runtime_state",
        "layers.json",
        format!(r#"[{{"id":"l1","diff-digest":"{diff}","compressed-diff-digest":"x"}}]"#).as_bytes(),
    );
    put("runtime_state", "images.json", br#"[{"id":"i1","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","names":["nginx"]}]"#);
    put("runtime_state", "spec.json", br#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri-o.ContainerType":"container","io.kubernetes.pod.name":"p"}}"#);
    // containerd: Containers/Get response (field 1: container {1 id, 2 labels, 3 image, ...}).
    let field = |n: u8, b: &[u8]| {
        let mut v = vec![(n << 3) | 2, b.len() as u8];
        v.extend_from_slice(b);
        v
    };
    let mut container = field(1, b"c1");
    container.extend(field(3, b"docker.io/library/nginx:1.25"));
    put("containerd_api", "containers-get.bin", &field(1, &container));
    let desc = field(2, b"sha256:2222222222222222222222222222222222222222222222222222222222222222");
    put("containerd_api", "images-get.bin", &field(1, &field(3, &desc)));
    // This machine's mountinfo (runtimes' overlays if any) and a synthetic overlay line.
    if let Ok(mi) = std::fs::read("/proc/self/mountinfo") {
        put("mountinfo", "self.txt", &mi);
    }
    put("mountinfo", "overlay.txt", b"1069 28 0:85 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw,relatime - overlay overlay rw,lowerdir=/var/lib/containerd/snapshots/2/fs:/var/lib/containerd/snapshots/1/fs,upperdir=/var/lib/containerd/snapshots/3/fs,workdir=/var/lib/containerd/snapshots/3/work\n");
    // /proc: this process's status and a pending execve's syscall line; an ELF header.
    if let Ok(st) = std::fs::read("/proc/self/status") {
        put("proc", "status.txt", &st);
    }
    put(
        "proc",
        "syscall.txt",
        b"59 0x7ffd5a2c1000 0x7ffd5a2c1010 0x7ffd5a2c1040 0x0 0x0 0x0 0x7ffd5a2c0f08 0x7f3b2a2e6e2b",
    );
    put("proc", "ns.txt", b"mnt:[4026531841]");
    put("proc", "elf.bin", &std::fs::read("/proc/self/exe").unwrap()[..4096]);
    put("proc", "name.bin", b"/tmp/evil\nname\xff\x1b[2J");
    // Interpreter command lines: a selector byte (kind, tty, complete, bash), NUL-separated
    // arguments, then 0xff and NUL-separated `NAME=value` environment entries.
    for (name, sel, line, env) in [
        ("bash-login", 0x62u8, &b"-bash\0--rcfile\0/opt/rc\0-euo\0pipefail\0x.sh"[..], &b"HOME=/root\0BASH_ENV=$HOME/x"[..]),
        ("busybox", 0x21, b"busybox\0busybox\0-sh\0-\0/tmp/x.sh", b"ENV=${HOME}/.shrc\0PATH=/bin::/tmp"),
        ("python", 0x23, b"python3\0-IWignore\0-m\0pkg.mod", b"PYTHONPATH=/a:/b\0PYTHONSTARTUP=/s.py"),
        ("perl", 0x24, b"perl\0-S\0-I\0/lib\0-Mx\0tool.pl", b"PATH=/usr/bin"),
        ("loader", 0x20, b"ld.so\0--argv0\0x\0--\0/tmp/tool", b""),
    ] {
        let mut seed = vec![sel];
        seed.extend_from_slice(line);
        seed.push(0xff);
        seed.extend_from_slice(env);
        put("interpreter_plan", &format!("{name}.bin"), &seed);
    }
    println!("seeds written to corpus/");
}
