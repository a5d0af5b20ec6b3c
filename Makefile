.PHONY: run test bench
# Run the daemon in the foreground with embedded defaults (needs root).
run:
	cargo build --release && ./target/release/driftgate run
# The whole test suite; installs busybox-static, containerd, runc and umoci if missing.
test:
	scripts/test.sh
