# The command surface of the project. Every target sets itself up on a fresh machine
# (only Python 3.11, pip and make are assumed).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 3000
# Host port of the container's V2 gRPC server (`make container-run`; 8001 inside).
GRPC_PORT ?= 8001
# Seconds `bentoml serve` lets in-flight requests finish after SIGTERM.
GRACE_PERIOD ?= 10

# Project-local state (git-ignored): MLflow store, BentoML home, build output. Both stores
# follow one rule, here and in every Python entry point (iris_pipeline/paths.py): a value from
# the command line or the environment wins; what is not set is the project's store in state/.
export BENTOML_HOME ?= $(CURDIR)/state/bentoml
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/state/mlflow/mlflow.db
ifneq ($(filter file,$(origin BENTOML_HOME) $(origin MLFLOW_TRACKING_URI)),)
ifneq ($(origin BENTOML_HOME),$(origin MLFLOW_TRACKING_URI))
$(warning only one of BENTOML_HOME and MLFLOW_TRACKING_URI is set; the other is the project's store in state/. Set both or neither, or the registry and the model store disagree.)
endif
endif
export BENTOML_CONFIG := $(CURDIR)/configuration.yaml
# The venv is installed by uv (the version constraints.txt pins), without compiling its ~14,000
# modules ahead; each module is compiled when first imported and kept. A PYTHONDONTWRITEBYTECODE
# from the environment would make every process compile its imports again (docs/testing.md).
unexport PYTHONDONTWRITEBYTECODE
export BENTOML_DO_NOT_TRACK := True

.PHONY: help venv train serve test test-setup test-fast test-random lint audit lock clean finops container container-run \
	k8s-manifests report loadtest bench bench-explain bench-grpc grpc-code overload models promote \
	rollback retrain score export-records serve-tiers bench-tiers

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}' \
		| sed -e 's|$$(HOST)|$(HOST)|g' -e 's|$$(PORT)|$(PORT)|g' -e 's|$$(GRPC_PORT)|$(GRPC_PORT)|g'

$(INSTALLED): requirements-serve.txt requirements.txt requirements-spark.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	@echo "Installing the pinned dependencies into $(VENV) (about a minute on a fresh machine)..."
	$(PY) -m pip install --quiet "$$(grep -E '^uv==' constraints.txt)"
	@# Every version is pinned, so uv's cache alone can install the set when it holds it (in a
	@# second); a cold or partial cache fails before installing anything, and the index is asked.
	$(BIN)/uv pip install --python $(PY) -r requirements-dev.txt -c constraints.txt --offline --quiet 2>/dev/null \
		|| $(BIN)/uv pip install --python $(PY) -r requirements-dev.txt -c constraints.txt
	@touch $@

venv: $(INSTALLED) ## Create .venv and install the pinned dependencies

train: $(INSTALLED) ## Train the candidates and compile each to ONNX (one not equivalent is left out); the best becomes a new registry version and the challenger
	$(PY) train.py

# Model lifecycle (issue 11, docs/lifecycle.md). VERSION=n promotes that registry version
# instead of the challenger; FORCE=1 promotes it even if the quality gate refuses (recorded in
# MLflow); MARGIN sets the largest drop of a class's recall the gate allows.
VERSION ?=
FORCE ?=
MARGIN ?=
SERVICE_URL ?=

# A refused promotion or gate exits 3 from the lifecycle command; make then prints
# "make: *** [Makefile:<line>: promote] Error 3" and exits 2 itself (docs/lifecycle.md).
PROMOTE_FLAGS = $(if $(VERSION),--version $(VERSION)) $(if $(filter 1 yes true,$(FORCE)),--force) \
	$(if $(MARGIN),--recall-margin $(MARGIN))

models: $(INSTALLED) ## Every model version: registry version, BentoML tag, metrics, aliases, what serves (SERVICE_URL=...)
	$(PY) -m iris_pipeline.lifecycle models $(if $(SERVICE_URL),--service-url $(SERVICE_URL))

promote: $(INSTALLED) ## Challenger -> champion through the quality gate (VERSION=n, FORCE=1, MARGIN=0.05)
	$(PY) -m iris_pipeline.lifecycle promote $(strip $(PROMOTE_FLAGS))

rollback: $(INSTALLED) ## The previous champion becomes champion again
	$(PY) -m iris_pipeline.lifecycle rollback

# Retraining on labelled feedback (issue 13, docs/feedback.md): the candidates are trained on
# Iris plus the older labels, the winner becomes the challenger, and the quality gate judges
# it on the gate set plus the newest labels (held out). AUTO_PROMOTE=1 promotes it when the
# gate passes; otherwise `make promote` stays the explicit step. RETRAIN_ARGS go to train.py.
AUTO_PROMOTE ?=
RETRAIN_ARGS ?=

RETRAIN_GATE = $(if $(filter 1 yes true,$(AUTO_PROMOTE)),promote,gate) $(if $(MARGIN),--recall-margin $(MARGIN))

retrain: $(INSTALLED) ## Train on Iris + labelled feedback, register the challenger, run the quality gate (AUTO_PROMOTE=1 promotes)
	$(PY) train.py --with-feedback $(RETRAIN_ARGS)
	$(PY) -m iris_pipeline.lifecycle $(strip $(RETRAIN_GATE))

export-records: $(INSTALLED) ## Snapshot of the prediction store: predictions and labels as Parquet (FORMAT=jsonl) in OUT (default reports/records)
	$(PY) -m tools.export_records --out "$(or $(OUT),reports/records)" --format "$(or $(FORMAT),parquet)"

# Under `make serve` the per-request JSON lines go to this file (one per start), so the terminal
# shows start-up, model switches, warnings and errors; REQUEST_LOG_FILE= keeps them on stdout.
ifeq ($(origin REQUEST_LOG_FILE),undefined)
REQUEST_LOG_FILE := $(CURDIR)/state/logs/requests-$(shell date -u +%Y%m%dT%H%M%SZ).jsonl
endif
SERVE_FLAGS = --host $(HOST) --port $(PORT) --timeout-graceful-shutdown $(GRACE_PERIOD)

# Batch scoring on Spark (issue 24, docs/batch-scoring.md): INPUT is a CSV or Parquet file or
# folder, OUTPUT a new folder (scored/, rejects/, summary.json). MODEL is an alias, a version or
# a models:/ URI (default: the champion); SPARK_MASTER a Spark master URL (default local[*]).
INPUT ?=
OUTPUT ?=
MODEL ?=
SPARK_MASTER ?=
SCORE_ARGS ?=

score: $(INSTALLED) ## Score a CSV/Parquet file or folder with the registry's champion on Spark (INPUT=, OUTPUT=, MODEL=, SPARK_MASTER=)
	tools/ensure-debian-packages.sh openjdk-17-jre-headless
	$(PY) -m iris_pipeline.scoring --input "$(INPUT)" --output "$(OUTPUT)" \
		$(if $(MODEL),--model "$(MODEL)") $(if $(SPARK_MASTER),--master "$(SPARK_MASTER)") $(SCORE_ARGS)

serve: $(INSTALLED) ## Train if no champion is in the store, then serve on $(HOST):$(PORT)
	$(PY) train.py --if-missing
	@$(if $(REQUEST_LOG_FILE),echo "Per-request log lines: $(REQUEST_LOG_FILE)")
	IRIS_REQUEST_LOG_FILE=$(REQUEST_LOG_FILE) $(BIN)/bentoml serve service:IrisClassifier $(SERVE_FLAGS)

# The API tier and RUNNER_REPLICAS runner processes started as the `tiers` manifests start
# them (start-http-server), the runners behind a local nginx `stream` stand-in for their
# Kubernetes Service (docs/deployment.md); Ctrl-C stops them together.
RUNNER_REPLICAS ?= 2

serve-tiers: $(INSTALLED) ## API tier on $(HOST):$(PORT) + RUNNER_REPLICAS runner processes behind a connection balancer (nginx stream)
	tools/ensure-debian-packages.sh nginx-light libnginx-mod-stream
	$(PY) train.py --if-missing
	$(PY) -m tools.serve_tiers --replicas $(RUNNER_REPLICAS) --port $(PORT)

# Everything the tests need, installed before they run, never inside a test: Debian's tools,
# MLServer's own venv, the container tools and base image (tools/test_setup.py; no-ops when done).
test-setup: $(INSTALLED) ## What the tests need, installed before they run (Debian tools, MLServer venv, container tools and base image)
	tools/ensure-debian-packages.sh prometheus chromium nginx-light libnginx-mod-stream wrk openjdk-17-jre-headless postgresql curl binutils
	$(PY) -m tools.test_setup

# Test processes (pytest-xdist): three on a 2-core CI machine, because a third of the suite's
# time is spent waiting (image builds, servers starting, timeouts awaited), not computing
# (docs/testing.md); PYTEST_WORKERS=0 runs the tests in this process (for a debugger), in file
# order.
PYTEST_WORKERS ?= 3

# Unit tests run first (pyproject's testpaths), then the integration tests; the dependency
# audit runs after the tests and reports an unreachable vulnerability database as such
# without failing the run (`make audit` alone fails on it).
test: test-setup ## Run the whole test suite, unit tests first (installs what the tests need), then the dependency audit
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)
	$(PY) -m tools.audit_dependencies --unreachable-ok

test-fast: $(INSTALLED) ## ruff and the unit tests only (no server, no network; ~1.5 min)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/pytest -n $(PYTEST_WORKERS) tests/unit $(PYTEST_ARGS)

# pytest-randomly is installed but off by default (pyproject's addopts); this turns it on:
# modules, then the tests in each module, in a random order (RANDOM_SEED=n repeats one).
RANDOM_SEED ?= random
test-random: test-setup ## The whole suite in random module and test order (pytest-randomly; RANDOM_SEED=n repeats an order)
	$(BIN)/pytest -n $(PYTEST_WORKERS) -p randomly --randomly-seed=$(RANDOM_SEED) $(PYTEST_ARGS)

audit: $(INSTALLED) ## Vulnerability audit of the pinned dependencies (fails on fixable ones, and when no database can be reached)
	$(PY) -m tools.audit_dependencies

lint: $(INSTALLED) ## ruff
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Load test and benchmark (issue 4). Every run is bounded in time and binds 127.0.0.1 only.
SCENARIO ?= typical
USERS ?= 50
RUN_TIME ?= 60s
BENCH_ARGS ?=
# e.g. LOADTEST_ARGS="--port 3100" (the service it starts), or "--host http://127.0.0.1:3000"
# (a running service; nothing is started).
LOADTEST_ARGS ?=

loadtest: $(INSTALLED) ## Locust, headless, against a service it starts (SCENARIO=typical|saturation, RUN_TIME=60s, LOADTEST_ARGS=--port N|--host URL): reports/locust-*
	$(PY) train.py --if-missing
	$(PY) -m tools.loadtest --scenario $(SCENARIO) --users $(USERS) --run-time $(RUN_TIME) --out-dir reports $(LOADTEST_ARGS)

bench: $(INSTALLED) ## Benchmark vs FastAPI, MLServer, minimal BentoML, FastAPI+ONNX: saturation, sweep, capacity at p99, targets (wrk, ~45 min): reports/bench.*
	tools/ensure-debian-packages.sh wrk nginx-light libnginx-mod-stream
	$(PY) -m tools.bench --out-dir reports $(BENCH_ARGS)
	$(PY) -m tools.bench.tiers --out-dir reports $(BENCH_TIERS_ARGS)
	$(PY) -m tools.bench.explain_cost --out-dir reports
	$(PY) train.py --if-missing
	$(PY) -m tools.bench.grpc_bench --out-dir reports
	$(PY) -m tools.overload --out-dir reports $(OVERLOAD_ARGS)

bench-grpc: $(INSTALLED) ## V2 over gRPC beside V2 over REST, 1 and 1,000 flowers per request (~1.5 min): reports/grpc-bench.{json,md}
	$(PY) train.py --if-missing
	$(PY) -m tools.bench.grpc_bench --out-dir reports $(GRPC_BENCH_ARGS)

bench-explain: $(INSTALLED) ## One explanation against one prediction, per model family (~15 s, no server): reports/explain-cost.{json,md}
	$(PY) -m tools.bench.explain_cost --out-dir reports $(EXPLAIN_BENCH_ARGS)

# The `tiers` part of `make bench` alone (tools/bench/tiers.py): runner-bound 1,000-flower
# batches of the random forest in single and in tiers with 1 and 2 runner replicas, the extra
# hop at 1 connection, the spread after a replica restart (~5 min). BENCH_TIERS_ARGS="--duration 15
# --connections 8 --no-spread".
BENCH_TIERS_ARGS ?=

bench-tiers: $(INSTALLED) ## Tiers beside single: runner-bound throughput, the extra hop, spread after a restart (~5 min): reports/bench-tiers.*
	tools/ensure-debian-packages.sh wrk nginx-light libnginx-mod-stream
	$(PY) -m tools.bench.tiers --out-dir reports $(BENCH_TIERS_ARGS)

overload: $(INSTALLED) ## Flood benchmark, straight and through the nginx front (~1 min): reports/overload.{json,md}
	tools/ensure-debian-packages.sh wrk nginx-light
	$(PY) train.py --if-missing
	$(PY) -m tools.overload --out-dir reports $(OVERLOAD_ARGS)

finops: $(INSTALLED) ## Cost simulation: reports/finops.md, finops.json and PNGs (uses reports/bench.json if present; FINOPS_ARGS=...)
	$(PY) -m tools.finops --out-dir reports $(FINOPS_ARGS)

# REPORT_ARGS="--port N" picks the port of the service it starts (and of LOOP=1's);
# "--send-labels" with SERVICE_URL also sends made-up labels there (docs/monitoring.md).
REPORT_FLAGS = $(if $(PROMETHEUS_URL),--prometheus-url $(PROMETHEUS_URL)) \
	$(if $(SERVICE_URL),--service-url $(SERVICE_URL)) $(if $(filter 1 yes true,$(LOOP)),--feedback-loop)

report: $(INSTALLED) ## Monitoring plots in reports/ (PROMETHEUS_URL=... or SERVICE_URL=..., else a local serve; LOOP=1 adds the feedback loop, ~3 min)
	$(PY) -m tools.report $(strip $(REPORT_FLAGS) --out-dir reports $(REPORT_ARGS))

container: $(INSTALLED) ## OCI image: bentoml build + containerize (docker, else buildah/podman; CONTAINER_BACKEND=...)
	$(PY) train.py --if-missing
	$(PY) -m tools.containers build

container-run: $(INSTALLED) ## Run the image of `make container` on 127.0.0.1:$(PORT) (gRPC on 127.0.0.1:$(GRPC_PORT)), API keys turned off (IRIS_API_KEY=... to require one)
	$(PY) -m tools.containers run --port $(PORT) --grpc-port $(GRPC_PORT)

k8s-manifests: $(INSTALLED) ## Point deploy/k8s at the image of `make container` (IMAGE=registry/name:tag to override)
	deploy/k8s/base/set-image.sh $(or $(IMAGE),$$(cat state/containers/last-image))

grpc-code: $(INSTALLED) ## Regenerate the V2 gRPC code from its proto (iris_service/protocols/grpc_generated; pinned grpcio-tools)
	$(PY) -m tools.grpc_code

lock: ## Re-pin every transitive dependency (constraints.txt, requirements-serve.lock)
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	$(PY) -m tools.serve_requirements

clean: ## Remove generated state (MLflow store, BentoML home, reports)
	rm -rf state reports build
