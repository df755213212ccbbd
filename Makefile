# ordeal: see README.md. Every target runs from a fresh clone with only the Rust toolchain.
CARGO ?= cargo
SHARED ?= $(abspath ../shared)
export ORDEAL_SHARED := $(SHARED)

.PHONY: check check-etcd test verify fix bench bench-store sim campaign regressions nightly build net-tools testdata

# As root, partitions run in a network namespace with iptables; without root (or without
# iptables) the harness falls back to its userspace proxy and says so.
net-tools:
	@if [ "$$(id -u)" = 0 ] && ! command -v iptables >/dev/null 2>&1; then \
	  (apt-get update -q && apt-get install -y -q iptables iproute2) >/dev/null 2>&1 \
	  || echo "make: could not install iptables; partitions will use the userspace proxy"; \
	fi

build:
	$(CARGO) build --release --workspace

# Extra flags for every campaign target, e.g. CAMPAIGN_FLAGS="--jobs 2 --keep failures".
CAMPAIGN_FLAGS ?=

# The main job: the check campaign (campaigns/check.toml) against the bundled store, then the
# regressions (every seed and fault schedule that once exposed a planted bug), then the sharded
# store (campaigns/sharded.toml: each --cc valid, each planted shard bug caught; without root
# over the userspace proxy, which also carries traffic between groups). Each writes
# results/campaigns/<name>/<start>/ (index.html, summary.json, junit.xml) and results/index.html.
check: build net-tools
	./target/release/ordeal campaign campaigns/check.toml $(CAMPAIGN_FLAGS)
	./target/release/ordeal campaign campaigns/regressions.toml $(CAMPAIGN_FLAGS)
	@[ "$$(id -u)" = 0 ] || echo "make check: not root: campaigns/sharded.toml runs over the userspace proxy (its net = \"auto\")"
	./target/release/ordeal campaign campaigns/sharded.toml $(CAMPAIGN_FLAGS)

regressions: build net-tools
	./target/release/ordeal campaign campaigns/regressions.toml $(CAMPAIGN_FLAGS)

# A real etcd cluster under every fault (campaigns/etcd.toml). Needs `etcd` (apt-get install
# etcd-server) and root for the network namespace.
check-etcd: build net-tools
	@command -v etcd >/dev/null || { echo "make check-etcd: etcd not on PATH (apt-get install etcd-server)"; exit 2; }
	./target/release/ordeal campaign campaigns/etcd.toml $(CAMPAIGN_FLAGS)

# All tests (every test binary runs even after one fails, so a red run lists every failure).
test:
	$(CARGO) test --workspace --release --no-fail-fast

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
	$(CARGO) run --release -p paxos-kv --bin paxos-kv-shard-bench

sim:
	ORDEAL_SIM_SEEDS=20000 $(CARGO) test --release -p paxos-kv --test simulation -- --nocapture

campaign: build
	./target/release/ordeal campaign $(CAMPAIGN) $(CAMPAIGN_FLAGS)

# The whole nightly campaign on one machine: under 2 hours with one job (the estimate it prints
# first is an upper bound; a test keeps it under 2 hours).
nightly: build net-tools
	./target/release/ordeal campaign campaigns/nightly.toml --estimate $(CAMPAIGN_FLAGS)
	./target/release/ordeal campaign campaigns/nightly.toml $(CAMPAIGN_FLAGS)

# The known-verdict test data ($(SHARED)/testdata) from its public sources at pinned commits.
testdata:
	.ci/fetch-testdata --out $(SHARED)/testdata
