# ordeal: see README.md. Every target runs from a fresh clone with only the Rust toolchain.
CARGO ?= cargo
SHARED ?= $(abspath ../shared)
export ORDEAL_SHARED := $(SHARED)

.PHONY: check check-etcd test verify fix bench bench-store sim campaign nightly build net-tools

# As root, partitions run in a network namespace with iptables; without root (or without
# iptables) the harness falls back to its userspace proxy and says so.
net-tools:
	@if [ "$$(id -u)" = 0 ] && ! command -v iptables >/dev/null 2>&1; then \
	  (apt-get update -q && apt-get install -y -q iptables iproute2) >/dev/null 2>&1 \
	  || echo "make: could not install iptables; partitions will use the userspace proxy"; \
	fi

build:
	$(CARGO) build --release --workspace

# The main job: the check campaign (campaigns/check.toml) against the bundled store.
check: build net-tools
	./target/release/ordeal campaign campaigns/check.toml

# A real etcd cluster under every fault (campaigns/etcd.toml). Needs `etcd` (apt-get install
# etcd-server) and root for the network namespace.
check-etcd: build net-tools
	@command -v etcd >/dev/null || { echo "make check-etcd: etcd not on PATH (apt-get install etcd-server)"; exit 2; }
	./target/release/ordeal campaign campaigns/etcd.toml

# All tests.
test:
	$(CARGO) test --workspace --release

verify:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings
	$(MAKE) test

fix:
	$(CARGO) fmt --all
	$(CARGO) clippy --workspace --all-targets --release --fix --allow-dirty --allow-staged

# Checker speed: linearizability (porcupine data, generated 1M ops), then transactions (Elle).
bench:
	$(CARGO) run --release -p ordeal-checker --bin ordeal-bench -- $(SHARED)/testdata
	$(CARGO) run --release -p ordeal-checker --bin ordeal-txn-bench

bench-store: build
	$(CARGO) run --release -p paxos-kv --bin paxos-kv-bench

sim:
	ORDEAL_SIM_SEEDS=20000 $(CARGO) test --release -p paxos-kv --test simulation -- --nocapture

campaign: build
	./target/release/ordeal campaign $(CAMPAIGN)

nightly: build
	./target/release/ordeal campaign campaigns/nightly.toml
