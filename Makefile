# Meridian: the two set-up commands are `make demo` and `make test` (see README.md).
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
MERIDIAN := $(TARGET_DIR)/debug/meridian
# Always build the whole workspace: cargo resolves features per selection, and building one
# package alone (`cargo run -p meridian`) would hash RocksDB's build differently and compile its
# C++ a second time.
BUILD := $(CARGO) build --workspace --bins
# Extra arguments for the test run, e.g. `make test TEST_ARGS=storage`.
TEST_ARGS ?=

.PHONY: all demo test prereqs prereqs-test check lint fmt bench bench-foundation bench-storage bench-paxos bench-cluster bench-micro bench-commit bench-bank bench-compare bench-flamegraph sim-paxos sim-bank chaos chaos-ci

all: test

## prereqs: the build's system packages (C++ compiler, libclang); prereqs-test adds the tools the
## tests drive (psql, pgbench, chromium). Both install what is missing with apt-get when root.
prereqs:
	@scripts/prereqs.sh build

prereqs-test:
	@scripts/prereqs.sh test

## demo: build and run the main job on a local embedded setup.
demo: prereqs
	$(BUILD)
	$(MERIDIAN) demo $(ARGS)

## test: the whole test suite.
test: prereqs-test
	$(CARGO) test --workspace $(TEST_ARGS)

## sim-paxos: the seeded Paxos simulation. SEEDS=N runs seeds 0..N; SEED=S replays one seed.
SEEDS ?= 200
sim-paxos: prereqs
	$(BUILD)
ifdef SEED
	$(TARGET_DIR)/debug/sim-paxos --seed $(SEED)
else
	$(TARGET_DIR)/debug/sim-paxos --seeds $(SEEDS)
endif

## chaos: a long soak: the bank workload on 5 local node processes under every fault (kill -9,
## SIGSTOP, partitions, clock skew within ε, leader transfers) for DURATION (default 30m), then
## its checks; exits non-zero on any violation. SEED=S repeats a fault schedule; ARGS adds options.
DURATION ?= 30m
CHAOS_FAULTS := kill,pause,partition,skew,leader
chaos: prereqs
	$(BUILD)
	$(MERIDIAN) chaos bank --nodes 5 --duration $(DURATION) --faults $(CHAOS_FAULTS) $(if $(SEED),--seed $(SEED)) $(ARGS)

## chaos-ci: a bounded chaos run (under 3 minutes): 90 s of every safe fault on 5 nodes. (`make test`,
## which CI runs, has a 45 s run of the same: cli/tests/chaos.rs.)
chaos-ci: prereqs
	$(BUILD)
	$(MERIDIAN) chaos bank --nodes 5 --duration 90s --faults $(CHAOS_FAULTS) $(if $(SEED),--seed $(SEED)) $(ARGS)

## sim-bank: the whole-cluster simulation (real node cores; bank, list-append and external-
## consistency checkers under faults). SEEDS=N runs seeds 0..N; SEED=S replays one seed;
## UNSAFE=skip-commit-wait|early-lock-release|ack-before-persist breaks one rule on purpose.
sim-bank: prereqs
	$(BUILD)
ifdef SEED
	$(TARGET_DIR)/debug/sim-bank --seed $(SEED) $(if $(UNSAFE),--unsafe $(UNSAFE))
else
	$(TARGET_DIR)/debug/sim-bank --seeds $(SEEDS) $(if $(UNSAFE),--unsafe $(UNSAFE))
endif

## check: formatting and lints, as CI runs them.
check: fmt lint

fmt:
	$(CARGO) fmt --all -- --check

lint: prereqs
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bench: every benchmark, optimised build; results are printed as Markdown tables.
## bench: the transaction benchmarks of issue 8 (Spanner Tables 3 and 4, bank by concurrency, the
## comparison with PostgreSQL and etcd). bench-foundation: storage, Paxos and cluster replication.
bench: bench-micro bench-commit bench-bank bench-compare
bench-foundation: bench-storage bench-paxos bench-cluster

bench-storage: prereqs
	$(BUILD) --release
	$(TARGET_DIR)/release/meridian bench storage $(ARGS)

bench-paxos: prereqs
	$(BUILD) --release
	$(TARGET_DIR)/release/meridian bench paxos $(ARGS)

bench-cluster: prereqs
	$(BUILD) --release
	$(TARGET_DIR)/release/meridian bench replicate $(ARGS)
	$(TARGET_DIR)/release/meridian bench replicate --epsilon-ms 4 --concurrency 1,16 $(ARGS)
	$(TARGET_DIR)/release/meridian bench idle $(ARGS)

## bench-micro: Spanner Table 3's microbenchmarks: read-write (one range, two ranges by 2PC),
## read-only and snapshot transactions at 1, 3 and 5 replicas, ε = 0 and 4 ms; JSON and SVG plots
## in target/bench/ (`meridian bench micro --help` for the workloads `make bench` leaves out).
MICRO_WORKLOADS := rw-one-range,rw-two-ranges,read-only,stale,follower-snap
bench-micro: prereqs
	$(BUILD) --release
	mkdir -p $(TARGET_DIR)/bench
	$(TARGET_DIR)/release/meridian bench micro --seconds 2 --workloads $(MICRO_WORKLOADS) --json $(TARGET_DIR)/bench/micro.json --plot $(TARGET_DIR)/bench/micro.svg $(ARGS)

## bench-commit: cross-shard two-phase commit by participant count (Spanner Table 4), ε = 0 and
## 4 ms; JSON and an SVG plot in target/bench/.
bench-commit: prereqs
	$(BUILD) --release
	mkdir -p $(TARGET_DIR)/bench
	$(TARGET_DIR)/release/meridian bench commit --seconds 3 --json $(TARGET_DIR)/bench/commit.json --plot $(TARGET_DIR)/bench/commit.svg $(ARGS)

## bench-bank: bank transfers across ranges at rising concurrency until throughput stops growing.
bench-bank: prereqs
	$(BUILD) --release
	mkdir -p $(TARGET_DIR)/bench
	$(TARGET_DIR)/release/meridian bench bank --seconds 5 --json $(TARGET_DIR)/bench/bank.json --plot $(TARGET_DIR)/bench/bank.svg $(ARGS)

## bench-compare: the bank transfers against Meridian, PostgreSQL (pgbench, serializable) and etcd
## (3 members, txn compare-and-swap) in one run; installs PostgreSQL and etcd with apt-get when
## root. Options with ARGS, e.g. ARGS="--seconds 5 --concurrency 1,8,32"; JSON in
## $(TARGET_DIR)/bench/compare. The last step of `make bench`.
bench-compare: prereqs
	CARGO_TARGET_DIR=$(TARGET_DIR) bench/compare $(ARGS)

## bench-flamegraph: where the CPU goes during `bench bank` (perf, all processes, inferno SVG in
## target/bench/bank-flamegraph.svg); needs `cargo install inferno`. Not part of `make bench`.
bench-flamegraph: prereqs
	$(BUILD) --release
	bench/flamegraph $(ARGS)
