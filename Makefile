# Coffer: the two set-up commands are `make run` and `make test`.
# Both install missing system packages first (scripts/install-deps.sh).
#
# Builds go to a target directory outside the clone when one exists, so CI
# runs on the same machine reuse it (RocksDB's C++ build is the slow part).

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/coffer-target
export CARGO_TERM_COLOR ?= never
CARGO ?= cargo

.PHONY: run demo test deps check alerts bench loadgen release fmt nemesis read-costs

## Runs two local regions of three nodes each, the primary with a sample
## treasury and its disaster-recovery standby (`coffer dev --dr`: data,
## configs and logs in data/dev; Ctrl-C stops them). Built, then run:
## `cargo run` cannot take --workspace, and a build of one package resolves
## other features and rebuilds RocksDB's C++ (see ARCHITECTURE.md,
## "Cross-cutting concerns", Build).
run: deps
	$(CARGO) build --workspace --bins --examples
	$(CARGO_TARGET_DIR)/debug/coffer dev --dr

## Runs the ledger demo: a small treasury on the state machine alone.
demo: deps
	$(CARGO) build --workspace --examples
	$(CARGO_TARGET_DIR)/debug/examples/treasury

## Runs every check: formatting, clippy, the alert rules, and all tests.
test: deps check alerts
	$(CARGO) test --workspace

## The Prometheus alert rules: checked, then unit-tested (part of `make test`).
alerts: deps
	promtool check rules api/prometheus/alerts.yml
	promtool test rules api/prometheus/alerts_test.yml

## Formatting and lints (part of `make test`).
check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The real-process nemesis, long: `make nemesis FAULTS=300 [SEED=S]`.
## The same test `make test` runs with its default of 24 faults; the run
## prints its seed, and SEED replays its fault schedule. `--workspace`
## keeps the one RocksDB build (see `run`).
FAULTS ?= 300
SEED ?=
nemesis: deps
	$(CARGO) build --workspace --bins --examples
	COFFER_NEMESIS_FAULTS=$(FAULTS) COFFER_NEMESIS_SEED=$(SEED) \
		$(CARGO) test --workspace -- --nocapture nemesis_

## The criterion benchmarks (not part of `make test`).
bench: deps
	$(CARGO) bench --workspace

## The load generator (`coffer bench`, release build) against a fresh local
## cluster; options in ARGS, e.g. make loadgen ARGS="--distribution hot".
## Reports go to data/bench/.
loadgen: release
	$(CARGO_TARGET_DIR)/release/coffer bench $(ARGS)

## Whole-state reads on a large ledger while payments go on (not part of
## `make test`; about 15 minutes and 20 GB of disk at the default size):
## digests, trial balances, as-of reads and indexed queries must each answer
## within 50 ms, the probe load's p99 stay within twice its value alone, no
## leader change, and a switchover pause writes at most a second, e.g.
## make read-costs TRANSFERS=10000000. See scripts/read-costs.sh.
read-costs: release
	scripts/read-costs.sh

## The release build of every binary; each binary's line tables are moved to
## BINARY.debug beside it (scripts/split-debug.sh), for profilers.
release: deps
	$(CARGO) build --release --workspace --bins --examples
	scripts/split-debug.sh $(CARGO_TARGET_DIR)/release/coffer $(CARGO_TARGET_DIR)/release/coffer-bench

fmt:
	$(CARGO) fmt --all

deps:
	@scripts/install-deps.sh
