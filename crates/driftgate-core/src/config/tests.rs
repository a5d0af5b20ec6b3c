use super::*;

#[test]
fn embedded_defaults_are_audit_with_standard_paths() {
    let c = Config::defaults();
    assert_eq!(c.mode, Mode::Audit);
    assert_eq!(c.state_dir, Path::new("/var/lib/driftgate"));
    assert_eq!(c.spool_dir, Path::new("/var/lib/driftgate/spool"));
    assert!(c.containerd.enabled);
    assert_eq!(c.containerd.state, Path::new("/run/containerd"));
    assert!(c.overlay_globs.is_empty());
    assert_eq!(c.docker.data_root, Path::new("/var/lib/docker"));
    assert_eq!(c.podman.root, Path::new("/var/lib/containers/storage"));
    assert_eq!(c.crio.runroot, Path::new("/run/containers/storage"));
    assert!(c.docker.enabled && c.podman.enabled && c.crio.enabled);
}

#[test]
fn runtime_sections_are_read_and_can_be_disabled() {
    let c = Config::from_toml(
        "[discovery.docker]\ndata_root = \"/d\"\nenabled = false\n[discovery.podman]\nroot = \"/p\"\n\
         [discovery.crio]\nroot = \"/c\"\nrunroot = \"/cr\"\n",
        None,
    )
    .unwrap();
    assert!(!c.docker.enabled);
    assert_eq!(c.docker.data_root, Path::new("/d"));
    assert_eq!(c.podman.root, Path::new("/p"));
    assert_eq!((c.crio.root.as_path(), c.crio.runroot.as_path()), (Path::new("/c"), Path::new("/cr")));
    let err = Config::from_toml("[discovery.docker]\ndataroot = \"/d\"\n", None).unwrap_err().to_string();
    assert!(err.contains("dataroot"), "{err}");
}

#[test]
fn contract_keys_are_read() {
    let c = Config::from_toml(
        "mode = \"enforce\"\n[spool]\ndir = \"/x/spool\"\n[discovery]\noverlay_globs = [\"/tmp/t*/merged\"]\n",
        None,
    )
    .unwrap();
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.spool_dir, Path::new("/x/spool"));
    assert!(c.overlay_globset.is_match("/tmp/t1/merged"));
    assert!(!c.overlay_globset.is_match("/tmp/t1/sub/merged"), "* must not cross /");
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let err =
        Config::from_toml("mode = \"audit\"\n\n[spool]\ndirr = \"/x\"\n", Some(Path::new("/etc/d.toml")))
            .unwrap_err()
            .to_string();
    assert!(err.starts_with("/etc/d.toml: line 4:"), "{err}");
    assert!(err.contains("dirr"), "{err}");
}

#[test]
fn bad_mode_value_is_an_error_with_its_line() {
    let err = Config::from_toml("\nmode = \"block\"\n", Some(Path::new("c.toml"))).unwrap_err().to_string();
    assert!(err.starts_with("c.toml: line 2:"), "{err}");
    assert!(err.contains("block"), "{err}");
}

#[test]
fn bad_glob_names_its_index_and_line() {
    let err = Config::from_toml(
        "[discovery]\noverlay_globs = [\n  \"/ok/*\",\n  \"/bad/[\",\n]\n",
        Some(Path::new("c.toml")),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("c.toml: line 4: `discovery.overlay_globs[1]`"), "{err}");
    let err =
        Config::from_toml("[discovery]\noverlay_globs = [\"relative/*\"]\n", None).unwrap_err().to_string();
    assert!(err.contains("absolute"), "{err}");
}

#[test]
fn syntax_error_is_reported_with_line() {
    let err =
        Config::from_toml("mode = \"audit\"\n[spool\n", Some(Path::new("c.toml"))).unwrap_err().to_string();
    assert!(err.starts_with("c.toml: line 2:"), "{err}");
}

#[test]
fn spool_retention_and_daemon_keys() {
    let c = Config::from_toml(
        "[spool]\nmax_bytes = 1048576\nmax_age = \"30d\"\n[daemon]\nsocket = \"/tmp/x.sock\"\nstall_timeout_secs = 30\n",
        None,
    )
    .unwrap();
    assert_eq!(c.spool_max_bytes, Some(1 << 20));
    assert_eq!(c.spool_max_age, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(c.socket, Path::new("/tmp/x.sock"));
    assert_eq!(c.stall_timeout, Duration::from_secs(30));
    assert_eq!(
        Config::from_toml("[spool]\nmax_age = 3600\n", None).unwrap().spool_max_age,
        Some(Duration::from_secs(3600))
    );
    let err = Config::from_toml("[spool]\nmax_age = \"3 fortnights\"\n", Some(Path::new("c.toml")))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("c.toml: line 2: `spool.max_age`"), "{err}");
    assert_eq!(Config::defaults().spool_max_bytes, Some(DEFAULT_SPOOL_MAX_BYTES), "capped by default");
    assert_eq!(
        Config::from_toml("[spool]\nmax_bytes = 0\n", None).unwrap().spool_max_bytes,
        None,
        "0: no cap"
    );
    assert_eq!(crate::util::parse_duration("90m").unwrap(), Duration::from_secs(5400));
    assert!(crate::util::parse_duration("").is_err());
}

#[test]
fn policy_rules_are_read_and_errors_name_the_rule_and_field() {
    let c = Config::from_toml(
        "mode = \"audit\"\n[[policy.rules]]\nname = \"pay\"\naction = \"enforce\"\nnamespaces = [\"payments-*\"]\n\
         [[policy.rules]]\naction = \"allow\"\npaths = [\"/var/cache/jit/*\"]\n",
        None,
    )
    .unwrap();
    assert_eq!(c.policy.rules.len(), 2);
    assert_eq!(c.policy.rules[0].name, "pay");
    assert_eq!(c.policy.rules[1].name, "2");
    let err = Config::from_toml(
        "[[policy.rules]]\naction = \"audit\"\n\n[[policy.rules]]\naction = \"enforce\"\npaths = [\"/x/[\"]\n",
        Some(Path::new("c.toml")),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("c.toml: line 4: `policy.rules[1].paths[0]`"), "{err}");
    let err = Config::from_toml("[[policy.rules]]\nnamespaces = [\"x\"]\n", None).unwrap_err().to_string();
    assert!(err.contains("`policy.rules[0].action`") && err.contains("required"), "{err}");
    let err = Config::from_toml("[[policy.rules]]\naction = \"block\"\n", None).unwrap_err().to_string();
    assert!(err.contains("block"), "{err}");
    let err = Config::from_toml("[[policy.rules]]\naction = \"audit\"\nnamespace = [\"x\"]\n", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("namespace"), "unknown key: {err}");
}

#[test]
fn coverage_sections_are_read_and_bad_interpreters_name_the_entry() {
    let c = Config::defaults();
    assert!(c.scripts_enabled && c.loader_enabled && c.mounts_enabled && c.fileless_audit);
    assert!(!c.libraries_enabled, "off by default: the steady-state open() target is missed");
    assert_eq!(c.memfd_noexec, MemfdNoexec::Enforce);
    assert!(c.interpreters.names().contains(&"python*".to_owned()));
    let c = Config::from_toml(
        "[scripts]\nenabled = false\ninterpreters = [\"lua*\"]\n[loader]\nenabled = false\n\
         [mounts]\nenabled = false\n[fileless]\nmemfd_noexec = \"always\"\naudit = false\n\
         [libraries]\nenabled = true\n",
        None,
    )
    .unwrap();
    assert!(!c.scripts_enabled && !c.loader_enabled && !c.mounts_enabled && !c.fileless_audit);
    assert!(c.libraries_enabled);
    assert_eq!(c.memfd_noexec, MemfdNoexec::Always);
    assert_eq!(c.interpreters.names(), ["lua*".to_owned()]);
    let err = Config::from_toml(
        "[scripts]\ninterpreters = [\"sh\", \"/usr/bin/perl\"]\n",
        Some(Path::new("c.toml")),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("c.toml: line 2: `scripts.interpreters[1]`"), "{err}");
    let err = Config::from_toml("[findings]\nredact = [\"--pw\", \"TOKEN=*\"]\n", Some(Path::new("c.toml")))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("c.toml: line 2: `findings.redact[1]`"), "{err}");
    let c = Config::from_toml("[findings]\nredact = []\n", None).unwrap();
    assert!(c.redact.patterns().is_empty());
    assert_eq!(
        Config::from_toml("", None).unwrap().redact.patterns().len(),
        crate::redact::DEFAULT_PATTERNS.len()
    );
    let err = Config::from_toml("[fileless]\nmemfd_noexec = \"sometimes\"\n", None).unwrap_err().to_string();
    assert!(err.contains("sometimes"), "{err}");
}

#[test]
fn limits_have_safe_defaults_and_bad_values_name_the_key() {
    let c = Config::defaults();
    assert_eq!(c.max_hash_bytes, 512 << 20);
    assert_eq!(c.max_hash_time, Duration::from_secs(5));
    assert_eq!(c.max_pending, None);
    assert_eq!(c.max_arg_bytes, 8192);
    assert_eq!((c.container_burst, c.container_per_sec), (200, 20.0));
    assert_eq!(c.stall_timeout, Duration::from_secs(10));
    let c = Config::from_toml(
        "[hashing]\nmax_file_bytes = 1000\nmax_secs = 0.5\nmax_pending = 64\n\
         [findings]\nmax_arg_bytes = 100\ncontainer_burst = 5\ncontainer_per_sec = 0.5\n",
        None,
    )
    .unwrap();
    assert_eq!(
        (c.max_hash_bytes, c.max_hash_time, c.max_pending),
        (1000, Duration::from_millis(500), Some(64))
    );
    assert_eq!((c.max_arg_bytes, c.container_burst, c.container_per_sec), (100, 5, 0.5));
    for (toml, key) in [
        ("[hashing]\nmax_secs = 0\n", "hashing.max_secs"),
        ("[hashing]\nmax_secs = 600\n", "hashing.max_secs"),
        ("[hashing]\nmax_pending = 2\n", "hashing.max_pending"),
        ("[hashing]\nmax_file_bytes = 0\n", "hashing.max_file_bytes"),
        ("[findings]\ncontainer_per_sec = -1.0\n", "findings.container_per_sec"),
        ("[findings]\nmax_arg_bytes = 0\n", "findings.max_arg_bytes"),
    ] {
        let err = Config::from_toml(toml, Some(Path::new("c.toml"))).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")) && err.contains("line 2"), "{toml}: {err}");
    }
}

#[test]
fn zero_workers_is_rejected() {
    let err = Config::from_toml("[hashing]\nworkers = 0\n", None).unwrap_err().to_string();
    assert!(err.contains("hashing.workers"), "{err}");
}

#[test]
fn evidence_and_export_are_read_and_bad_values_name_the_key() {
    let c = Config::defaults();
    assert!(c.evidence.enabled);
    assert_eq!(c.evidence.dir, Path::new(DEFAULT_STATE_DIR).join("evidence"));
    assert_eq!((c.evidence.max_file_bytes, c.evidence.max_total_bytes), (64 << 20, 1 << 30));
    assert!(c.export.ocsf_file.is_none() && c.export.webhook.is_none());
    let c = Config::from_toml(
        "state_dir = \"/srv/dg\"\n[evidence]\nmax_file_bytes = 10\n[export]\nocsf_file = \"/var/log/x.jsonl\"\n\
         webhook = \"http://sidekick:2801/falco\"\nwebhook_format = \"falco\"\n[export.webhook_headers]\nX-Token = \"t\"\n",
        None,
    )
    .unwrap();
    assert_eq!(c.evidence.dir, Path::new("/srv/dg/evidence"));
    assert_eq!(c.evidence.max_file_bytes, 10);
    let w = c.export.webhook.unwrap();
    assert_eq!((w.authority.as_str(), w.path.as_str()), ("sidekick:2801", "/falco"));
    assert_eq!(w.format, WebhookFormat::Falco);
    assert_eq!(w.headers, vec![("X-Token".to_owned(), "t".to_owned())]);
    let w = Config::from_toml("[export]\nwebhook = \"http://h\"\n", None).unwrap().export.webhook.unwrap();
    assert_eq!((w.authority.as_str(), w.path.as_str(), w.format), ("h:80", "/", WebhookFormat::Driftgate));
    assert!(w.tls.is_none());
    let w = Config::from_toml(
        "[export]\nwebhook = \"https://siem.example:8443/in\"\nwebhook_ca_file = \"/etc/ca.pem\"\n\
         webhook_client_cert = \"/c.pem\"\nwebhook_client_key = \"/c.key\"\n",
        None,
    )
    .unwrap()
    .export
    .webhook
    .unwrap();
    assert_eq!(w.authority, "siem.example:8443");
    let tls = w.tls.unwrap();
    assert_eq!(
        (tls.server_name.as_str(), tls.ca_file.as_deref()),
        ("siem.example", Some(Path::new("/etc/ca.pem")))
    );
    let w =
        Config::from_toml("[export]\nwebhook = \"https://[::1]/x\"\n", None).unwrap().export.webhook.unwrap();
    assert_eq!((w.authority.as_str(), w.tls.unwrap().server_name.as_str()), ("[::1]:443", "::1"));
    let o = Config::from_toml("[export.otlp]\nendpoint = \"http://collector:4317\"\n", None)
        .unwrap()
        .export
        .otlp
        .unwrap();
    assert_eq!((o.authority.as_str(), o.protocol, o.queue), ("collector:4317", OtlpProtocol::Grpc, 4096));
    let o = Config::from_toml(
        "[export.otlp]\nendpoint = \"https://collector\"\nprotocol = \"http/protobuf\"\n[export.otlp.headers]\nX-Tenant = \"a\"\n",
        None,
    )
    .unwrap()
    .export
    .otlp
    .unwrap();
    assert_eq!((o.authority.as_str(), o.path.as_str()), ("collector:443", "/v1/logs"));
    assert_eq!(o.headers, vec![("x-tenant".to_owned(), "a".to_owned())]);
    assert!(o.tls.is_some());
    for (text, key) in [
        ("[export.otlp]\nprotocol = \"grpc\"\n", "line 1: `export.otlp.endpoint`"),
        ("[export.otlp]\nendpoint = \"collector:4317\"\n", "line 2: `export.otlp.endpoint`"),
        ("[export.otlp]\nendpoint = \"http://c:4317\"\nprotocol = \"udp\"\n", "udp"),
        (
            "[export.otlp]\nendpoint = \"http://c:4317\"\n[export.otlp.headers]\n\"bad name\" = \"x\"\n",
            "`export.otlp.headers.bad name`",
        ),
        ("[export]\nwebhook = \"ftp://h/\"\n", "line 2: `export.webhook`"),
        ("[export]\nwebhook = \"http://h/\"\nwebhook_ca_file = \"/ca\"\n", "line 2: `export.webhook`"),
        ("[export]\nwebhook = \"https://h/\"\nwebhook_client_cert = \"/c\"\n", "line 2: `export.webhook`"),
        ("[export]\nwebhook = \"https://h:x/\"\n", "line 2: `export.webhook`"),
        ("[export]\nwebhook = \"http://u:p@h/\"\n", "line 2: `export.webhook`"),
        (
            "[export]\nwebhook = \"http://h/\"\nwebhook_timeout_secs = 0\n",
            "line 3: `export.webhook_timeout_secs`",
        ),
        ("[evidence]\nmax_total_bytes = 0\n", "line 2: `evidence.max_total_bytes`"),
        ("[[policy.rules]]\naction = \"allow\"\nresponse = \"freeze\"\n", "`policy.rules[0].response`"),
    ] {
        let err = Config::from_toml(text, Some(Path::new("c.toml"))).unwrap_err().to_string();
        assert!(err.contains(key), "{text:?}: {err}");
    }
    let err =
        Config::from_toml("[[policy.rules]]\naction = \"enforce\"\nresponse = \"kill\"\n", None).unwrap_err();
    assert!(err.to_string().contains("kill"), "{err}");
    let c =
        Config::from_toml("[[policy.rules]]\naction = \"enforce\"\nresponse = \"freeze\"\n", None).unwrap();
    assert_eq!(c.policy.rules[0].response, Some(crate::policy::Response::Freeze));
}

#[test]
fn header_values_take_environment_variables() {
    let env = |n: &str| (n == "TOKEN").then(|| "s3cret".to_owned());
    assert_eq!(super::check::expand_env("Bearer ${TOKEN}", env).unwrap(), "Bearer s3cret");
    assert_eq!(super::check::expand_env("a$b ${TOKEN}${TOKEN}", env).unwrap(), "a$b s3crets3cret");
    assert!(super::check::expand_env("${UNSET}", env).unwrap_err().contains("UNSET is not set"));
    assert!(super::check::expand_env("${1X}", env).unwrap_err().contains("not an environment"));
    assert!(super::check::expand_env("x ${TOKEN", env).unwrap_err().contains("closing"));
    // The file keeps the form; the daemon expands it, and an unset variable is an error
    // naming the header.
    let o = Config::from_toml(
        "[export.otlp]\nendpoint = \"http://c:4317\"\n[export.otlp.headers]\nauthorization = \"Bearer ${DRIFTGATE_TEST_SURELY_UNSET}\"\n",
        Some(Path::new("c.toml")),
    )
    .unwrap()
    .export
    .otlp
    .unwrap();
    assert_eq!(o.headers[0].1, "Bearer ${DRIFTGATE_TEST_SURELY_UNSET}");
    let err = super::check::expand_headers("export.otlp.headers", &o.headers).unwrap_err();
    assert!(
        err.contains("`export.otlp.headers.authorization`")
            && err.contains("DRIFTGATE_TEST_SURELY_UNSET is not set"),
        "{err}"
    );
    let path = [("p".to_owned(), "${PATH}".to_owned())];
    assert_eq!(super::check::expand_headers("k", &path).unwrap()[0].1, std::env::var("PATH").unwrap());
    // A malformed reference is refused in the file already.
    let err = Config::from_toml(
        "[export]\nwebhook = \"http://h/\"\n[export.webhook_headers]\nX = \"${not closed\"\n",
        Some(Path::new("c.toml")),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`export.webhook_headers.X`") && err.contains("closing"), "{err}");
}
