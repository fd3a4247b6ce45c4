# Lifeboat developer entry points. Two commands set everything up on a fresh machine:
#   make demo   - build the local sandbox and run the failover demo
#   make test   - lint, type-check and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
# The product (controller/), the local test world (sandbox/), repository tooling (hack/),
# tests and the benchmark.
SOURCES := controller sandbox hack tests bench
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: all demo demo-peers sandbox-peers test lint typecheck pytest unit fuzz chaos-quorum chaos-peers chaos-peers-sandbox assets crds manifests sandbox bench bench-probes bench-failover bench-peers bench-memory bench-cli clean help

help:
	@echo "make demo    - start the local sandbox and run the failover demo"
	@echo "make test    - lint, type-check and run every test (builds the sandbox on first use)"
	@echo "make assets  - build (or locate) kube-apiserver, etcd and kubectl for the sandbox"
	@echo "make sandbox - start the sandbox and keep it running (Ctrl-C to stop)"
	@echo "make demo-peers - three Lifeboat peers; the primary region dies with its peer"
	@echo "make sandbox-peers - the three peer clusters, each running lifeboat, until Ctrl-C"
	@echo "make bench   - object replication benchmark against rclone (writes bench/RESULTS.md)"
	@echo "make bench-probes - probe engine benchmark against blackbox_exporter (bench/RESULTS.md)"
	@echo "make bench-failover - detection, RTO and fleets of 10/100/1,000 apps on one operator (bench/RESULTS.md)"
	@echo "make bench-peers - a peer's publication: size and cost per heartbeat by apps (bench/RESULTS.md)"
	@echo "make bench-memory - replication memory by bucket size, up to 1,000,000 objects (bench/RESULTS.md)"
	@echo "make bench-cli - how long \`kubectl lifeboat status\` takes (BEFORE=<checkout> to compare)"
	@echo "make manifests - regenerate CRDs and install bundles from the Python models"
	@echo "make fuzz    - 10,000 mutated specs and statuses through the per-app worker (FUZZ_SEED=n)"
	@echo "make chaos-quorum - 1,000 seeded random fault runs of the peers' leadership (CHAOS_SEED=n)"
	@echo "make chaos-peers  - seeded random fault runs of the peers whole: DNS fencing, quorum evidence (CHAOS_RUNS=n, CHAOS_PEERS=3|5)"
	@echo "make chaos-peers-sandbox - the same on the sandbox's real parts, ~2 min a run (SANDBOX_CHAOS_RUNS=n, CHAOS_SEED=s)"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The dev dependency group (uv's default) brings the sandbox/ workspace member and the tools.
# Bytecode is compiled at install, as the image does (UV_COMPILE_BYTECODE): with
# PYTHONDONTWRITEBYTECODE set, every process would otherwise compile its imports from
# source, which costs seconds per operator start and left the operator's RSS 56 MiB higher
# (the parser's peak for kubernetes' 4 MB generated modules; 205 against 149 MiB, 1 app).
$(VENV)/.synced: pyproject.toml sandbox/pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

assets: $(VENV)/.synced
	$(BIN)/lifeboat-sandbox assets

demo: assets
	$(BIN)/lifeboat-sandbox demo

sandbox: assets
	$(BIN)/lifeboat-sandbox up

demo-peers: assets
	$(BIN)/lifeboat-sandbox demo --peers

sandbox-peers: assets
	$(BIN)/lifeboat-sandbox up --peers

lint: $(VENV)/.synced
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)

typecheck: $(VENV)/.synced
	$(BIN)/mypy

unit: $(VENV)/.synced
	$(BIN)/pytest -m "not integration" -q

pytest: assets
	$(BIN)/pytest -q

test: lint typecheck pytest

# The per-app worker against 10,000 mutated specs and statuses (tests/worker_fuzz.py; about
# 15 minutes on 2 shared cores). Prints cases, crashes, epoch regressions and the seed;
# FUZZ_SEED=n repeats a run, FUZZ_CASES=n changes its size.
FUZZ_CASES ?= 10000
fuzz: $(VENV)/.synced
	$(BIN)/python -m tests.worker_fuzz --cases $(FUZZ_CASES) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

# The peers' leadership under seeded random faults (tests/quorum_chaos.py: peer kills,
# clusters down or paused, cuts, then a region loss; 1 s Leases, 8 runs at once, about 25 s
# per batch). Prints runs, violations and the seed; CHAOS_SEED=n repeats a run.
CHAOS_RUNS ?= 1000
CHAOS_PEERS ?= 3
chaos-quorum: $(VENV)/.synced
	$(BIN)/python -m tests.quorum_chaos --runs $(CHAOS_RUNS) --peers $(CHAOS_PEERS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

# The peers whole (tests/peers_chaos.py: electors, peer links, status writers and app
# workers over in-memory clusters, DNS and probes) under seeded random faults, then a region
# loss; 6 runs at once, about 45 s per batch. Checks DNS fencing, one leader, and no move
# without a majority's evidence; prints runs, violations, moves and the seed.
chaos-peers: $(VENV)/.synced
	$(BIN)/python -m tests.peers_chaos --runs $(CHAOS_RUNS) --peers $(CHAOS_PEERS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

# Three real kube-apiservers, three `lifeboat run --peer-name`, moto and the zonal endpoints:
# a world of its own per run (about two minutes each on 2 cores).
SANDBOX_CHAOS_RUNS ?= 5
chaos-peers-sandbox: $(VENV)/.synced
	$(BIN)/python -m tests.peers_sandbox_chaos --runs $(SANDBOX_CHAOS_RUNS) --steps 10 $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

# Object replication against rclone (100,000 objects; about an hour on 2 cores): not a test.
bench: $(VENV)/.synced
	$(BIN)/python -m bench.objects --report bench/RESULTS.md

# The probe engine against blackbox_exporter (3 runs of each setting; about 8 minutes).
bench-probes: $(VENV)/.synced
	$(BIN)/python -m bench.probes --report bench/RESULTS.md

# The failover path: detection and RTO over 30 outages per setting, then fleets of 10, 100
# and 1,000 apps on one operator (FLEET=... to choose; about an hour on 2 cores).
FLEET ?= 10 100 1000
bench-failover: $(VENV)/.synced
	$(BIN)/python -m bench.failover --fleet $(FLEET) --report bench/RESULTS.md

# A peer's publication (LifeboatPeers status) by number of apps (about 3 minutes).
bench-peers: $(VENV)/.synced
	$(BIN)/python -m bench.peers --report bench/RESULTS.md
# `kubectl lifeboat status`, start to answer, against a local kube-apiserver (a minute).
bench-cli: $(VENV)/.synced
	$(BIN)/python -m bench.cli_status $(if $(BEFORE),--source $(BEFORE))

# Replication memory by bucket size: 20k, 200k and 1M objects (tracemalloc peak, RSS).
bench-memory: $(VENV)/.synced
	$(BIN)/python -m bench.memory --report bench/RESULTS.md

manifests: $(VENV)/.synced
	$(BIN)/python -m hack.generate

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache .hypothesis
