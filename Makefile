# DataGuardian — developer entry points. `make demo` and `make test` are the README's contract.
CARGO ?= cargo
SIM_DIR := target/sim

.PHONY: all build test lint fmt crds chart deps demo e2e gameday sim-up sim-down bench images base-images deny sbom

all: build

## build: compile the workspace (operator/agent binary and the API stand-in)
build:
	$(CARGO) build --workspace --bins

## images: the agent and operator images (release binary) and the test sandbox images, on the local Docker Engine
images:
	scripts/build-images.sh --profile $(or $(PROFILE),release)

## base-images: debian:bookworm-slim from debootstrap (the engine here cannot pull)
base-images:
	scripts/base-images.sh

## deps: install the services and tools the tests use (MariaDB, Prometheus, moto S3, zstd, Go + sprig for the chart renderer, kubernetes-validate, Lua 5.1)
deps:
	scripts/install-deps.sh

## test: every test — unit, CRD drift, examples, RBAC matrix, agent against real databases and S3, stand-in contract tests, e2e
test: deps
	$(CARGO) test --workspace --no-fail-fast

## lint: formatting and clippy with warnings denied
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## deny: cargo-deny offline — licenses (allow-list), bans, sources (crates.io only) and RustSec advisories from ../shared/advisory-db.bundle (deny.toml)
deny:
	scripts/deny.sh

## sbom: CycloneDX SBOMs into target/sbom/ — the crates of both binaries (cargo-cyclonedx) and the Debian packages of the agent and operator images (built with the debug binary when missing) — then checks what they list
sbom:
	scripts/sbom.sh

## crds: regenerate crds/ from the Rust API types, then their copies in the chart and config/crd (make chart)
crds:
	$(CARGO) run -q --bin dataguardian -- crd --out-dir crds
	$(MAKE) chart

## chart: regenerate the copies of crds/, config/rbac/, config/prometheus/, config/grafana/ and the crate version in charts/dataguardian and config/ (tests/chart.rs fails when they drift)
chart:
	$(CARGO) run -q -p testkit --bin sync-chart

## demo: the product end to end on the local stand-ins (API stand-in, PostgreSQL, MariaDB, S3)
demo: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --test e2e demo -- --ignored --nocapture --test-threads=1

## e2e: the end-to-end scenarios only (part of `make test`)
e2e:
	$(CARGO) test --test e2e

## gameday: the seeded fault campaign (docs/reliability.md): GAMEDAY_SEED reproduces one, GAMEDAY_BACKUPS (50), GAMEDAY_RESTORES (10), GAMEDAY_PARALLEL (3) size it; the report also goes to target/gameday/report.txt
gameday: deps
	@mkdir -p target/gameday
	GAMEDAY_REPORT=$(CURDIR)/target/gameday/report.txt $(CARGO) test --test e2e gameday_campaign -- --ignored --nocapture --test-threads=1

## sim-up: start the Kubernetes API stand-in (with its Job runner: Job pods are Docker containers of the images) in the background
sim-up:
	$(CARGO) build -p kube-sim -p dataguardian --bins
	scripts/build-images.sh --profile debug --binary target/debug/dataguardian
	@mkdir -p $(SIM_DIR)
	@if [ -f $(SIM_DIR)/pid ] && kill -0 $$(cat $(SIM_DIR)/pid) 2>/dev/null; then echo "already running (pid $$(cat $(SIM_DIR)/pid))"; else \
	  nohup target/debug/kube-sim --listen 127.0.0.1:0 --crds crds --state-dir $(SIM_DIR) \
	    --kubeconfig-out $(SIM_DIR)/kubeconfig --run-jobs > $(SIM_DIR)/kube-sim.log 2>&1 & echo $$! > $(SIM_DIR)/pid; \
	  for i in $$(seq 1 50); do [ -s $(SIM_DIR)/port ] && break; sleep 0.1; done; \
	  echo "kube-sim on 127.0.0.1:$$(cat $(SIM_DIR)/port) (pid $$(cat $(SIM_DIR)/pid))"; fi
	@echo "export KUBECONFIG=$(CURDIR)/$(SIM_DIR)/kubeconfig"

## sim-down: stop the stand-in started by sim-up
sim-down:
	@if [ -f $(SIM_DIR)/pid ]; then kill $$(cat $(SIM_DIR)/pid) 2>/dev/null || true; rm -f $(SIM_DIR)/pid $(SIM_DIR)/port; echo "kube-sim stopped"; else echo "kube-sim is not running"; fi

## bench: data-path benchmarks (release build; prints ratios against the DESIGN.md §4 anchors)
bench:
	@test -x bench/run.sh || { echo "bench/run.sh is missing" >&2; exit 1; }
	bench/run.sh

## bench-operator: operator benchmark on the API stand-in (1,000 policies, 10,000 runs; release build; prints ratios against the DESIGN.md §4 targets)
.PHONY: bench-operator
# `cargo bench` builds the operator binary (and the harness) with the release settings first; a
# separate `cargo build --release --bin dataguardian` would resolve features without the
# dev-dependencies and compile everything a second time.
bench-operator:
	$(CARGO) bench --bench operator
